#include "sockpat/error.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <system_error>

TEST_SUITE("error") {
TEST_CASE("sockpat::errc values compare equal to error codes of the sockpat category") {
  const std::error_code ec = sockpat::errc::end_of_stream;
  CHECK(ec == sockpat::errc::end_of_stream);
  CHECK(ec != sockpat::errc::frame_too_large);
  CHECK(std::string(ec.category().name()) == "sockpat");
  CHECK(ec.message() == "end of stream");
  CHECK(std::error_code(sockpat::errc::frame_too_large).message() == "frame too large");
}

TEST_CASE("a sockpat error never equals an OS error with the same number") {
  const std::error_code ec = sockpat::errc::end_of_stream;
  CHECK(ec != std::error_code(1, std::system_category()));
  CHECK(ec != std::errc::operation_not_permitted);
}

TEST_CASE("TransferError carries the error, the message and the byte count") {
  try {
    throw sockpat::TransferError(sockpat::errc::end_of_stream, "read_exactly from 127.0.0.1:1", 7);
  } catch (const std::system_error& e) {
    CHECK(e.code() == sockpat::errc::end_of_stream);
    CHECK(std::string(e.what()).find("read_exactly from 127.0.0.1:1") != std::string::npos);
    const auto* t = dynamic_cast<const sockpat::TransferError*>(&e);
    REQUIRE(t != nullptr);
    CHECK(t->bytes_transferred() == 7);
  }
}
}

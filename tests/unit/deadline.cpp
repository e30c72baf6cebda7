#include "sockpat/deadline.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <chrono>
#include <stop_token>

using namespace std::chrono_literals;

TEST_SUITE("deadline") {
TEST_CASE("a default Deadline has no time and no stop token") {
  const sockpat::Deadline d;
  CHECK_FALSE(d.has_time());
  CHECK_FALSE(d.expired());
  CHECK_FALSE(d.stop_token().stop_possible());
}

TEST_CASE("a timeout becomes a fixed point in time when the Deadline is made") {
  const auto before = std::chrono::steady_clock::now();
  const sockpat::Deadline d = 250ms;
  CHECK(d.has_time());
  CHECK(d.time() >= before + 250ms);
  CHECK(d.time() <= std::chrono::steady_clock::now() + 250ms);
}

TEST_CASE("zero and negative timeouts are already expired") {
  CHECK(sockpat::Deadline(0ms).expired());
  CHECK(sockpat::Deadline(-5s).expired());
}

TEST_CASE("a huge timeout does not overflow into the past") {
  const sockpat::Deadline d = std::chrono::hours::max();
  CHECK_FALSE(d.expired());
  CHECK_FALSE(d.has_time());
}

TEST_CASE("a Deadline remembers the timeout it was made from, for error messages") {
  CHECK(sockpat::Deadline(50ms).timeout() == 50ms);
  CHECK(sockpat::Deadline(std::chrono::steady_clock::now() + 50ms).timeout() == 0ms);
  CHECK(sockpat::Deadline().timeout() == 0ms);
  CHECK(sockpat::Deadline(24h * 365 * 1000).timeout() == 0ms);  // no time at all
  // capped() keeps it while its own time is the earlier one.
  CHECK(sockpat::Deadline(50ms).capped(std::chrono::steady_clock::now() + 10s).timeout() == 50ms);
  CHECK(sockpat::Deadline(10s).capped(std::chrono::steady_clock::now() + 50ms).timeout() == 0ms);
}

TEST_CASE("a Deadline carries a stop token and capped() keeps it") {
  std::stop_source src;
  const sockpat::Deadline d(src.get_token());
  const auto capped = d.capped(std::chrono::steady_clock::now() + 1s);
  CHECK(capped.has_time());
  src.request_stop();
  CHECK(capped.stop_token().stop_requested());
}
}

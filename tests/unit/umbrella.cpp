#include "sockpat.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <string>

using namespace std::chrono_literals;

TEST_SUITE("umbrella" * doctest::timeout(60)) {
TEST_CASE("the umbrella header alone is enough for a loopback exchange") {
  auto listener = sockpat::TcpListener::bind({"127.0.0.1", 0});
  auto client = sockpat::TcpConnection::connect(listener.local_endpoint(), 5s);
  auto server = listener.accept(5s);
  client.write_all("ping", 5s);
  std::string buf(4, '\0');
  server.read_exactly(buf, 5s);
  CHECK(buf == "ping");
}
}

// Windows-only: the two orders that work with every compiler: <winsock2.h> before <windows.h>,
// and <windows.h> with WIN32_LEAN_AND_MEAN, both before sockpat. sockpat redefines nothing.
#define WIN32_LEAN_AND_MEAN
#include <winsock2.h>
#include <windows.h>

#include "sockpat.hpp"

#if !defined(WIN32_LEAN_AND_MEAN)
#error "sockpat took back a WIN32_LEAN_AND_MEAN it did not define"
#endif

#include <doctest/doctest.h>

#include <chrono>
#include <string>

using namespace std::chrono_literals;

TEST_CASE("sockpat works after <winsock2.h> and a lean <windows.h>") {
  auto a = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  auto b = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  a.send_to("winsock2 first", b.local_endpoint(), 5s);
  char buf[32] = {};
  sockpat::Endpoint from;
  const auto n = b.receive_from(std::span<char>(buf), from, 5s);
  CHECK(std::string(buf, n) == "winsock2 first");
  CHECK(from == a.local_endpoint());
}

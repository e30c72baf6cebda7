// Windows-only: the Winsock side of the platform layer, checked where the common tests cannot see it.
#include "sockpat.hpp"

// Nothing sockpat asked <windows.h> for may outlive its include: a user's code keeps std::min,
// std::max, an ERROR of its own, and the full <windows.h> if it includes that later.
#if defined(min) || defined(max)
#error "sockpat leaked the min/max macros"
#endif
#if defined(ERROR)
#error "sockpat leaked wingdi.h's ERROR macro"
#endif
#if defined(WIN32_LEAN_AND_MEAN) || defined(NOGDI) || (defined(NOMINMAX) && !defined(__GLIBCXX__))
// (libstdc++ defines NOMINMAX itself, in its os_defines.h)
#error "sockpat left its <windows.h> configuration macros defined"
#endif

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <algorithm>  // std::min: must not be a macro here
#include <array>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "support/loopback.hpp"

using namespace std::chrono_literals;

TEST_SUITE("winsock") {
// First in the file, so that it is the process's first use of Winsock (doctest runs by file and line).
TEST_CASE("the first use of Winsock from many threads at once starts it once, without the user calling anything") {
  constexpr int threads = 8;
  std::promise<void> go;
  const auto start = go.get_future().share();
  std::vector<std::future<std::error_code>> opened;
  for (int i = 0; i < threads; ++i) {
    opened.push_back(std::async(std::launch::async, [start] {
      start.wait();
      std::error_code ec;
      sockpat::TcpSocket s(sockpat::Family::ipv4, ec);
      return ec;
    }));
  }
  go.set_value();
  for (auto& f : opened) {
    REQUIRE(f.wait_for(30s) == std::future_status::ready);
    CHECK_FALSE(f.get());
  }
  CHECK(std::min(1, 2) == 1);
}

TEST_CASE("Winsock errors keep their WSAE value and compare equal to the same std::errc as on POSIX") {
  using sockpat::detail::os_error;
  CHECK(os_error(WSAECONNREFUSED) == std::errc::connection_refused);
  CHECK(os_error(WSAECONNREFUSED).value() == WSAECONNREFUSED);
  CHECK(os_error(WSAETIMEDOUT) == std::errc::timed_out);
  CHECK(os_error(WSAEWOULDBLOCK) == std::errc::operation_would_block);
  CHECK(sockpat::detail::would_block(os_error(WSAEWOULDBLOCK)));
  CHECK(os_error(WSAECONNRESET) == std::errc::connection_reset);
  CHECK(os_error(WSAECONNABORTED) == std::errc::connection_aborted);
  CHECK(os_error(WSAEADDRINUSE) == std::errc::address_in_use);
  CHECK(os_error(WSAEADDRNOTAVAIL) == std::errc::address_not_available);
  CHECK(os_error(WSAEAFNOSUPPORT) == std::errc::address_family_not_supported);
  CHECK(os_error(WSAEMSGSIZE) == std::errc::message_size);
  CHECK(os_error(WSAENOTCONN) == std::errc::not_connected);
  CHECK(os_error(WSAESHUTDOWN) == std::errc::broken_pipe);
  CHECK(os_error(WSAEMFILE) == std::errc::too_many_files_open);
  CHECK(os_error(WSAENETUNREACH) == std::errc::network_unreachable);
  CHECK(os_error(WSAEHOSTUNREACH) == std::errc::host_unreachable);
  CHECK(os_error(WSAEINTR) == std::errc::interrupted);
  CHECK(os_error(WSAECONNREFUSED) != std::errc::timed_out);
  // A code with no std::errc counterpart stays itself.
  CHECK(os_error(WSASYSNOTREADY).default_error_condition().category() == sockpat::detail::winsock_category());
  CHECK_FALSE(os_error(WSAECONNREFUSED).message().empty());
}

TEST_CASE("the std::errc values sockpat reports itself have readable messages") {
  CHECK(sockpat::detail::make_errc(std::errc::timed_out).message().find("timed out") != std::string::npos);
  CHECK(sockpat::detail::make_errc(std::errc::timed_out) == std::errc::timed_out);
  CHECK(sockpat::detail::make_errc(std::errc::operation_canceled) == std::errc::operation_canceled);
  CHECK(sockpat::detail::make_errc(std::errc::operation_canceled).message() != "Unknown error");
}

TEST_CASE("an accepted socket is non-inheritable and non-blocking, like the listener") {
  auto listener = test::loopback_listener();
  auto client = sockpat::TcpConnection::connect(listener.local_endpoint(), 5s);
  auto server = listener.accept(5s);
  DWORD flags = HANDLE_FLAG_INHERIT;
  REQUIRE(::GetHandleInformation(reinterpret_cast<HANDLE>(server.native_handle()), &flags));
  CHECK((flags & HANDLE_FLAG_INHERIT) == 0);
  // Non-blocking: a raw recv with nothing to read fails at once with WSAEWOULDBLOCK.
  char byte = 0;
  CHECK(::recv(server.native_handle(), &byte, 1, 0) == SOCKET_ERROR);
  CHECK(::WSAGetLastError() == WSAEWOULDBLOCK);
}

TEST_CASE("a UDP socket keeps receiving after one of its datagrams met a closed port") {
  sockpat::Endpoint closed;
  {
    auto tmp = sockpat::UdpSocket::bound({"127.0.0.1", 0});
    closed = tmp.local_endpoint();
  }
  auto server = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  auto client = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  server.send_to("to nobody", closed, 5s);
  // Without SIO_UDP_CONNRESET off, Windows would fail this receive with WSAECONNRESET.
  std::array<char, 32> buf{};
  sockpat::Endpoint from;
  std::error_code ec;
  (void)server.receive_from(std::as_writable_bytes(std::span(buf)), from, 100ms, ec);
  CHECK(ec == std::errc::timed_out);
  client.send_to("still here", server.local_endpoint(), 5s);
  const auto n = server.receive_from(buf, from, 5s);
  CHECK(std::string(buf.data(), n) == "still here");
}

TEST_CASE("the wake-up pair is a connected loopback TCP pair, and an AF_UNIX pair is refused clearly") {
  sockpat::detail::native_handle pair[2];
  REQUIRE_FALSE(sockpat::detail::socket_pair(AF_INET, SOCK_STREAM, pair));
  sockpat::detail::UniqueHandle a(pair[0]);
  sockpat::detail::UniqueHandle b(pair[1]);
  std::error_code ec;
  CHECK(sockpat::detail::blocking_send(a.get(), "w", 1, {}, ec) == 1);
  char got = 0;
  CHECK(sockpat::detail::blocking_recv(b.get(), &got, 1, {std::chrono::steady_clock::now() + 5s, nullptr}, ec) == 1);
  CHECK(got == 'w');
  CHECK(sockpat::detail::socket_pair(AF_UNIX, SOCK_STREAM, pair) == std::errc::address_family_not_supported);
}

TEST_CASE("an IPv6 scope must be numeric on Windows") {
  CHECK(sockpat::Endpoint::parse("[fe80::1%12]:80").to_string() == "[fe80::1%12]:80");
  CHECK_THROWS_AS((void)sockpat::Endpoint::parse("[fe80::1%eth0]:80"), std::invalid_argument);
}
}

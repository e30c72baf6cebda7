#include "sockpat/socket.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <array>
#include <chrono>
#include <string>

#include "support/loopback.hpp"

using namespace std::chrono_literals;
using sockpat::Endpoint;

TEST_SUITE("socket" * doctest::timeout(60)) {
TEST_CASE("a default socket is closed and owns nothing") {
  sockpat::TcpSocket s;
  CHECK_FALSE(s.is_open());
  CHECK(s.native_handle() == sockpat::detail::invalid_handle);
  std::error_code ec;
  s.close(ec);
  CHECK_FALSE(ec);
}

TEST_CASE("opening a socket of the wrong family for its protocol fails clearly") {
  std::error_code ec;
  sockpat::UnixSocket s(sockpat::Family::ipv4, ec);
  CHECK(ec == std::errc::address_family_not_supported);
  CHECK_THROWS_AS((void)sockpat::TcpSocket(sockpat::Family::unix_domain), std::system_error);
}

#if defined(_WIN32)
TEST_CASE("a socket is created non-inheritable, so a child process does not get it") {
  sockpat::TcpSocket s(sockpat::Family::ipv4);
  DWORD flags = HANDLE_FLAG_INHERIT;
  REQUIRE(::GetHandleInformation(reinterpret_cast<HANDLE>(s.native_handle()), &flags));
  CHECK((flags & HANDLE_FLAG_INHERIT) == 0);
}
#else
TEST_CASE("a socket is created close-on-exec") {
  sockpat::TcpSocket s(sockpat::Family::ipv4);
  const int flags = ::fcntl(s.native_handle(), F_GETFD);
  CHECK((flags & FD_CLOEXEC) != 0);
}
#endif

TEST_CASE("typed options set and read back") {
  sockpat::TcpSocket s(sockpat::Family::ipv6);
  s.set_reuse_address(true);
  CHECK(s.reuse_address());
  s.set_reuse_address(false);
  CHECK_FALSE(s.reuse_address());
#if defined(SOCKPAT_HAS_REUSE_PORT)
  s.set_reuse_port(true);
  CHECK(s.reuse_port());
#endif
  s.set_no_delay(true);
  CHECK(s.no_delay());
  s.set_keep_alive(true);
  CHECK(s.keep_alive());
  s.set_v6_only(true);
  CHECK(s.v6_only());
  s.set_receive_buffer_size(32 * 1024);
  CHECK(s.receive_buffer_size() >= 32 * 1024);
  sockpat::UdpSocket u(sockpat::Family::ipv4);
  u.set_broadcast(true);
  CHECK(u.broadcast());
}

TEST_CASE("an option on a closed socket names the option") {
  sockpat::TcpSocket s;
  CHECK_THROWS_WITH_AS(s.set_no_delay(true), doctest::Contains("TCP_NODELAY"), std::system_error);
}

TEST_CASE("UDP datagrams go both ways over IPv4") {
  auto a = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  auto b = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  CHECK(a.send_to("ping", b.local_endpoint(), 5s) == 4);
  std::array<char, 64> buf{};
  Endpoint from;
  const auto n = b.receive_from(buf, from, 5s);
  CHECK(std::string(buf.data(), n) == "ping");
  CHECK(from == a.local_endpoint());
  b.send_to("pong", from, 5s);
  const auto m = a.receive_from(buf, from, 5s);
  CHECK(std::string(buf.data(), m) == "pong");
  CHECK(from == b.local_endpoint());
}

TEST_CASE("UDP datagrams go both ways over IPv6") {
  auto a = sockpat::UdpSocket::bound({"::1", 0});
  auto b = sockpat::UdpSocket::bound({"::1", 0});
  a.send_to("six", b.local_endpoint(), 5s);
  std::array<char, 64> buf{};
  Endpoint from;
  const auto n = b.receive_from(buf, from, 5s);
  CHECK(std::string(buf.data(), n) == "six");
  CHECK(from.is_v6());
  CHECK(from == a.local_endpoint());
}

TEST_CASE("a connected UDP socket uses send and receive") {
  auto a = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  auto b = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  a.connect(b.local_endpoint());
  b.connect(a.local_endpoint());
  CHECK(a.remote_endpoint() == b.local_endpoint());
  a.send("one", 5s);
  std::array<char, 16> buf{};
  CHECK(std::string(buf.data(), b.receive(buf, 5s)) == "one");
}

TEST_CASE("every datagram call takes bytes and chars, in the throwing and the error_code& form") {
  auto a = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  auto b = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  const auto to = b.local_endpoint();
  const std::array<std::byte, 2> bytes{std::byte{'h'}, std::byte{'i'}};
  const std::string text = "text";
  std::error_code ec;
  // send_to: std::span<const std::byte>, std::string_view (a literal, a std::string), both forms.
  CHECK(a.send_to(bytes, to, 5s) == 2);
  CHECK(a.send_to(bytes, to, 5s, ec) == 2);
  CHECK_FALSE(ec);
  CHECK(a.send_to("lit", to, 5s) == 3);
  CHECK(a.send_to("lit", to, 5s, ec) == 3);
  CHECK_FALSE(ec);
  CHECK(a.send_to(text, to, 5s, ec) == 4);
  CHECK_FALSE(ec);
  // receive_from: std::span<std::byte> and std::span<char>, both forms.
  std::array<std::byte, 16> byte_buf{};
  std::array<char, 16> char_buf{};
  Endpoint from;
  CHECK(b.receive_from(byte_buf, from, 5s) == 2);
  CHECK(b.receive_from(byte_buf, from, 5s, ec) == 2);
  CHECK_FALSE(ec);
  CHECK(std::string(char_buf.data(), b.receive_from(char_buf, from, 5s)) == "lit");
  CHECK(std::string(char_buf.data(), b.receive_from(char_buf, from, 5s, ec)) == "lit");
  CHECK_FALSE(ec);
  CHECK(std::string(char_buf.data(), b.receive_from(std::span<char>(char_buf), from, 5s, ec)) == "text");
  CHECK_FALSE(ec);
  CHECK(from == a.local_endpoint());
  // send and receive on a connected socket: the same kinds, both forms.
  a.connect(to);
  b.connect(a.local_endpoint());
  CHECK(a.send(bytes, 5s) == 2);
  CHECK(a.send(bytes, 5s, ec) == 2);
  CHECK_FALSE(ec);
  CHECK(a.send("lit", 5s) == 3);
  CHECK(a.send(text, 5s, ec) == 4);
  CHECK_FALSE(ec);
  CHECK(b.receive(byte_buf, 5s) == 2);
  CHECK(b.receive(byte_buf, 5s, ec) == 2);
  CHECK_FALSE(ec);
  CHECK(std::string(char_buf.data(), b.receive(char_buf, 5s)) == "lit");
  CHECK(std::string(char_buf.data(), b.receive(char_buf, 5s, ec)) == "text");
  CHECK_FALSE(ec);
}

TEST_CASE("bound() has an error_code& twin") {
  std::error_code ec;
  auto a = sockpat::UdpSocket::bound({"127.0.0.1", 0}, ec);
  REQUIRE_FALSE(ec);
  CHECK(a.local_endpoint().port() != 0);
  auto b = sockpat::UdpSocket::bound(a.local_endpoint(), ec);
  CHECK(ec == std::errc::address_in_use);
  CHECK_FALSE(b.is_open());
  CHECK_THROWS_WITH_AS((void)sockpat::UdpSocket::bound(a.local_endpoint()), doctest::Contains("bind"), std::system_error);
}

TEST_CASE("a receive with a timeout gives timed_out") {
  auto a = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  std::array<std::byte, 16> buf{};
  Endpoint from;
  std::error_code ec;
  CHECK(a.receive_from(buf, from, 20ms, ec) == 0);
  CHECK(ec == std::errc::timed_out);
  CHECK_THROWS_WITH_AS((void)a.receive_from(buf, from, 20ms),
                       doctest::Contains(("receive_from on " + a.local_endpoint().to_string() + " after 20 ms: ").c_str()),
                       std::system_error);
}

TEST_CASE("a datagram larger than the buffer is reported, not silently cut") {
  auto a = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  auto b = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  a.send_to("0123456789", b.local_endpoint(), 5s);
  std::array<char, 4> small{};
  Endpoint from;
  std::error_code ec;
  CHECK(b.receive_from(std::as_writable_bytes(std::span(small)), from, 5s, ec) == 4);
  CHECK(ec == std::errc::message_size);
  CHECK(std::string(small.data(), 4) == "0123");
  CHECK(from == a.local_endpoint());
}

#if defined(_WIN32)
TEST_CASE("Unix datagram sockets are refused at run time on Windows, which has AF_UNIX streams only") {
  std::error_code ec;
  sockpat::UnixDatagramSocket s(sockpat::Family::unix_domain, ec);
  CHECK((ec == std::errc::address_family_not_supported || ec == std::errc::not_supported ||
         ec == std::errc::protocol_not_supported || ec == std::errc::wrong_protocol_type));
  CHECK_FALSE(s.is_open());
}
#else
TEST_CASE("Unix datagram sockets exchange datagrams between bound paths") {
  test::TempSocketPath pa("dgram-a");
  test::TempSocketPath pb("dgram-b");
  auto a = sockpat::UnixDatagramSocket::bound(Endpoint::unix_path(pa.path()));
  auto b = sockpat::UnixDatagramSocket::bound(Endpoint::unix_path(pb.path()));
  a.send_to("local", b.local_endpoint(), 5s);
  std::array<char, 16> buf{};
  Endpoint from;
  const auto n = b.receive_from(buf, from, 5s);
  CHECK(std::string(buf.data(), n) == "local");
  CHECK(from.path() == pa.path());
  b.send_to("reply", from, 5s);
  CHECK(std::string(buf.data(), a.receive_from(buf, from, 5s)) == "reply");
}
#endif

TEST_CASE("sending to nobody over a connected UDP socket reports connection_refused") {
  sockpat::Endpoint closed;
  {
    auto tmp = sockpat::UdpSocket::bound({"127.0.0.1", 0});
    closed = tmp.local_endpoint();
  }
  auto a = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  a.connect(closed);
  a.send("anyone?", 5s);
  std::array<std::byte, 16> buf{};
  std::error_code ec;
  (void)a.receive(buf, 2s, ec);
  // Linux reports the ICMP port-unreachable on the next receive; other stacks may just time out.
  CHECK((ec == std::errc::connection_refused || ec == std::errc::timed_out));
  // The throwing form names the socket's own address and its peer.
  a.send("anyone?", 5s);
  const std::string where = "receive on " + a.local_endpoint().to_string() + " from " + closed.to_string();
  CHECK_THROWS_WITH_AS((void)a.receive(buf, 200ms), doctest::Contains(where.c_str()), std::system_error);
}
}

#include "sockpat/listener.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <chrono>
#include <future>
#include <stop_token>
#include <thread>

#include "support/loopback.hpp"

using namespace std::chrono_literals;

TEST_SUITE("listener" * doctest::timeout(60)) {
TEST_CASE("binding port 0 picks a free port that local_endpoint reads back") {
  auto listener = sockpat::TcpListener::bind({"127.0.0.1", 0});
  const auto local = listener.local_endpoint();
  CHECK(local.host() == "127.0.0.1");
  CHECK(local.port() != 0);
  auto client = sockpat::TcpConnection::connect(local, 5s);
  auto server = listener.accept(5s);
  CHECK(server.remote_endpoint() == client.local_endpoint());
  CHECK(server.local_endpoint() == local);
}

TEST_CASE("an IPv6 listener on ::1 accepts") {
  auto listener = sockpat::TcpListener::bind({"::1", 0});
  auto client = sockpat::TcpConnection::connect(listener.local_endpoint(), 5s);
  auto server = listener.accept(5s);
  CHECK(server.remote_endpoint().is_v6());
}

TEST_CASE("accept returns timed_out when no client arrives before the deadline") {
  auto listener = test::loopback_listener();
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS((void)listener.accept(50ms), doctest::Contains("timed out"), std::system_error);
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took >= 50ms);
  CHECK(took < 5s);
  std::error_code ec;
  auto none = listener.accept(10ms, ec);
  CHECK(ec == std::errc::timed_out);
  CHECK_FALSE(none.is_open());
}

TEST_CASE("an accept blocked in another thread is stopped through a stop token") {
  auto listener = test::loopback_listener();
  std::stop_source stop;
  auto blocked = std::async(std::launch::async, [&] {
    std::error_code ec;
    (void)listener.accept(sockpat::Deadline(30s, stop.get_token()), ec);
    return ec;
  });
  // The accept may not have started waiting yet; a stop requested before it waits counts too.
  stop.request_stop();
  REQUIRE(blocked.wait_for(10s) == std::future_status::ready);
  CHECK(blocked.get() == std::errc::operation_canceled);
  // The listener still works afterwards.
  auto client = sockpat::TcpConnection::connect(listener.local_endpoint(), 5s);
  CHECK(listener.accept(5s).is_open());
}

TEST_CASE("the stop really wakes an accept that is already waiting") {
  auto listener = test::loopback_listener();
  std::stop_source stop;
  std::promise<void> started;
  auto blocked = std::async(std::launch::async, [&] {
    started.set_value();
    std::error_code ec;
    (void)listener.accept(sockpat::Deadline(stop.get_token()), ec);
    return ec;
  });
  started.get_future().wait();
  // Give the accept no deadline: only the stop can end it, so a hang here fails the test by timeout.
  CHECK(blocked.wait_for(100ms) == std::future_status::timeout);
  stop.request_stop();
  REQUIRE(blocked.wait_for(10s) == std::future_status::ready);
  CHECK(blocked.get() == std::errc::operation_canceled);
}

TEST_CASE("binding a port in use fails with address_in_use, naming the endpoint") {
  auto first = test::loopback_listener();
  const auto taken = first.local_endpoint();
  CHECK_THROWS_WITH_AS((void)sockpat::TcpListener::bind(taken), doctest::Contains(taken.to_string().c_str()),
                       std::system_error);
  std::error_code ec;
  auto second = sockpat::TcpListener::bind(taken, {}, ec);
  CHECK(ec == std::errc::address_in_use);
  CHECK_FALSE(second.is_open());
}

TEST_CASE("a port in use fails as \"bind HOST:PORT\", for a stream listener as for a datagram socket") {
  for (const char* host : {"127.0.0.1", "::1"}) {
    auto first = sockpat::TcpListener::bind({host, 0});
    const auto taken = first.local_endpoint();
    std::error_code ec;
    (void)sockpat::TcpListener::bind(taken, {}, ec);
    REQUIRE(ec == std::errc::address_in_use);
    const std::string want = "bind " + taken.to_string() + ": " + ec.message();
    CHECK_THROWS_WITH_AS((void)sockpat::TcpListener::bind(taken), want.c_str(), std::system_error);
    CHECK_THROWS_WITH_AS((void)sockpat::TcpListener::bind(host, taken.port()), want.c_str(), std::system_error);
    auto udp = sockpat::UdpSocket::bound({host, 0});
    const auto udp_taken = udp.local_endpoint();
    CHECK_THROWS_WITH_AS((void)sockpat::UdpSocket::bound(udp_taken),
                         ("bind " + udp_taken.to_string() + ": " + ec.message()).c_str(), std::system_error);
  }
}

#if defined(SOCKPAT_HAS_REUSE_PORT)
TEST_CASE("claim_port takes a port alone, then lets reuse_port listeners join it") {
  sockpat::ListenOptions claim;
  claim.claim_port = true;
  sockpat::ListenOptions join;
  join.reuse_port = true;
  auto first = sockpat::TcpListener::bind({"127.0.0.1", 0}, claim);
  const auto port = first.local_endpoint();
  // The program's other loops join the port.
  auto sibling = sockpat::TcpListener::bind(port, join);
  CHECK(sibling.local_endpoint() == port);
  // A second copy of the program claims too, and is refused, as is a plain listener.
  std::error_code ec;
  auto second = sockpat::TcpListener::bind(port, claim, ec);
  CHECK(ec == std::errc::address_in_use);
  CHECK_FALSE(second.is_open());
  (void)sockpat::TcpListener::bind(port, {}, ec);
  CHECK(ec == std::errc::address_in_use);
  // A port that reuse_port listeners share cannot be claimed either.
  auto shared = sockpat::TcpListener::bind({"127.0.0.1", 0}, join);
  (void)sockpat::TcpListener::bind(shared.local_endpoint(), claim, ec);
  CHECK(ec == std::errc::address_in_use);
  // Both claimed listeners accept: a client reaches one of them.
  auto client = sockpat::TcpConnection::connect(port, 5s);
  std::error_code first_ec;
  auto a = first.accept(100ms, first_ec);
  if (first_ec) a = sibling.accept(5s);
  CHECK(a.remote_endpoint() == client.local_endpoint());
}

TEST_CASE("reuse_port lets two listeners share a port") {
  sockpat::ListenOptions o;
  o.reuse_port = true;
  auto a = sockpat::TcpListener::bind({"127.0.0.1", 0}, o);
  auto b = sockpat::TcpListener::bind(a.local_endpoint(), o);
  CHECK(b.local_endpoint() == a.local_endpoint());
}
#endif

TEST_CASE("binding by host name resolves it") {
  auto listener = sockpat::TcpListener::bind("localhost", 0);
  CHECK(listener.local_endpoint().port() != 0);
  auto client = sockpat::TcpConnection::connect("localhost", listener.local_endpoint().port(), 5s);
  CHECK(listener.accept(5s).is_open());
}

TEST_CASE("binding by host name has an error_code& twin, as binding an endpoint does") {
  std::error_code ec;
  auto listener = sockpat::TcpListener::bind("localhost", 0, {}, ec);
  REQUIRE_FALSE(ec);
  auto client = sockpat::TcpConnection::connect(listener.local_endpoint(), 5s);
  CHECK(listener.accept(5s).is_open());
  auto taken = sockpat::TcpListener::bind(listener.local_endpoint().host(), listener.local_endpoint().port(), {}, ec);
  CHECK(ec == std::errc::address_in_use);
  CHECK_FALSE(taken.is_open());
  (void)sockpat::TcpListener::bind("", 0, {}, ec);
  CHECK(ec == std::errc::invalid_argument);
}

TEST_CASE("a Unix-domain listener accepts on a path") {
  test::TempSocketPath path("listener");
#if defined(_WIN32)
  if (!test::unix_sockets_supported()) {
    // Windows before 10 1803 and Wine 8 have no AF_UNIX: the failure must be this clear error.
    std::error_code ec;
    auto none = sockpat::UnixListener::bind(sockpat::Endpoint::unix_path(path.path()), {}, ec);
    CHECK(ec == std::errc::address_family_not_supported);
    CHECK_FALSE(none.is_open());
    MESSAGE("AF_UNIX is not supported here: only the error path was tested");
    return;
  }
#endif
  auto listener = sockpat::UnixListener::bind(sockpat::Endpoint::unix_path(path.path()));
  CHECK(listener.local_endpoint().path() == path.path());
  auto client = sockpat::UnixConnection::connect(listener.local_endpoint(), 5s);
  auto server = listener.accept(5s);
  client.write_all("unix", 5s);
  std::string got(4, '\0');
  server.read_exactly(got, 5s);
  CHECK(got == "unix");
}

#if defined(__linux__)
TEST_CASE("a Unix-domain listener accepts in the abstract namespace") {
  const auto name = sockpat::Endpoint::unix_abstract("sockpat-test-" + std::to_string(test::process_id()));
  auto abstract = sockpat::UnixListener::bind(name);
  CHECK(abstract.local_endpoint() == name);
  auto c2 = sockpat::UnixConnection::connect(name, 5s);
  CHECK(abstract.accept(5s).is_open());
}
#endif

TEST_CASE("a closed listener reports not_connected instead of touching a stale descriptor") {
  auto listener = test::loopback_listener();
  listener.close();
  CHECK_FALSE(listener.is_open());
  std::error_code ec;
  (void)listener.accept(10ms, ec);
  CHECK(ec == sockpat::errc::not_connected);
}

}

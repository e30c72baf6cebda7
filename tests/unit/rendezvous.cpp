#include "sockpat/rendezvous.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <future>
#include <latch>
#include <string>

#include "support/loopback.hpp"
#include "support/printing.hpp"

using namespace std::chrono_literals;

namespace {

// An endpoint on loopback whose port was free a moment ago (bound, read back, released).
sockpat::Endpoint free_endpoint() {
  auto probe = test::loopback_listener();
  return probe.local_endpoint();
}

[[maybe_unused]] void check_one_link(sockpat::TcpConnection& a, sockpat::TcpConnection& b) {
  REQUIRE(a.is_open());
  REQUIRE(b.is_open());
  CHECK(a.local_endpoint() == b.remote_endpoint());
  CHECK(a.remote_endpoint() == b.local_endpoint());
  a.write_all("from a", 5s);
  b.write_all("from b", 5s);
  std::string got(6, '\0');
  b.read_exactly(got, 5s);
  CHECK(got == "from a");
  a.read_exactly(got, 5s);
  CHECK(got == "from b");
}

}  // namespace

TEST_SUITE("rendezvous" * doctest::timeout(60)) {
#if defined(_WIN32)
// Windows has no SO_REUSEPORT, so a listener and a dialer cannot share the peer's port: rendezvous
// says so instead of failing in some later, stranger way (docs/platforms.md).
TEST_CASE("rendezvous is refused on Windows with operation_not_supported, naming both endpoints") {
  const auto a = free_endpoint();
  const auto b = free_endpoint();
  std::error_code ec;
  auto none = sockpat::rendezvous(a, b, 2s, ec);
  CHECK(ec == std::errc::operation_not_supported);
  CHECK_FALSE(none.is_open());
  CHECK_THROWS_WITH_AS((void)sockpat::rendezvous(a, b, 2s), doctest::Contains(a.to_string().c_str()), std::system_error);
}
#else
TEST_CASE("two peers dialing each other at the same moment end with one working connection") {
  for (int round = 0; round < 10; ++round) {
    CAPTURE(round);
    const auto ea = free_endpoint();
    const auto eb = free_endpoint();
    std::latch go(2);
    auto fa = std::async(std::launch::async, [&] {
      go.arrive_and_wait();
      return sockpat::rendezvous(ea, eb, 10s);
    });
    auto fb = std::async(std::launch::async, [&] {
      go.arrive_and_wait();
      return sockpat::rendezvous(eb, ea, 10s);
    });
    REQUIRE(fa.wait_for(20s) == std::future_status::ready);
    REQUIRE(fb.wait_for(20s) == std::future_status::ready);
    auto a = fa.get();
    auto b = fb.get();
    check_one_link(a, b);
  }
}

TEST_CASE("the peer that starts first waits for the other, and strangers are turned away") {
  const auto ea = free_endpoint();
  const auto eb = free_endpoint();
  auto fa = std::async(std::launch::async, [&] { return sockpat::rendezvous(ea, eb, 20s); });
  // Prove a is up by connecting as a stranger (not from eb): a must close that one and keep waiting.
  std::error_code ec;
  const auto until = std::chrono::steady_clock::now() + 10s;
  sockpat::TcpConnection stranger;
  do {
    stranger = sockpat::TcpConnection::connect(ea, sockpat::ConnectOptions::with_deadline(1s), ec);
  } while (ec && std::chrono::steady_clock::now() < until);
  REQUIRE_FALSE(ec);
  std::array<std::byte, 1> one{};
  CHECK(stranger.read_some(one, 10s) == 0);  // closed by a: end of stream
  CHECK(fa.wait_for(0s) == std::future_status::timeout);
  auto b = sockpat::rendezvous(eb, ea, 10s);
  REQUIRE(fa.wait_for(20s) == std::future_status::ready);
  auto a = fa.get();
  check_one_link(a, b);
}

TEST_CASE("a peer that only dials from its own port, as the seed's Python peer does, is accepted") {
  const auto ea = free_endpoint();
  const auto eb = free_endpoint();
  auto fa = std::async(std::launch::async, [&] { return sockpat::rendezvous(ea, eb, 20s); });
  sockpat::ConnectOptions seed_like;
  seed_like.local = eb;
  seed_like.deadline = 1s;
  std::error_code ec;
  sockpat::TcpConnection b;
  const auto until = std::chrono::steady_clock::now() + 10s;
  do {
    b = sockpat::TcpConnection::connect(ea, seed_like, ec);
    seed_like.deadline = 1s;
  } while (ec && std::chrono::steady_clock::now() < until);
  REQUIRE_FALSE(ec);
  REQUIRE(fa.wait_for(20s) == std::future_status::ready);
  auto a = fa.get();
  check_one_link(a, b);
}

TEST_CASE("a rendezvous nobody comes to ends with timed_out within its deadline") {
  const auto ea = free_endpoint();
  const auto eb = free_endpoint();
  const auto start = std::chrono::steady_clock::now();
  std::error_code ec;
  auto c = sockpat::rendezvous(ea, eb, 300ms, ec);
  CHECK(ec == std::errc::timed_out);
  CHECK_FALSE(c.is_open());
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  CHECK_THROWS_WITH_AS((void)sockpat::rendezvous(ea, eb, 100ms), doctest::Contains(ea.to_string().c_str()),
                       std::system_error);
}

TEST_CASE("a second rendezvous on a port already waiting fails with address_in_use instead of sharing it") {
  const auto ea = free_endpoint();
  const auto eb = free_endpoint();
  std::stop_source stop;
  auto fa = std::async(std::launch::async, [&] {
    std::error_code ec;
    (void)sockpat::rendezvous(ea, eb, sockpat::Deadline(20s, stop.get_token()), ec);
    return ec;
  });
  // Wait until the first one listens: a stranger's connect is accepted (and closed) by it.
  std::error_code ec;
  const auto until = std::chrono::steady_clock::now() + 10s;
  do {
    (void)sockpat::TcpConnection::connect(ea, sockpat::ConnectOptions::with_deadline(1s), ec);
  } while (ec && std::chrono::steady_clock::now() < until);
  REQUIRE_FALSE(ec);
  const auto start = std::chrono::steady_clock::now();
  (void)sockpat::rendezvous(ea, eb, 5s, ec);
  CHECK(ec == std::errc::address_in_use);
  CHECK(std::chrono::steady_clock::now() - start < 2s);  // refused at once, not after the deadline
  stop.request_stop();
  REQUIRE(fa.wait_for(20s) == std::future_status::ready);
  CHECK(fa.get() == std::errc::operation_canceled);
}

TEST_CASE("a rendezvous on a listener the caller bound to port 0 meets its peer at the bound port") {
  sockpat::ListenOptions options;
  options.reuse_port = true;
  auto listener = sockpat::TcpListener::bind({"127.0.0.1", 0}, options);
  const auto ea = listener.local_endpoint();  // known, and listening, before the rendezvous starts
  REQUIRE(ea.port() != 0);
  const auto eb = free_endpoint();
  auto fa = std::async(std::launch::async, [&] { return sockpat::rendezvous(listener, eb, 20s); });
  auto b = sockpat::rendezvous(eb, ea, 10s);
  REQUIRE(fa.wait_for(20s) == std::future_status::ready);
  auto a = fa.get();
  check_one_link(a, b);
}

TEST_CASE("a rendezvous on a caller's listener nobody comes to ends with timed_out, naming the bound endpoint") {
  sockpat::ListenOptions options;
  options.reuse_port = true;
  auto listener = sockpat::TcpListener::bind({"127.0.0.1", 0}, options);
  const auto eb = free_endpoint();
  std::error_code ec;
  auto c = sockpat::rendezvous(listener, eb, 300ms, ec);
  CHECK(ec == std::errc::timed_out);
  CHECK_FALSE(c.is_open());
  CHECK_THROWS_WITH_AS((void)sockpat::rendezvous(listener, eb, 100ms),
                       doctest::Contains(listener.local_endpoint().to_string().c_str()), std::system_error);
}
#endif
}

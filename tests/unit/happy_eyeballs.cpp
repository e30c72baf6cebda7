// Happy Eyeballs (RFC 8305) in connect by name: blocking, awaited (both backends), and under
// open_connection and connect_with_retry. Addresses come from resolvers of the test's own.
#include "sockpat/connection.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <chrono>
#include <stop_token>
#include <string>
#include <system_error>
#include <vector>

#include "sockpat/client.hpp"
#include "sockpat/event_loop.hpp"
#include "sockpat/listener.hpp"
#include "sockpat/streams.hpp"
#include "support/loop.hpp"
#include "support/loopback.hpp"
#include "support/resolvers.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

sockpat::ConnectOptions options(sockpat::Resolver r, sockpat::Deadline d = 5s) {
  sockpat::ConnectOptions o;
  o.resolver = std::move(r);
  o.deadline = std::move(d);
  return o;
}

/// A resolver answering these endpoints, whatever the port asked (each keeps its own).
sockpat::Resolver endpoints(std::vector<sockpat::Endpoint> list) {
  return [list = std::move(list)](const std::string&, std::uint16_t, std::error_code&) { return list; };
}

}  // namespace

TEST_SUITE("happy_eyeballs") {
TEST_CASE("addresses are ordered with the families taking turns, the first address's family first") {
  using sockpat::Endpoint;
  const std::vector<Endpoint> in{{"::1", 1}, {"::2", 1}, {"::3", 1}, {"127.0.0.1", 1}, {"127.0.0.2", 1}};
  const std::vector<Endpoint> v6_first{{"::1", 1}, {"127.0.0.1", 1}, {"::2", 1}, {"127.0.0.2", 1}, {"::3", 1}};
  CHECK(sockpat::detail::interleave(in, sockpat::Family::unspecified) == v6_first);
  const std::vector<Endpoint> v4_first{{"127.0.0.1", 1}, {"::1", 1}, {"127.0.0.2", 1}, {"::2", 1}, {"::3", 1}};
  CHECK(sockpat::detail::interleave(in, sockpat::Family::ipv4) == v4_first);
}

TEST_CASE("::1 refused and 127.0.0.1 listening: connect by name succeeds at once" * doctest::timeout(20)) {
  auto listener = test::loopback_listener();
  const auto port = listener.local_endpoint().port();
  const auto o = options(test::fixed_resolver({"::1", "127.0.0.1"}));
  const auto start = Clock::now();
  auto c = sockpat::TcpConnection::connect("dual.test", port, o);
  CHECK(Clock::now() - start < 200ms);  // no waiting out the 250 ms attempt delay
  CHECK(c.remote_endpoint() == listener.local_endpoint());
  std::error_code ec;
  auto d = sockpat::TcpConnection::connect("dual.test", port, o, ec);
  CHECK_FALSE(ec);
  CHECK(d.is_open());
  test::run_bounded([&]() -> sockpat::Task<void> {
    const auto t0 = Clock::now();
    auto a = co_await sockpat::TcpConnection::async_connect("dual.test", port, o);
    CHECK(Clock::now() - t0 < 200ms);
    CHECK(a.remote_endpoint() == listener.local_endpoint());
  });
}

#if defined(__linux__)  // a full accept queue drops SYNs on Linux; Windows refuses instead
TEST_CASE("a first address that drops SYNs does not hold up a second that accepts: connected within 400 ms" *
          doctest::timeout(30)) {
  auto silent = test::silent_listener();
  auto listener = test::loopback_listener();
  const auto o = options(endpoints({silent.endpoint(), listener.local_endpoint()}));
  const int before = test::open_descriptors();
  auto start = Clock::now();
  auto c = sockpat::TcpConnection::connect("black-hole.test", 1, o);
  auto took = Clock::now() - start;
  CHECK(took >= 240ms);  // the second attempt started after the attempt delay...
  CHECK(took < 400ms);   // ...not after the first attempt's deadline
  CHECK(c.remote_endpoint() == listener.local_endpoint());
  CHECK(test::open_descriptors() == before + 1);  // the losing attempt was closed
  test::run_bounded([&]() -> sockpat::Task<void> {
    const int before_async = test::open_descriptors();
    const auto t0 = Clock::now();
    auto a = co_await sockpat::TcpConnection::async_connect("black-hole.test", 1, o);
    const auto elapsed = Clock::now() - t0;
    CHECK(elapsed >= 240ms);
    CHECK(elapsed < 400ms);
    CHECK(a.remote_endpoint() == listener.local_endpoint());
    CHECK(test::open_descriptors() == before_async + 1);
  });
}

TEST_CASE("attempt_delay 0 tries one address at a time: a black hole first spends the deadline" *
          doctest::timeout(30)) {
  auto silent = test::silent_listener();
  auto listener = test::loopback_listener();
  auto o = options(endpoints({silent.endpoint(), listener.local_endpoint()}), 300ms);
  o.attempt_delay = 0ms;
  std::error_code ec;
  (void)sockpat::TcpConnection::connect("black-hole.test", 1, o, ec);
  CHECK(ec == std::errc::timed_out);
}

TEST_CASE("when every address fails, one error names each address with its own error" * doctest::timeout(30)) {
  auto silent = test::silent_listener();
  const auto refused = sockpat::Endpoint("::1", test::closed_port());
  // A Deadline is a point in time: each connect gets options of its own.
  const auto o = [&] { return options(endpoints({refused, silent.endpoint()}), 500ms); };
  const int before = test::open_descriptors();
  std::string what;
  try {
    (void)sockpat::TcpConnection::connect("all-fail.test", 8080, o());
    FAIL("connected");
  } catch (const std::system_error& e) {
    what = e.what();
    CHECK(e.code() == std::errc::timed_out);
  }
  INFO(what);
  CHECK(what.find("connect all-fail.test:8080 (tried ") == 0);
  CHECK(what.find(refused.to_string() + ": " + std::make_error_code(std::errc::connection_refused).message()) !=
        std::string::npos);
  CHECK(what.find(silent.endpoint().to_string() + ": " + std::make_error_code(std::errc::timed_out).message()) !=
        std::string::npos);
  CHECK(test::open_descriptors() == before);
  std::error_code ec;
  const auto start = Clock::now();
  (void)sockpat::TcpConnection::connect("all-fail.test", 8080, o(), ec);
  CHECK(ec == std::errc::timed_out);
  CHECK(Clock::now() - start >= 450ms);  // the black hole's attempt ran until the deadline
  test::run_bounded([&]() -> sockpat::Task<void> {
    const auto r = co_await sockpat::as_result(sockpat::TcpConnection::async_connect("all-fail.test", 8080, o()));
    CHECK_FALSE(r);
    CHECK(r.error() == std::errc::timed_out);
    INFO(r.what());
    CHECK(r.what().find(refused.to_string()) != std::string::npos);
    CHECK(r.what().find(silent.endpoint().to_string()) != std::string::npos);
  });
  CHECK(test::open_descriptors() == before);
}

TEST_CASE("cancelling an awaited race closes every pending attempt" * doctest::timeout(30)) {
  auto silent = test::silent_listener();
  auto other = test::silent_listener();
  const auto o = options(endpoints({silent.endpoint(), other.endpoint()}), sockpat::Deadline());
  const int before = test::open_descriptors();
  test::run_bounded([&]() -> sockpat::Task<void> {
    const auto start = Clock::now();
    // Both attempts are pending (the second started after 250 ms) when wait_for cancels the race.
    const auto r = co_await sockpat::as_result(
        sockpat::wait_for(sockpat::TcpConnection::async_connect("black-hole.test", 1, o), 400ms));
    CHECK(r.error() == std::errc::timed_out);
    CHECK(Clock::now() - start < 2s);
  });
  CHECK(test::open_descriptors() == before);
}
#endif

TEST_CASE("a stop already requested ends a connect by name at once with operation_canceled" * doctest::timeout(10)) {
  std::stop_source stop;
  stop.request_stop();
  std::error_code ec;
  (void)sockpat::TcpConnection::connect("dual.test", 1, options(test::fixed_resolver({"127.0.0.1"}), stop.get_token()),
                                        ec);
  CHECK(ec == std::errc::operation_canceled);
}

TEST_CASE("every address refusing fails at once with connection_refused, naming both" * doctest::timeout(20)) {
  const auto port = test::closed_port();
  const auto o = options(test::fixed_resolver({"::1", "127.0.0.1"}));
  const auto start = Clock::now();
  CHECK_THROWS_WITH_AS((void)sockpat::TcpConnection::connect("refused.test", port, o),
                       doctest::Contains(("[::1]:" + std::to_string(port)).c_str()), std::system_error);
  std::error_code ec;
  (void)sockpat::TcpConnection::connect("refused.test", port, o, ec);
  CHECK(ec == std::errc::connection_refused);
  CHECK(Clock::now() - start < 1s);  // a failed attempt starts the next at once
}

TEST_CASE("a 100 ms deadline ends a connect whose resolution hangs, blocking and awaited" * doctest::timeout(20)) {
  test::Hang hang;
  const auto start = Clock::now();
  CHECK_THROWS_WITH_AS((void)sockpat::TcpConnection::connect("hang.test", 80, options(hang.resolver(), 100ms)),
                       doctest::Contains("resolve \"hang.test\""), std::system_error);
  CHECK(Clock::now() - start < 1s);
  std::error_code ec;
  (void)sockpat::TcpConnection::connect("hang.test", 80, options(hang.resolver(), 100ms), ec);
  CHECK(ec == std::errc::timed_out);
  test::run_bounded([&]() -> sockpat::Task<void> {
    const auto t0 = Clock::now();
    const auto r = co_await sockpat::as_result(
        sockpat::TcpConnection::async_connect("hang.test", 80, options(hang.resolver(), 100ms)));
    CHECK(r.error() == std::errc::timed_out);
    CHECK(Clock::now() - t0 >= 100ms);
    CHECK(Clock::now() - t0 < 1s);
  });
  REQUIRE(hang.entered(3));
  hang.release();
  CHECK(hang.freed());
}

TEST_CASE("a resolver that takes 2 s does not delay a 10 ms timer while async_connect waits for it" *
          doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  const auto port = listener.local_endpoint().port();
  test::run_bounded([&]() -> sockpat::Task<void> {
    auto* loop = sockpat::EventLoop::current();
    auto connecting = loop->create_task(
        sockpat::TcpConnection::async_connect("slow.test", port, options(test::slow_resolver(2s), 10s)));
    const auto start = Clock::now();
    co_await sockpat::sleep(10ms);
    CHECK(Clock::now() - start < 500ms);
    auto c = co_await connecting;
    CHECK(c.remote_endpoint() == listener.local_endpoint());
  });
}

TEST_CASE("open_connection races the addresses with the options given" * doctest::timeout(20)) {
  auto listener = test::loopback_listener();
  const auto port = listener.local_endpoint().port();
  const auto o = options(test::fixed_resolver({"::1", "127.0.0.1"}));
  test::run_bounded([&]() -> sockpat::Task<void> {
    auto streams = co_await sockpat::open_connection("dual.test", port, o);
    auto& writer = streams.second;
    auto server = listener.accept(5s);
    const std::string ping = "ping\n";
    co_await writer.write(ping);
    std::string line(5, '\0');
    CHECK(server.read_exactly(std::span<char>(line), 5s) == 5);
    CHECK(line == "ping\n");
  });
}

TEST_CASE("connect_with_retry by name dials by Happy Eyeballs and names every address when it gives up" *
          doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  sockpat::RetryOptions retry;
  retry.connect.resolver = test::fixed_resolver({"::1", "127.0.0.1"});
  auto c = sockpat::connect_with_retry<sockpat::Tcp>("dual.test", listener.local_endpoint().port(), 5s, retry);
  CHECK(c.remote_endpoint() == listener.local_endpoint());

  const auto port = test::closed_port();
  int retries = 0;
  retry.on_retry = [&](const std::error_code&, int) { ++retries; };
  // Attempts at 0 and 150 ms; the next pause (1.5 s) would pass the 1 s deadline, so it gives up
  // with the second attempt's errors. Every attempt has 850 ms or more left: none is cut short by
  // the deadline, however slow the machine (an attempt started in the last milliseconds of the
  // deadline times out naming only the address it reached).
  retry.backoff = sockpat::Backoff{.initial = 150ms, .max = 10s, .multiplier = 10.0, .jitter = 0.0};
  CHECK_THROWS_WITH_AS((void)sockpat::connect_with_retry<sockpat::Tcp>("refused.test", port, 1s, retry),
                       doctest::Contains(("127.0.0.1:" + std::to_string(port)).c_str()), std::system_error);
  CHECK(retries == 1);
  std::error_code ec;
  (void)sockpat::connect_with_retry<sockpat::Tcp>("refused.test", port, 1s, retry, ec);
  CHECK(ec == std::errc::connection_refused);
}

TEST_CASE("a name that resolves to no address fails with host_unreachable" * doctest::timeout(10)) {
  const auto o = options(endpoints({}));
  std::error_code ec;
  (void)sockpat::TcpConnection::connect("empty.test", 80, o, ec);
  CHECK(ec == std::errc::host_unreachable);
  CHECK_THROWS_WITH_AS((void)sockpat::TcpConnection::connect("empty.test", 80, o),
                       doctest::Contains("no address to try"), std::system_error);
}
}

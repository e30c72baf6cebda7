// Name resolution on a helper thread, bounded by a deadline: resolve(host, port, Deadline) and
// async_resolve on the running loop (both backends), with resolvers of the test's own.
#include "sockpat/resolver.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <chrono>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "sockpat/event_loop.hpp"
#include "sockpat/task.hpp"
#include "support/loop.hpp"
#include "support/resolvers.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

/// A resolver that fails the test if it is called.
sockpat::Resolver never_called() {
  return [](const std::string& host, std::uint16_t, std::error_code& ec) {
    ec = std::make_error_code(std::errc::io_error);
    FAIL("the resolver was called for ", host);
    return std::vector<sockpat::Endpoint>{};
  };
}

}  // namespace

TEST_SUITE("resolver") {
TEST_CASE("resolve with a deadline gives the resolver's addresses, in its order" * doctest::timeout(10)) {
  const auto r = test::fixed_resolver({"::1", "127.0.0.1"});
  const auto got = sockpat::resolve("service.test", 8080, 5s, r);
  REQUIRE(got.size() == 2);
  CHECK(got[0] == sockpat::Endpoint("::1", 8080));
  CHECK(got[1] == sockpat::Endpoint("127.0.0.1", 8080));
  std::error_code ec;
  CHECK(sockpat::resolve("service.test", 8080, 5s, ec, r).size() == 2);
  CHECK_FALSE(ec);
}

TEST_CASE("a numeric host is returned as it is, without asking the resolver" * doctest::timeout(10)) {
  const auto got = sockpat::resolve("::1", 7, 5s, never_called());
  REQUIRE(got.size() == 1);
  CHECK(got[0] == sockpat::Endpoint("::1", 7));
}

TEST_CASE("the system resolver turns localhost into loopback addresses within the deadline" * doctest::timeout(20)) {
  const auto got = sockpat::resolve("localhost", 80, 10s);
  REQUIRE_FALSE(got.empty());
  for (const auto& e : got) CHECK((e == sockpat::Endpoint("127.0.0.1", 80) || e == sockpat::Endpoint("::1", 80)));
}

TEST_CASE("bad arguments fail at once in both forms" * doctest::timeout(10)) {
  CHECK_THROWS_AS((void)sockpat::resolve("", 80, 1s, never_called()), std::invalid_argument);
  CHECK_THROWS_AS((void)sockpat::resolve("host.test", 70000, 1s, never_called()), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)sockpat::resolve("1.2.3", 80, 1s, never_called()), doctest::Contains("not a valid IPv4"),
                       std::invalid_argument);
  std::error_code ec;
  CHECK(sockpat::resolve("", 80, 1s, ec, never_called()).empty());
  CHECK(ec == std::errc::invalid_argument);
}

TEST_CASE("the resolver's own error is reported, naming the host" * doctest::timeout(10)) {
  const sockpat::Resolver failing = [](const std::string&, std::uint16_t, std::error_code& ec) {
    ec = std::make_error_code(std::errc::host_unreachable);
    return std::vector<sockpat::Endpoint>{};
  };
  CHECK_THROWS_WITH_AS((void)sockpat::resolve("down.test", 80, 5s, failing), doctest::Contains("resolve \"down.test\""),
                       std::system_error);
  std::error_code ec;
  (void)sockpat::resolve("down.test", 80, 5s, ec, failing);
  CHECK(ec == std::errc::host_unreachable);
}

TEST_CASE("a resolver that hangs ends resolve at its 100 ms deadline, and its late answer is dropped" *
          doctest::timeout(20)) {
  test::Hang hang;
  auto start = Clock::now();
  CHECK_THROWS_WITH_AS((void)sockpat::resolve("hang.test", 80, 100ms, hang.resolver()),
                       doctest::Contains("resolve \"hang.test\" after 100 ms"), std::system_error);
  auto took = Clock::now() - start;
  CHECK(took >= 100ms);
  CHECK(took < 1s);
  start = Clock::now();
  std::error_code ec;
  CHECK(sockpat::resolve("hang.test", 80, 100ms, ec, hang.resolver()).empty());
  took = Clock::now() - start;
  CHECK(ec == std::errc::timed_out);
  CHECK(took < 1s);
  REQUIRE(hang.entered(2));
  hang.release();
  CHECK(hang.freed());  // the helpers finished and let go of the resolvers and their answers
}

TEST_CASE("a stop request ends a resolve that waits, with operation_canceled" * doctest::timeout(20)) {
  test::Hang hang;
  std::stop_source stop;
  std::thread stopper([&] {
    if (hang.entered()) stop.request_stop();
  });
  std::error_code ec;
  (void)sockpat::resolve("hang.test", 80, sockpat::Deadline(10s, stop.get_token()), ec, hang.resolver());
  stopper.join();
  CHECK(ec == std::errc::operation_canceled);
  hang.release();
  CHECK(hang.freed());
}

TEST_CASE("set_default_resolver replaces the resolver of every call that names none" * doctest::timeout(10)) {
  sockpat::set_default_resolver(test::fixed_resolver({"127.0.0.9"}));
  const auto got = sockpat::resolve("anything.test", 5, 5s);
  sockpat::set_default_resolver({});  // back to getaddrinfo
  REQUIRE(got.size() == 1);
  CHECK(got[0] == sockpat::Endpoint("127.0.0.9", 5));
  CHECK_FALSE(sockpat::resolve("localhost", 5, 10s).empty());
}

TEST_CASE("a resolver that takes 2 s does not delay a 10 ms timer on the same loop" * doctest::timeout(30)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    auto* loop = sockpat::EventLoop::current();
    auto lookup = loop->create_task([]() -> sockpat::Task<std::vector<sockpat::Endpoint>> {
      co_return co_await sockpat::async_resolve("slow.test", 80, 10s, test::slow_resolver(2s));
    }());
    const auto start = Clock::now();
    co_await sockpat::sleep(10ms);
    const auto timer = Clock::now() - start;
    CHECK(timer >= 10ms);
    CHECK(timer < 500ms);  // the loop was not held by getaddrinfo
    CHECK_FALSE(lookup.done());
    const auto got = co_await lookup;
    REQUIRE(got.size() == 1);
    CHECK(got[0] == sockpat::Endpoint("127.0.0.1", 80));
    CHECK(Clock::now() - start >= 1900ms);
  });
}

TEST_CASE("a 100 ms deadline ends an async_resolve whose resolver hangs, in every form" * doctest::timeout(20)) {
  test::Hang hang;
  test::run_bounded([&]() -> sockpat::Task<void> {
    auto start = Clock::now();
    CHECK_THROWS_WITH_AS((void)co_await sockpat::async_resolve("hang.test", 80, 100ms, hang.resolver()),
                         doctest::Contains("resolve \"hang.test\""), std::system_error);
    CHECK(Clock::now() - start >= 100ms);
    CHECK(Clock::now() - start < 1s);
    std::error_code ec;
    start = Clock::now();
    const auto none = co_await sockpat::async_resolve("hang.test", 80, 100ms, ec, hang.resolver());
    CHECK(none.empty());
    CHECK(ec == std::errc::timed_out);
    CHECK(Clock::now() - start < 1s);
    const auto r = co_await sockpat::as_result(sockpat::async_resolve("hang.test", 80, 100ms, hang.resolver()));
    CHECK_FALSE(r);
    CHECK(r.error() == std::errc::timed_out);
  });
  REQUIRE(hang.entered(3));
  hang.release();
  CHECK(hang.freed());
}

TEST_CASE("cancelling an async_resolve ends it at once; a stop token too" * doctest::timeout(20)) {
  test::Hang hang;
  test::run_bounded([&]() -> sockpat::Task<void> {
    const auto start = Clock::now();
    CHECK_THROWS_AS(co_await sockpat::wait_for(sockpat::async_resolve("hang.test", 80, {}, hang.resolver()), 50ms),
                    std::system_error);
    CHECK(Clock::now() - start < 1s);
    std::stop_source stop;
    std::thread stopper([&] {
      if (hang.entered(2)) stop.request_stop();
    });
    std::error_code ec;
    (void)co_await sockpat::async_resolve("hang.test", 80, stop.get_token(), ec, hang.resolver());
    stopper.join();
    CHECK(ec == std::errc::operation_canceled);
  });
  hang.release();
  CHECK(hang.freed());
}

TEST_CASE("a loop that closes while a resolution is pending is not woken by the late answer" * doctest::timeout(20)) {
  test::Hang hang;
  {
    sockpat::EventLoop loop;
    auto pending = loop.create_task([&]() -> sockpat::Task<void> {
      (void)co_await sockpat::async_resolve("hang.test", 80, {}, hang.resolver());
    }());
    REQUIRE(hang.entered());  // create_task ran the task to its await: the helper is in the resolver
    CHECK_FALSE(pending.done());
  }  // the loop goes, cancelling the awaiter
  hang.release();  // the answer now finds no one waiting
  CHECK(hang.freed());
}

TEST_CASE("async_resolve of a numeric host or a bad argument needs no helper" * doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    const auto got = co_await sockpat::async_resolve("127.0.0.1", 9, 1s, never_called());
    REQUIRE(got.size() == 1);
    CHECK(got[0] == sockpat::Endpoint("127.0.0.1", 9));
    std::error_code ec;
    (void)co_await sockpat::async_resolve("", 9, 1s, ec, never_called());
    CHECK(ec == std::errc::invalid_argument);
    CHECK_THROWS_AS((void)co_await sockpat::async_resolve("x.test", -1, 1s, never_called()), std::system_error);
  });
}
}

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

#if !defined(_WIN32)
#include <signal.h>    // kill, SIGKILL
#include <sys/wait.h>  // waitpid
#include <unistd.h>    // fork, _exit, alarm, getpid
#endif

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

/// Resolves `host` with `resolver` and no deadline, storing the error in `*ec`. Started by
/// EventLoop::create_task, it runs to its wait at once: with a resolver that hangs, a lookup that
/// holds a helper without a thread of the test's waiting for it.
sockpat::Task<void> lookup(std::string host, sockpat::Resolver resolver, std::error_code* ec) {
  std::error_code got;
  (void)co_await sockpat::async_resolve(std::move(host), 80, {}, got, std::move(resolver));
  *ec = got;
}

/// Restores the process's default resolver when the test ends, passed or not.
struct DefaultResolverFor {
  explicit DefaultResolverFor(sockpat::Resolver r) { sockpat::set_default_resolver(std::move(r)); }
  DefaultResolverFor(const DefaultResolverFor&) = delete;
  DefaultResolverFor& operator=(const DefaultResolverFor&) = delete;
  ~DefaultResolverFor() { sockpat::set_default_resolver({}); }
};

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
    });
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
    });
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

TEST_CASE("eight lookups that hang do not hold up a lookup, or a connect by name, that can be answered" *
          doctest::timeout(30)) {
  test::Hang hang;
  {
    std::vector<std::error_code> errors(8);  // outlives the loop, whose end ends each lookup
    sockpat::EventLoop loop;                 // never run: each lookup waits where create_task left it
    std::vector<sockpat::TaskHandle<void>> dead;
    for (std::size_t i = 0; i < errors.size(); ++i) {
      dead.push_back(loop.create_task(lookup("dead" + std::to_string(i) + ".test", hang.resolver(), &errors[i])));
    }
    REQUIRE(hang.entered(4));  // the old pool's every helper is stuck
    auto start = Clock::now();
    std::error_code ec;
    const auto got = sockpat::resolve("alive.test", 80, 2s, ec, test::fixed_resolver({"127.0.0.1"}));
    CHECK_FALSE(ec);
    CHECK(got.size() == 1);
    CHECK(Clock::now() - start < 1s);
    // localhost by getaddrinfo (/etc/hosts), through a connect by name.
    auto listener = sockpat::TcpListener::bind({"127.0.0.1", 0});
    start = Clock::now();
    auto options = sockpat::ConnectOptions::with_deadline(5s);
    options.prefer = sockpat::Family::ipv4;
    const auto conn = sockpat::TcpConnection::connect("localhost", listener.local_endpoint().port(), options, ec);
    CHECK_FALSE(ec);
    CHECK(Clock::now() - start < 4s);
    CHECK(hang.entered(8));  // each dead name has a helper of its own
    for (const auto& t : dead) CHECK_FALSE(t.done());
    hang.release();
  }  // the loop goes, cancelling the lookups that waited
  CHECK(hang.freed());
}

TEST_CASE("concurrent lookups of one name that hangs share one call, each bounded by its own deadline" *
          doctest::timeout(30)) {
  test::Hang hang;
  const DefaultResolverFor hung(hang.resolver());
  std::vector<std::thread> askers;
  std::vector<std::error_code> errors(8);
  for (std::size_t i = 0; i < errors.size(); ++i) {
    askers.emplace_back([&, i] { (void)sockpat::resolve("same.test", 80, 200ms, errors[i]); });
  }
  for (auto& t : askers) t.join();
  for (const auto& e : errors) CHECK(e == std::errc::timed_out);
  REQUIRE(hang.entered());
  CHECK(hang.calls() == 1);
  // A later asker attaches to the running call too, and gets its answer when it comes.
  std::thread releaser([&] {
    const auto until = Clock::now() + 5s;
    while (sockpat::detail::resolutions().waiting("same.test") < 1 && Clock::now() < until) std::this_thread::yield();
    hang.release();
  });
  std::error_code ec;
  const auto got = sockpat::resolve("same.test", 80, 10s, ec);
  releaser.join();
  CHECK_FALSE(ec);
  REQUIRE(got.size() == 1);
  CHECK(got[0] == sockpat::Endpoint("127.0.0.1", 80));
  CHECK(hang.calls() == 1);
  // Another port is another lookup.
  CHECK(sockpat::resolve("same.test", 81, 10s).size() == 1);
  CHECK(hang.calls() == 2);
}

TEST_CASE("a lookup that finds every helper stuck fails at once, saying how many and for how long" *
          doctest::timeout(60)) {
  test::Hang hang;
  const auto limit = static_cast<int>(sockpat::detail::max_resolver_threads);
  {
    std::vector<std::error_code> errors(static_cast<std::size_t>(2 * limit));  // outlives the loop
    sockpat::EventLoop loop;  // never run: each lookup waits where create_task left it
    std::vector<sockpat::TaskHandle<void>> dead;
    int started = 0;
    for (; started < 2 * limit; ++started) {
      auto t = loop.create_task(lookup("dead" + std::to_string(started) + ".test", hang.resolver(),
                                       &errors[static_cast<std::size_t>(started)]));
      if (t.done()) break;  // refused
      dead.push_back(std::move(t));
    }
    REQUIRE(started < 2 * limit);
    CHECK(errors[static_cast<std::size_t>(started)] == std::errc::resource_unavailable_try_again);
    CHECK(started <= limit);  // fewer if a helper of an earlier test was still leaving
    REQUIRE(hang.entered(started));
    const auto start = Clock::now();
    // resolve "db.test" (64 lookups already running, the oldest for N s): Resource temporarily unavailable
    const std::string running = std::to_string(limit) + " lookups already running, the oldest for ";
    const std::string full = "resolve \"db.test\" (" + running;
    try {
      (void)sockpat::resolve("db.test", 80, 5s, hang.resolver());
      FAIL("resolve did not throw");
    } catch (const std::system_error& e) {
      const std::string what = e.what();
      CHECK(e.code() == std::errc::resource_unavailable_try_again);
      CHECK(what.starts_with(full));
      CHECK(what.find(" s): ", full.size()) != std::string::npos);
    }
    std::error_code ec;
    (void)sockpat::resolve("db.test", 80, 5s, ec, hang.resolver());
    CHECK(ec == std::errc::resource_unavailable_try_again);
    const auto awaited = loop.create_task([](std::string expected, sockpat::Resolver r) -> sockpat::Task<void> {
      CHECK_THROWS_WITH_AS((void)co_await sockpat::async_resolve("db.test", 80, 5s, r),
                           doctest::Contains(expected.c_str()), std::system_error);
    }(running, hang.resolver()));
    CHECK(awaited.done());  // refused at once, not at the deadline
    CHECK(Clock::now() - start < 1s);
    hang.release();
  }
  CHECK(hang.freed(20000ms));
  // Helpers free again: lookups run.
  CHECK(sockpat::resolve("alive.test", 80, 5s, test::fixed_resolver({"127.0.0.1"})).size() == 1);
}

TEST_CASE("helpers beyond the ones in use retire after their idle time" * doctest::timeout(30)) {
  // Never destroyed, as the process-wide pool: a helper may still be leaving when threads() is 0.
  static auto& pool = *new sockpat::detail::ThreadPool(8, 50ms);
  test::Hang hang;
  const auto resolver = hang.resolver();
  for (int i = 0; i < 8; ++i) {
    REQUIRE_FALSE(pool.submit([resolver] {
      std::error_code ec;
      (void)resolver("x.test", 80, ec);
    }));
  }
  REQUIRE(hang.entered(8));
  CHECK(pool.threads() == 8);
  sockpat::detail::ThreadPool::Busy busy;
  CHECK(pool.submit([] {}, &busy) == std::errc::resource_unavailable_try_again);
  CHECK(busy.running == 8);
  hang.release();
  const auto until = Clock::now() + 10s;
  while (pool.threads() != 0 && Clock::now() < until) std::this_thread::sleep_for(10ms);
  CHECK(pool.threads() == 0);
}

// Windows has no fork. ThreadSanitizer kills a child that starts a thread when its parent had
// several (die_after_fork), and this test's point is a parent with helper threads, so it is left
// out of TSan builds; ASan and UBSan run it.
#if !defined(_WIN32) && !defined(__SANITIZE_THREAD__)
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SOCKPAT_TEST_NO_FORK 1
#endif
#endif
#if !defined(SOCKPAT_TEST_NO_FORK)
TEST_CASE("a forked child's lookups get helpers of their own, with a deadline and without" * doctest::timeout(60)) {
  // At the fork the parent has an idle helper, one inside a lookup that hangs (of the name the
  // child asks for, through the same default resolver), and a thread holding the lookups' lock.
  REQUIRE(sockpat::resolve("parent.test", 80, 5s, test::fixed_resolver({"127.0.0.1"})).size() == 1);
  test::Hang hang;
  const pid_t parent = ::getpid();
  const auto hung = hang.resolver();
  const DefaultResolverFor in_parent_only([hung, parent](const std::string& host, std::uint16_t port, std::error_code& ec) {
    if (::getpid() == parent) return hung(host, port, ec);
    return std::vector<sockpat::Endpoint>{{"127.0.0.3", port}};
  });
  std::error_code ec;
  (void)sockpat::resolve("child.test", 80, 10ms, ec);
  REQUIRE(ec == std::errc::timed_out);
  REQUIRE(hang.entered());
  std::mutex step;
  std::condition_variable changed;
  bool locked = false;
  bool forked = false;
  std::thread holder([&] {
    const std::lock_guard<std::mutex> held(sockpat::detail::resolutions().mutex);
    std::unique_lock<std::mutex> lock(step);
    locked = true;
    changed.notify_all();
    changed.wait_for(lock, 10s, [&] { return forked; });
  });
  {
    std::unique_lock<std::mutex> lock(step);
    REQUIRE(changed.wait_for(lock, 10s, [&] { return locked; }));
  }
  const pid_t child = ::fork();
  if (child == 0) {
    ::alarm(30);  // a child that hangs ends itself too
    int status = 0;
    try {
      std::error_code child_ec;
      const auto a = sockpat::resolve("child.test", 80, 5s, child_ec);
      if (child_ec == std::errc::timed_out) status = 10;
      else if (child_ec || a.size() != 1 || a[0] != sockpat::Endpoint("127.0.0.3", 80)) status = 11;
      const auto b = sockpat::resolve("other.test", 81, {}, test::fixed_resolver({"127.0.0.4"}));
      if (status == 0 && (b.size() != 1 || b[0] != sockpat::Endpoint("127.0.0.4", 81))) status = 12;
    } catch (...) {
      status = 13;
    }
    ::_exit(status);
  }
  {
    const std::lock_guard<std::mutex> lock(step);
    forked = true;
    changed.notify_all();
  }
  holder.join();
  REQUIRE(child > 0);
  int status = -1;
  pid_t waited = 0;
  const auto until = Clock::now() + 20s;
  while ((waited = ::waitpid(child, &status, WNOHANG)) == 0 && Clock::now() < until) std::this_thread::sleep_for(10ms);
  if (waited == 0) {
    ::kill(child, SIGKILL);
    (void)::waitpid(child, &status, 0);
    FAIL("the child did not end within 20 s");
  }
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  hang.release();
  CHECK(sockpat::resolve("child.test", 80, 5s).size() == 1);  // the parent's lookups still run
}
#endif
#endif
}

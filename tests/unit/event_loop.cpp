#include "sockpat/event_loop.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#if !defined(_WIN32)
#include <sys/resource.h>  // getrlimit, setrlimit: 1000 connections need 2000+ descriptors
#endif

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>  // std::malloc, std::free: the replaced operator new
#include <new>      // std::bad_alloc
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sockpat/listener.hpp"
#include "sockpat/sync.hpp"  // Event: a wait that only cancelling ends
#include "sockpat/task_group.hpp"

// ThreadSanitizer's static runtime defines the global operator new too (the link fails), so
// under TSan the out-of-memory test below is left out; every other build runs it.
#if defined(__SANITIZE_THREAD__)
#define SOCKPAT_TEST_REPLACES_NEW 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SOCKPAT_TEST_REPLACES_NEW 0
#endif
#endif
#ifndef SOCKPAT_TEST_REPLACES_NEW
#define SOCKPAT_TEST_REPLACES_NEW 1
#endif

#if SOCKPAT_TEST_REPLACES_NEW
namespace {
// Set by a test to make every allocation of this thread fail, as a loop out of memory sees.
thread_local bool refuse_allocations = false;
}  // namespace

// Not inlined: see event_loop_alloc.cpp (g++ -O2 would warn of a mismatched new and delete).
[[gnu::noinline]] void* operator new(std::size_t n) {
  if (refuse_allocations) throw std::bad_alloc();
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

#if defined(_WIN32)
void ensure_descriptors(unsigned long) {}  // Windows has no per-process descriptor limit to raise
#else
void ensure_descriptors(rlim_t wanted) {
  ::rlimit r{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &r) == 0);
  if (r.rlim_cur >= wanted) return;
  REQUIRE_MESSAGE(r.rlim_max >= wanted, "the hard descriptor limit is below " << wanted);
  r.rlim_cur = wanted;
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &r) == 0);
}
#endif

sockpat::Task<int> answer() { co_return 42; }
sockpat::Task<void> fail() {
  co_await sockpat::sleep(0ms);
  throw std::runtime_error("boom");
}

sockpat::Task<void> echo_one(sockpat::TcpConnection conn) {
  std::array<std::byte, 4096> buf{};
  for (;;) {
    const auto n = co_await conn.async_read_some(buf);
    if (n == 0) co_return;
    co_await conn.async_write_all(std::span<const std::byte>(buf.data(), n));
  }
}

sockpat::Task<void> echo_server(sockpat::TcpListener& listener, std::size_t clients) {
  for (std::size_t i = 0; i < clients; ++i) sockpat::create_task(echo_one(co_await listener.async_accept()));
}

sockpat::Task<bool> one_client(sockpat::Endpoint server, std::size_t id) {
  auto conn = co_await sockpat::TcpConnection::async_connect(server, 20s);
  const std::string message = "client " + std::to_string(id) + std::string(id % 200, '.') + " end";
  co_await conn.async_write_all(message);
  std::string back(message.size(), '\0');
  co_await conn.async_read_exactly(std::span<char>(back), 20s);
  co_return back == message;
}

}  // namespace

TEST_SUITE("event_loop") {
TEST_CASE("run returns the task's value and rethrows its exception") {
  CHECK(sockpat::run(answer()) == 42);
  CHECK_THROWS_WITH_AS(sockpat::run(fail()), "boom", std::runtime_error);
}

TEST_CASE("the loop is reachable from the thread that made it, and only one per thread") {
  CHECK(sockpat::EventLoop::current() == nullptr);
  {
    sockpat::EventLoop loop;
    CHECK(&sockpat::get_running_loop() == &loop);
    CHECK_THROWS_AS(sockpat::EventLoop(), std::logic_error);
  }
  CHECK(sockpat::EventLoop::current() == nullptr);
  CHECK_THROWS_AS(sockpat::get_running_loop(), std::logic_error);
}

TEST_CASE("a running loop refuses to be run again from inside") {
  sockpat::EventLoop loop;
  auto nested = [&]() -> sockpat::Task<void> {
    CHECK_THROWS_AS(loop.run_until_complete(answer()), std::logic_error);
    co_return;
  };
  loop.run_until_complete(nested());
}

TEST_CASE("timers fire in order and on time within a tolerance") {
  sockpat::EventLoop loop;
  std::vector<int> order;
  std::vector<Clock::duration> late;
  const auto start = Clock::now();
  auto sleeper = [&](int ms) -> sockpat::Task<void> {
    co_await sockpat::sleep(std::chrono::milliseconds(ms));
    late.push_back(Clock::now() - (start + std::chrono::milliseconds(ms)));
    order.push_back(ms);
  };
  std::vector<sockpat::Task<void>> tasks;
  for (int ms : {120, 10, 80, 40, 0, 60, 20}) tasks.push_back(sleeper(ms));
  loop.run_until_complete([&]() -> sockpat::Task<void> { co_await sockpat::gather(std::move(tasks)); }());
  CHECK(order == std::vector<int>{0, 10, 20, 40, 60, 80, 120});
  for (auto l : late) {
    CHECK(l >= 0ms);   // never early
    CHECK(l < 200ms);  // and not much late, on a loaded machine
  }
  CHECK(loop.timers() == 0);
}

TEST_CASE("ten thousand timers cost one heap and fire in order") {
  sockpat::EventLoop loop;
  int fired = 0;
  int last = -1;
  bool in_order = true;
  const auto base = Clock::now() + 5ms;
  auto sleeper = [&](int i) -> sockpat::Task<void> {
    co_await sockpat::sleep_until(base + std::chrono::microseconds((i * 7919) % 10000 * 3));
    const int key = (i * 7919) % 10000;
    if (key < last) in_order = false;
    last = key;
    ++fired;
  };
  for (int i = 0; i < 10000; ++i) loop.create_task(sleeper(i));
  CHECK(loop.timers() == 10000);
  loop.run_until_complete([&]() -> sockpat::Task<void> {
    while (fired < 10000) co_await sockpat::sleep(1ms);
  }());
  CHECK(fired == 10000);
  CHECK(in_order);
}

TEST_CASE("call_soon_threadsafe from 4 threads runs every function on the loop's thread") {
  sockpat::EventLoop loop;
  const auto loop_thread = std::this_thread::get_id();
  int count = 0;  // touched on the loop's thread only
  bool wrong_thread = false;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        loop.call_soon_threadsafe([&] {
          if (std::this_thread::get_id() != loop_thread) wrong_thread = true;
          if (++count == 4000) loop.stop();
        });
      }
    });
  }
  loop.run();  // returns on the 4000th function's stop()
  for (auto& t : threads) t.join();
  CHECK(count == 4000);
  CHECK_FALSE(wrong_thread);
}

TEST_CASE("stop from another thread makes run return") {
  sockpat::EventLoop loop;
  std::atomic<bool> started{false};
  loop.call_soon_threadsafe([&] { started = true; });
  std::thread stopper([&] {
    while (!started) std::this_thread::yield();
    loop.stop();
  });
  loop.run();
  stopper.join();
  CHECK(started);
}

TEST_CASE("stop cancels the task of run_until_complete with operation_canceled") {
  sockpat::EventLoop loop;
  loop.call_soon_threadsafe([&] { loop.stop(); });
  auto forever = []() -> sockpat::Task<void> { co_await sockpat::sleep(1h); };
  try {
    loop.run_until_complete(forever());
    FAIL("expected operation_canceled");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::operation_canceled);
  }
}

TEST_CASE("a spawned task's exception is reported, and the loop goes on") {
  sockpat::EventLoop loop;
  std::vector<std::string> reports;
  loop.set_exception_handler([&](std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      reports.emplace_back(x.what());
    }
  });
  loop.create_task(fail());
  CHECK(loop.spawned_tasks() == 1);
  CHECK(loop.run_until_complete(answer()) == 42);
  loop.run_until_complete([]() -> sockpat::Task<void> { co_await sockpat::sleep(5ms); }());
  CHECK(reports == std::vector<std::string>{"boom"});
  CHECK(loop.spawned_tasks() == 0);
}

TEST_CASE("destroying the loop cancels spawned tasks, which unwind") {
  bool unwound = false;
  {
    sockpat::EventLoop loop;
    loop.create_task([](bool& flag) -> sockpat::Task<void> {
      struct Guard {
        bool& f;
        ~Guard() { f = true; }
      } g{flag};
      co_await sockpat::sleep(1h);
    }(unwound));
    loop.run_until_complete([]() -> sockpat::Task<void> { co_await sockpat::sleep(1ms); }());
    CHECK_FALSE(unwound);
  }
  CHECK(unwound);
}

TEST_CASE("destroying the loop ends a task that catches operation_canceled and waits again, and again" *
          doctest::timeout(60)) {
  // Bounded, so that the test ends even when the loop does not make the task yield: then
  // every one of the attempts is spent inside one resume, during shutdown.
  constexpr long most = 1000000;
  long on_event = 0;
  long on_sleep = 0;
  bool event_task_ended = false;
  sockpat::Event never;  // outlives the loop: a waiter of a destroyed task must not stay in it
  {
    sockpat::EventLoop loop;
    loop.create_task([&]() -> sockpat::Task<void> {
      for (; on_event < most; ++on_event) {
        try {
          co_await never.wait();
        } catch (const std::system_error& e) {
          CHECK(e.code() == std::errc::operation_canceled);
        }
      }
      event_task_ended = true;
    });
    loop.create_task([&]() -> sockpat::Task<void> {
      for (; on_sleep < most; ++on_sleep) {
        try {
          co_await sockpat::sleep(1h);
        } catch (const std::system_error&) {
        }
      }
    });
    loop.run_until_complete([]() -> sockpat::Task<void> { co_await sockpat::sleep(1ms); }());
  }
  // The loop gave up on them long before the bound (and destroyed them).
  CHECK(on_event < most / 4);
  CHECK(on_sleep < most / 4);
  CHECK_FALSE(event_task_ended);
  never.set();  // no waiter of the destroyed task is left in it
}

#if SOCKPAT_TEST_REPLACES_NEW
TEST_CASE("a loop out of memory to queue a coroutine still never resumes it inside the call that woke it" *
          doctest::timeout(10)) {
  constexpr int waiters = 200;
  int resumed = 0;
  int resumed_inside_set = 0;
  bool inside_set = false;
  sockpat::EventLoop loop;
  loop.run_until_complete([&]() -> sockpat::Task<void> {
    sockpat::Event event;
    co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
      for (int i = 0; i < waiters; ++i) {
        group.create_task([&]() -> sockpat::Task<void> {
          co_await event.wait();
          ++resumed;  // allocates nothing: it may run while allocations are refused
          if (inside_set) ++resumed_inside_set;
        });
      }
      // The loop's ready queue has never held more than a few: waking 200 must grow it.
      inside_set = true;
      refuse_allocations = true;
      event.set();
      refuse_allocations = false;
      inside_set = false;
      co_return;
    });
  }());
  CHECK(resumed_inside_set == 0);  // a resumption inside set() could destroy the event under it
  CHECK(resumed == waiters);
}
#endif

TEST_CASE("1000 concurrent connections on one loop each get their own bytes back" * doctest::timeout(60)) {
  constexpr std::size_t clients = 1000;
  ensure_descriptors(2 * clients + 64);
  sockpat::EventLoop loop;
  auto listener = sockpat::TcpListener::bind({"127.0.0.1", 0});
  loop.create_task(echo_server(listener, clients));
  std::vector<sockpat::Task<bool>> tasks;
  for (std::size_t i = 0; i < clients; ++i) tasks.push_back(one_client(listener.local_endpoint(), i));
  const auto results = loop.run_until_complete(
      [](std::vector<sockpat::Task<bool>> t) -> sockpat::Task<std::vector<bool>> {
        co_return co_await sockpat::gather(std::move(t));
      }(std::move(tasks)));
  REQUIRE(results.size() == clients);
  std::size_t good = 0;
  for (bool ok : results) good += ok ? 1 : 0;
  CHECK(good == clients);
}
}

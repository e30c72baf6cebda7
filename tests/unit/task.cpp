#include "sockpat/task.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include "sockpat/detail/per_thread.hpp"
#include "sockpat/event_loop.hpp"
#include "sockpat/listener.hpp"
#include "sockpat/streams.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

static_assert(!std::is_copy_constructible_v<sockpat::Task<int>>);
static_assert(std::is_nothrow_move_constructible_v<sockpat::Task<int>>);
static_assert(std::is_nothrow_move_assignable_v<sockpat::Task<void>>);

namespace {

sockpat::Task<int> value(int v) { co_return v; }
sockpat::Task<std::unique_ptr<int>> move_only(int v) { co_return std::make_unique<int>(v); }
sockpat::Task<int> add(int a, int b) { co_return co_await value(a) + co_await value(b); }
sockpat::Task<int> thrower() {
  co_await sockpat::sleep(1ms);
  throw std::runtime_error("inner failure");
}
sockpat::Task<int> slow_value(int v, std::chrono::milliseconds after) {
  co_await sockpat::sleep(after);
  co_return v;
}
sockpat::Task<void> one_turn() { co_await sockpat::yield_now(); }
bool is_canceled(const std::system_error& e) { return e.code() == std::errc::operation_canceled; }
sockpat::Task<int> deep(int n) {
  if (n == 0) co_return 0;
  co_return 1 + co_await deep(n - 1);
}

}  // namespace

TEST_SUITE("task") {
TEST_CASE("a task is lazy: nothing runs until it is awaited") {
  bool ran = false;
  auto make = [&]() -> sockpat::Task<void> {
    ran = true;
    co_return;
  };
  {
    auto t = make();
    CHECK_FALSE(ran);
  }  // destroyed unstarted
  CHECK_FALSE(ran);
  sockpat::run(make());
  CHECK(ran);
}

TEST_CASE("values and move-only values come back through co_await") {
  CHECK(sockpat::run(add(2, 3)) == 5);
  CHECK(*sockpat::run(move_only(7)) == 7);
}

TEST_CASE("a chain of 10000 tasks each awaiting the next completes") {
  CHECK(sockpat::run(deep(10000)) == 10000);
}

TEST_CASE("an exception propagates to the awaiter") {
  auto outer = []() -> sockpat::Task<std::string> {
    try {
      co_await thrower();
    } catch (const std::runtime_error& e) {
      co_return std::string("caught ") + e.what();
    }
    co_return "not thrown";
  };
  CHECK(sockpat::run(outer()) == "caught inner failure");
}

TEST_CASE("gather runs tasks side by side and keeps their order") {
  std::vector<int> finished;
  auto slow = [&](int v, int ms) -> sockpat::Task<int> {
    co_await sockpat::sleep(std::chrono::milliseconds(ms));
    finished.push_back(v);
    co_return v;
  };
  auto result = sockpat::run([&]() -> sockpat::Task<std::vector<int>> {
    std::vector<sockpat::Task<int>> tasks;
    tasks.push_back(slow(1, 60));
    tasks.push_back(slow(2, 20));
    tasks.push_back(slow(3, 40));
    co_return co_await sockpat::gather(std::move(tasks));
  }());
  CHECK(result == std::vector<int>{1, 2, 3});
  CHECK(finished == std::vector<int>{2, 3, 1});  // concurrent: one after the other would give 1, 2, 3
}

TEST_CASE("gather of tasks of different types returns a tuple, in order; a void task gives monostate") {
  auto name = []() -> sockpat::Task<std::string> {
    co_await sockpat::sleep(2ms);
    co_return std::string(40, 'n');
  };
  bool ran = false;
  auto side = [&]() -> sockpat::Task<void> {
    co_await sockpat::yield_now();
    ran = true;
  };
  auto [n, s, unit] = sockpat::run([&]() -> sockpat::Task<std::tuple<int, std::string, std::monostate>> {
    co_return co_await sockpat::gather(value(7), name(), side());
  }());
  CHECK(n == 7);
  CHECK(s == std::string(40, 'n'));
  CHECK(unit == std::monostate{});
  CHECK(ran);

  // The first failure cancels the others and is rethrown once they have ended.
  bool cancelled = false;
  auto slow = [&]() -> sockpat::Task<int> {
    try {
      co_await sockpat::sleep(1h);
    } catch (const std::system_error& e) {
      cancelled = e.code() == std::errc::operation_canceled;
      throw;
    }
    co_return 1;
  };
  auto fails = []() -> sockpat::Task<std::string> {
    co_await sockpat::sleep(1ms);
    throw std::runtime_error("no name");
  };
  CHECK_THROWS_WITH_AS(sockpat::run([&]() -> sockpat::Task<void> { (void)co_await sockpat::gather(slow(), fails()); }()),
                       "no name", std::runtime_error);
  CHECK(cancelled);
}

TEST_CASE("gather of nothing returns at once") {
  CHECK(sockpat::run([]() -> sockpat::Task<std::size_t> {
          co_return (co_await sockpat::gather(std::vector<sockpat::Task<int>>{})).size();
        }()) == 0);
}

TEST_CASE("the first failure in gather cancels the others and is rethrown") {
  bool other_cancelled = false;
  auto waits = [&]() -> sockpat::Task<int> {
    try {
      co_await sockpat::sleep(1h);
    } catch (const std::system_error& e) {
      other_cancelled = e.code() == std::errc::operation_canceled;
      throw;
    }
    co_return 0;
  };
  auto main = [&]() -> sockpat::Task<void> {
    std::vector<sockpat::Task<int>> tasks;
    tasks.push_back(waits());
    tasks.push_back(thrower());
    (void)co_await sockpat::gather(std::move(tasks));
  };
  CHECK_THROWS_WITH_AS(sockpat::run(main()), "inner failure", std::runtime_error);
  CHECK(other_cancelled);
}

TEST_CASE("wait_for returns the value when the task is quick enough") {
  CHECK(sockpat::run([]() -> sockpat::Task<int> { co_return co_await sockpat::wait_for(value(9), 1s); }()) == 9);
}

TEST_CASE("wait_for times out and cancels the inner operation") {
  bool inner_cancelled = false;
  bool inner_finished = false;
  auto inner = [&]() -> sockpat::Task<int> {
    try {
      co_await sockpat::sleep(1h);
    } catch (const std::system_error& e) {
      inner_cancelled = e.code() == std::errc::operation_canceled;
      throw;
    }
    inner_finished = true;
    co_return 1;
  };
  const auto start = Clock::now();
  auto main = [&]() -> sockpat::Task<void> { (void)co_await sockpat::wait_for(inner(), 30ms); };
  try {
    sockpat::run(main());
    FAIL("expected timed_out");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::timed_out);
  }
  CHECK(Clock::now() - start >= 30ms);
  CHECK(Clock::now() - start < 1s);
  CHECK(inner_cancelled);
  CHECK_FALSE(inner_finished);
  CHECK(sockpat::EventLoop::current() == nullptr);
}

TEST_CASE("wait_for reports a task's own error, not timed_out, when the task fails while its timeout cancels it") {
  // The task meets the cancellation, and its clean-up fails with an error of its own.
  auto cleanup_fails = []() -> sockpat::Task<int> {
    try {
      co_await sockpat::sleep(1h);
    } catch (const std::system_error&) {
    }
    throw std::system_error(std::make_error_code(std::errc::connection_reset), "clean-up");
  };
  auto main = [&]() -> sockpat::Task<void> { (void)co_await sockpat::wait_for(cleanup_fails(), 10ms); };
  try {
    sockpat::run(main());
    FAIL("expected the task's own error");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::connection_reset);
  }
  // Not a system_error at all: it comes through as it is.
  auto throws_other = []() -> sockpat::Task<void> {
    try {
      co_await sockpat::sleep(1h);
    } catch (const std::system_error&) {
    }
    throw std::runtime_error("while unwinding");
  };
  CHECK_THROWS_WITH_AS(
      sockpat::run([&]() -> sockpat::Task<void> { co_await sockpat::wait_for(throws_other(), 10ms); }()),
      "while unwinding", std::runtime_error);
  // The cancellation itself is still the timeout.
  auto plain = []() -> sockpat::Task<void> { co_await sockpat::sleep(1h); };
  CHECK_THROWS_WITH_AS(sockpat::run([&]() -> sockpat::Task<void> { co_await sockpat::wait_for(plain(), 10ms); }()),
                       doctest::Contains("timed"), std::system_error);
}

TEST_CASE("nested wait_for: the outer timeout cancels through the inner one") {
  auto main = []() -> sockpat::Task<void> {
    auto inner = []() -> sockpat::Task<void> {
      co_await sockpat::wait_for([]() -> sockpat::Task<void> { co_await sockpat::sleep(1h); }(), 1h);
    };
    co_await sockpat::wait_for(inner(), 20ms);
  };
  CHECK_THROWS_WITH_AS(sockpat::run(main()), doctest::Contains("timed"), std::system_error);
}

TEST_CASE("sleep waits at least its duration") {
  const auto start = Clock::now();
  sockpat::run([]() -> sockpat::Task<void> { co_await sockpat::sleep(25ms); }());
  CHECK(Clock::now() - start >= 25ms);
}

TEST_CASE("wait_for takes any awaitable: a gather, an accept, a read_chunk, a yield" * doctest::timeout(10)) {
  sockpat::run([]() -> sockpat::Task<void> {
    // A gather of tasks that end in time: their results come through.
    std::vector<sockpat::Task<int>> quick;
    quick.push_back(value(1));
    quick.push_back(value(2));
    const auto both = co_await sockpat::wait_for(sockpat::gather(std::move(quick)), 1s);
    CHECK(both == std::vector<int>{1, 2});

    // A gather that does not: every task in it has ended, cancelled, when wait_for throws.
    int ended = 0;
    auto slow = [&]() -> sockpat::Task<int> {
      try {
        co_await sockpat::sleep(10s);
      } catch (...) {
        ++ended;
        throw;
      }
      co_return 0;
    };
    std::vector<sockpat::Task<int>> slow_ones;
    slow_ones.push_back(slow());
    slow_ones.push_back(slow());
    auto start = Clock::now();
    try {
      (void)co_await sockpat::wait_for(sockpat::gather(std::move(slow_ones)), 20ms);
      FAIL("the gather should have timed out");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::timed_out);
    }
    CHECK(ended == 2);
    CHECK(Clock::now() - start < 5s);

    // An accept with no client.
    auto listener = sockpat::TcpListener::bind({"127.0.0.1", 0});
    try {
      (void)co_await sockpat::wait_for(listener.async_accept(), 20ms);
      FAIL("the accept should have timed out");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::timed_out);
    }

    // A read_chunk on a silent stream; the reader is usable afterwards.
    auto server = co_await sockpat::start_server(
        [](sockpat::StreamReader, sockpat::StreamWriter writer) -> sockpat::Task<void> {
          co_await sockpat::sleep(50ms);
          co_await writer.write("late");
          co_await writer.drain();
        },
        "127.0.0.1", 0);
    auto [reader, writer] = co_await sockpat::open_connection("127.0.0.1", server.local_endpoint().port());
    try {
      (void)co_await sockpat::wait_for(reader.read_chunk(), 10ms);
      FAIL("the read should have timed out");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::timed_out);
    }
    const auto chunk = co_await sockpat::wait_for(reader.read_chunk(), 5s);
    CHECK(std::string(reinterpret_cast<const char*>(chunk.data()), chunk.size()) == "late");
    writer.close();
    server.close();
    co_await server.wait_closed();

    co_await sockpat::wait_for(sockpat::yield_now(), 1s);
  }());
}

TEST_CASE("yield_now lets the other ready tasks run first") {
  sockpat::EventLoop loop;
  std::vector<int> order;
  loop.run_until_complete([&]() -> sockpat::Task<void> {
    sockpat::create_task([&]() -> sockpat::Task<void> {
      order.push_back(2);
      co_return;
    });
    // create_task started it at once; a second one queued behind a yield:
    auto other = [&]() -> sockpat::Task<void> {
      co_await sockpat::yield_now();
      order.push_back(4);
    };
    sockpat::create_task(other());
    order.push_back(1);
    co_await sockpat::yield_now();
    order.push_back(3);
    co_await sockpat::yield_now();
    order.push_back(5);
  }());
  CHECK(order == std::vector<int>{2, 1, 4, 3, 5});
}

namespace {
struct Counted {
  static inline std::atomic<int> made{0};
  static inline std::atomic<int> destroyed{0};
  Counted() { ++made; }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;
  ~Counted() { ++destroyed; }
};
}  // namespace

TEST_CASE("a per-thread object is made once per thread and destroyed when its thread ends") {
  const int made = Counted::made;
  const int destroyed = Counted::destroyed;
  std::thread t([] {
    auto& a = sockpat::detail::per_thread<Counted>();
    auto& b = sockpat::detail::per_thread<Counted>();
    CHECK(&a == &b);
  });
  t.join();
  CHECK(Counted::made == made + 1);
  CHECK(Counted::destroyed == destroyed + 1);
  // Coroutine frames on a thread of their own: the thread's frame cache goes with it.
  std::thread u([] { CHECK(sockpat::run(add(1, 2)) == 3); });
  u.join();
}
}

TEST_SUITE("task") {
TEST_CASE("wait_until returns the value in time, and past its time point cancels and throws timed_out" *
          doctest::timeout(10)) {
  CHECK(sockpat::run([]() -> sockpat::Task<int> {
          co_return co_await sockpat::wait_until(value(7), Clock::now() + 1s);
        }()) == 7);
  bool inner_cancelled = false;
  auto inner = [&]() -> sockpat::Task<void> {
    try {
      co_await sockpat::sleep(1h);
    } catch (const std::system_error& e) {
      inner_cancelled = e.code() == std::errc::operation_canceled;
      throw;
    }
  };
  const auto start = Clock::now();
  try {
    sockpat::run([&]() -> sockpat::Task<void> { co_await sockpat::wait_until(inner(), start + 40ms); }());
    FAIL("expected timed_out");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::timed_out);
    CHECK(std::string(e.what()).rfind("wait_until after ", 0) == 0);
  }
  CHECK(Clock::now() - start >= 40ms);
  CHECK(Clock::now() - start < 2s);
  CHECK(inner_cancelled);
  // Any awaitable, as wait_for: a sleep that outlasts the time point.
  CHECK_THROWS_WITH_AS(sockpat::run([]() -> sockpat::Task<void> {
                         co_await sockpat::wait_until(sockpat::sleep(1h), Clock::now() + 10ms);
                       }()),
                       doctest::Contains("wait_until"), std::system_error);
}

TEST_CASE("nested wait_fors: the error names the timeout of the one that ran out" * doctest::timeout(10)) {
  auto nested = [](std::chrono::milliseconds outer, std::chrono::milliseconds inner) {
    return [=]() -> sockpat::Task<void> {
      auto middle = [](std::chrono::milliseconds t) -> sockpat::Task<void> {
        co_await sockpat::wait_for(sockpat::sleep(1h), t);
      };
      co_await sockpat::wait_for(middle(inner), outer);
    };
  };
  // The inner one runs out first.
  CHECK_THROWS_WITH_AS(sockpat::run(nested(5000ms, 30ms)()), "wait_for 30 ms: Connection timed out", std::system_error);
  // The outer one runs out first: the inner one is cancelled, and the outer one names itself.
  CHECK_THROWS_WITH_AS(sockpat::run(nested(30ms, 5000ms)()), "wait_for 30 ms: Connection timed out", std::system_error);
  CHECK_THROWS_WITH_AS(sockpat::run(nested(40ms, 5000ms)()), "wait_for 40 ms: Connection timed out", std::system_error);
  CHECK_THROWS_WITH_AS(sockpat::run(nested(5000ms, 40ms)()), "wait_for 40 ms: Connection timed out", std::system_error);
}

TEST_CASE("a shield runs its work to the end in a cancelled task; the next co_await after it raises" *
          doctest::timeout(10)) {
  int during = 0;  // what a shield returned when the cancel came while it ran
  int after = 0;   // what a shield returned when it began in a task already cancelled
  std::vector<std::string> raised;
  sockpat::run([&]() -> sockpat::Task<void> {
    sockpat::Event waiting;
    auto cancelled_during = sockpat::create_task([&]() -> sockpat::Task<void> {
      waiting.set();
      during = co_await sockpat::shield(slow_value(7, 30ms), 5s);
      try {
        co_await sockpat::yield_now();
      } catch (const std::system_error& e) {
        if (is_canceled(e)) raised.emplace_back("after a cancel during the shield");
      }
    });
    co_await waiting.wait();
    cancelled_during.cancel();  // it is inside its shield: the cancel waits
    co_await sockpat::wait_for(cancelled_during, 5s);

    auto cancelled_before = sockpat::create_task([&]() -> sockpat::Task<void> {
      try {
        co_await sockpat::sleep(10s);
      } catch (const std::system_error& e) {
        if (is_canceled(e)) raised.emplace_back("the sleep");
      }
      try {
        co_await sockpat::sleep(0ms);  // a checkpoint, shielded or not: this one is not
      } catch (const std::system_error& e) {
        if (is_canceled(e)) raised.emplace_back("an unshielded sleep(0)");
      }
      after = co_await sockpat::shield(slow_value(8, 10ms), 5s);
      after += co_await sockpat::shield(value(1), 5s);
    });
    co_await sockpat::yield_now();
    cancelled_before.cancel();
    co_await sockpat::wait_for(cancelled_before, 5s);
  }());
  CHECK(during == 7);
  CHECK(after == 9);
  CHECK(raised == std::vector<std::string>{"after a cancel during the shield", "the sleep", "an unshielded sleep(0)"});
}

TEST_CASE("a shield is bounded by its own timeout: past it, its work is cancelled and it throws timed_out" *
          doctest::timeout(10)) {
  std::string error;
  bool work_cancelled = false;
  const auto start = Clock::now();
  sockpat::run([&]() -> sockpat::Task<void> {
    auto stuck = [&]() -> sockpat::Task<void> {
      try {
        co_await sockpat::sleep(10s);
      } catch (const std::system_error& e) {
        work_cancelled = is_canceled(e);
        throw;
      }
    };
    auto victim = sockpat::create_task([&]() -> sockpat::Task<void> {
      try {
        co_await sockpat::sleep(10s);
      } catch (const std::system_error&) {
      }
      try {
        co_await sockpat::shield(stuck(), 30ms);
      } catch (const std::system_error& e) {
        CHECK(e.code() == std::errc::timed_out);
        error = e.what();
      }
    });
    co_await sockpat::yield_now();
    victim.cancel();
    co_await sockpat::wait_for(victim, 5s);
  }());
  CHECK(work_cancelled);
  CHECK(error.rfind("shield 30 ms", 0) == 0);
  CHECK(Clock::now() - start < 5s);
}

TEST_CASE("a closing loop cancels a shield's work all the same" * doctest::timeout(10)) {
  bool work_cancelled = false;
  const auto start = Clock::now();
  {
    auto stuck = [&]() -> sockpat::Task<void> {  // declared first: it outlives the loop's shutdown
      try {
        co_await sockpat::sleep(10s);
      } catch (const std::system_error& e) {
        work_cancelled = is_canceled(e);
        throw;
      }
    };
    sockpat::EventLoop loop;
    loop.create_task([&]() -> sockpat::Task<void> { co_await sockpat::shield(stuck(), 10s); });
    loop.run_until_complete(one_turn());
  }  // the loop goes: its shutdown cancels the task and reaches into the shield
  CHECK(work_cancelled);
  CHECK(Clock::now() - start < 5s);
}
}

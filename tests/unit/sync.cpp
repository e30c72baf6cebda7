#include "sockpat/sync.hpp"

#include <doctest/doctest.h>

#include "support/loop.hpp"
#include "support/printing.hpp"

#include <algorithm>     // std::max
#include <chrono>        // std::chrono_literals
#include <coroutine>     // std::coroutine_handle: RecordingReactor
#include <memory>        // std::unique_ptr
#include <stdexcept>     // std::runtime_error
#include <string>        // std::string
#include <system_error>  // std::system_error
#include <thread>        // std::thread: call_soon_threadsafe from another thread
#include <utility>       // std::move
#include <vector>        // std::vector

#include "sockpat/error.hpp"
#include "sockpat/event_loop.hpp"
#include "sockpat/task.hpp"
#include "sockpat/task_group.hpp"  // TaskHandle

using namespace std::chrono_literals;

namespace {

sockpat::Task<void> brief_pause() { co_await sockpat::sleep(1ms); }

sockpat::Task<int> get_one(sockpat::Queue<int>& q) { co_return co_await q.get(); }
sockpat::Task<void> put_one(sockpat::Queue<int>& q, int i) { co_await q.put(i); }
bool is_closed(const std::system_error& e) { return e.code() == sockpat::errc::closed; }
bool is_canceled(const std::system_error& e) { return e.code() == std::errc::operation_canceled; }
sockpat::Task<int> answer() { co_return 42; }

// A reactor that only records what it is asked to resume: the test decides that a coroutine
// handed a permit or an item never runs, and destroys its task instead, as a closing loop
// destroys the tasks that would not end.
struct RecordingReactor final : sockpat::detail::Reactor {
  std::vector<std::coroutine_handle<>> scheduled;
  RecordingReactor() {
    scheduled.reserve(16);
    sockpat::detail::thread_reactor() = this;
  }
  RecordingReactor(const RecordingReactor&) = delete;
  RecordingReactor& operator=(const RecordingReactor&) = delete;
  ~RecordingReactor() { sockpat::detail::thread_reactor() = nullptr; }
  std::error_code wait_io(sockpat::detail::native_handle, sockpat::detail::Direction,
                          sockpat::detail::Pending*) noexcept override {
    return std::make_error_code(std::errc::operation_not_supported);
  }
  void unwait_io(sockpat::detail::native_handle, sockpat::detail::Direction, sockpat::detail::Pending*) noexcept override {}
  void add_timer(sockpat::detail::Pending*) noexcept override {}
  void remove_timer(sockpat::detail::Pending*) noexcept override {}
  void add_stoppable(sockpat::detail::Pending*) noexcept override {}
  void remove_stoppable(sockpat::detail::Pending*) noexcept override {}
  void notify_stop() noexcept override {}
  void schedule(std::coroutine_handle<> h) noexcept override { scheduled.push_back(h); }
  void handle_closing(sockpat::detail::native_handle, bool) noexcept override {}
};

}  // namespace

TEST_SUITE("sync") {
TEST_CASE("Event: wait returns once set, every waiter wakes, and a set event does not suspend" *
          doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Event event;
    int woke = 0;
    auto waiter = [&]() -> sockpat::Task<void> {
      co_await event.wait();
      ++woke;
    };
    auto setter = [&]() -> sockpat::Task<void> {
      co_await sockpat::sleep(1ms);
      CHECK(woke == 0);
      event.set();
    };
    std::vector<sockpat::Task<void>> tasks;
    for (int i = 0; i < 3; ++i) tasks.push_back(waiter());
    tasks.push_back(setter());
    co_await sockpat::gather(std::move(tasks));
    CHECK(woke == 3);
    CHECK(event.is_set());
    co_await event.wait();  // set: returns at once
    event.clear();
    CHECK_FALSE(event.is_set());
  });
}

TEST_CASE("Event: a wait under wait_for times out, and leaves no waiter behind" * doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Event event;
    auto wait = [&]() -> sockpat::Task<void> { co_await event.wait(); };
    CHECK_THROWS_AS(co_await sockpat::wait_for(wait(), 20ms), std::system_error);
    event.set();  // would resume a destroyed frame if the cancelled waiter were still listed
    co_await sockpat::sleep(1ms);
  });
}

TEST_CASE("Semaphore: at most N holders at once, and waiters are served in order" * doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Semaphore sem(2);
    int inside = 0;
    int most = 0;
    std::vector<int> order;
    auto worker = [&](int id) -> sockpat::Task<void> {
      auto permit = co_await sem.acquire();
      order.push_back(id);
      ++inside;
      most = std::max(most, inside);
      co_await sockpat::sleep(2ms);
      --inside;
    };
    std::vector<sockpat::Task<void>> tasks;
    for (int i = 0; i < 6; ++i) tasks.push_back(worker(i));
    co_await sockpat::gather(std::move(tasks));
    CHECK(most == 2);
    CHECK(order == std::vector<int>{0, 1, 2, 3, 4, 5});
    CHECK(sem.available() == 2);
    CHECK(sem.try_acquire());
    CHECK(sem.try_acquire());
    CHECK_FALSE(sem.try_acquire());
  });
}

TEST_CASE("Semaphore: a permit is given back when it goes out of scope, on an exception, and once when moved" *
          doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Semaphore sem(2);
    {
      auto permit = co_await sem.acquire();
      CHECK(permit);
      CHECK(sem.available() == 1);
    }
    CHECK(sem.available() == 2);

    auto fail_holding = [&]() -> sockpat::Task<void> {
      auto permit = co_await sem.acquire();
      CHECK(sem.available() == 1);
      co_await sockpat::sleep(1ms);
      throw std::runtime_error("while holding");
    };
    CHECK_THROWS_AS(co_await fail_holding(), std::runtime_error);
    CHECK(sem.available() == 2);

    auto first = co_await sem.acquire();
    sockpat::Semaphore::Permit moved(std::move(first));
    CHECK_FALSE(first);  // NOLINT(bugprone-use-after-move): the moved-from permit holds none
    CHECK(moved);
    CHECK(sem.available() == 1);
    auto second = co_await sem.acquire();
    CHECK(sem.available() == 0);
    second = std::move(moved);  // second's own permit goes back; it now holds moved's
    CHECK(sem.available() == 1);
    second.release();
    second.release();  // once only
    CHECK(sem.available() == 2);
    first = sockpat::Semaphore::Permit();
    CHECK(sem.available() == 2);

    // A waiter served by a permit's destruction: the permit goes straight to it.
    auto held = co_await sem.acquire();
    auto held2 = co_await sem.acquire();
    bool got = false;
    auto waiter = sockpat::create_task([&]() -> sockpat::Task<void> {
      auto permit = co_await sem.acquire();
      got = true;
    });
    co_await sockpat::yield_now();
    CHECK_FALSE(got);
    { auto gone = std::move(held); }
    co_await waiter;
    CHECK(got);
    CHECK(sem.available() == 1);
  });
}

TEST_CASE("Semaphore: a cancelled acquire takes no permit" * doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Semaphore sem(0);
    auto take = [&]() -> sockpat::Task<void> { auto permit = co_await sem.acquire(); };
    CHECK_THROWS_AS(co_await sockpat::wait_for(take(), 10ms), std::system_error);
    sem.release();
    CHECK(sem.available() == 1);
  });
}

TEST_CASE("a permit or an item handed to a task that is destroyed before it resumes goes back, not lost") {
  const RecordingReactor reactor;
  int resumed = 0;
  {
    sockpat::Semaphore sem(0);
    auto take = [&]() -> sockpat::Task<void> {
      auto permit = co_await sem.acquire();
      ++resumed;
    };
    auto a = take();
    auto b = take();
    a.handle().resume();  // both wait
    b.handle().resume();
    sem.release();  // handed straight to a
    CHECK(sem.available() == 0);
    CHECK(reactor.scheduled.size() == 1);
    a = {};  // destroyed before it resumed: the permit goes on, to b, the next waiter
    CHECK(sem.available() == 0);
    CHECK(reactor.scheduled.size() == 2);
    b = {};  // and back to the semaphore
    CHECK(sem.available() == 1);

    // The semaphore goes first: the task handed a permit no longer refers to it.
    auto c = std::make_unique<sockpat::Semaphore>(0);
    auto take_from = [](sockpat::Semaphore& s) -> sockpat::Task<void> { auto permit = co_await s.acquire(); };
    auto d = take_from(*c);
    d.handle().resume();
    c->release();
    c.reset();
    d = {};
  }
  {
    sockpat::Queue<std::string> queue(2);
    auto take = [&]() -> sockpat::Task<void> {
      auto item = co_await queue.get();
      ++resumed;
    };
    auto a = take();
    auto b = take();
    a.handle().resume();
    b.handle().resume();
    CHECK(queue.try_put(std::string(40, '1')));  // handed to a
    CHECK(queue.try_put(std::string(40, '2')));  // handed to b
    CHECK(queue.try_put(std::string(40, '3')));  // buffered
    CHECK(queue.size() == 1);
    b = {};  // its item goes back to the head
    a = {};  // and this one, the oldest, ahead of it
    CHECK(queue.size() == 3);
    CHECK(queue.try_get() == std::string(40, '1'));
    CHECK(queue.try_get() == std::string(40, '2'));
    CHECK(queue.try_get() == std::string(40, '3'));

    // A waiting getter is handed a given-back item at once.
    auto e = take();
    auto f = take();
    e.handle().resume();
    f.handle().resume();
    CHECK(queue.try_put(std::string(40, '4')));  // handed to e
    e = {};  // given to f, which waits
    CHECK(queue.empty());
    f = {};
    CHECK(queue.try_get() == std::string(40, '4'));

    // The queue goes first: the task handed an item keeps it and no longer refers to the queue.
    auto q = std::make_unique<sockpat::Queue<std::string>>(1);
    auto take_from = [](sockpat::Queue<std::string>& from) -> sockpat::Task<void> { auto item = co_await from.get(); };
    auto g = take_from(*q);
    g.handle().resume();
    CHECK(q->try_put(std::string(40, '5')));
    q.reset();
    g = {};
  }
  CHECK(resumed == 0);
}

TEST_CASE("Queue: items come out in order, put waits while full, get while empty" * doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Queue<int> q(3);
    int max_size = 0;
    auto producer = [&]() -> sockpat::Task<void> {
      for (int i = 0; i < 100; ++i) {
        co_await q.put(i);
        max_size = std::max(max_size, static_cast<int>(q.size()));
      }
      q.close();
    };
    std::vector<int> got;
    auto consumer = [&]() -> sockpat::Task<void> {
      for (;;) {
        try {
          got.push_back(co_await q.get());
        } catch (const std::system_error& e) {
          CHECK(is_closed(e));
          co_return;
        }
        if (got.size() % 7 == 0) co_await sockpat::sleep(0ms);  // let the queue fill up
      }
    };
    std::vector<sockpat::Task<void>> tasks;
    tasks.push_back(consumer());
    tasks.push_back(producer());
    co_await sockpat::gather(std::move(tasks));
    REQUIRE(got.size() == 100);
    for (int i = 0; i < 100; ++i) CHECK(got[static_cast<std::size_t>(i)] == i);
    CHECK(max_size <= 3);
    CHECK(max_size == 3);  // the consumer's pauses did let it fill
  });
}

TEST_CASE("Queue: try_put and try_get never wait, and a refused item is left to the caller") {
  sockpat::EventLoop loop;
  sockpat::Queue<std::unique_ptr<int>> q(1);
  CHECK_FALSE(q.try_get().has_value());
  CHECK(q.try_put(std::make_unique<int>(1)));
  auto second = std::make_unique<int>(2);
  CHECK_FALSE(q.try_put(std::move(second)));
  REQUIRE(second != nullptr);  // refused: not moved from
  CHECK(*second == 2);
  auto first = q.try_get();
  REQUIRE(first.has_value());
  CHECK(**first == 1);
  CHECK(q.empty());
  CHECK_THROWS_AS(sockpat::Queue<int>(0), std::invalid_argument);
}

TEST_CASE("Queue: close wakes every waiting putter and getter with errc::closed; get drains first" *
          doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Queue<std::string> full(1);
    CHECK(full.try_put("kept"));
    int closed_puts = 0;
    auto putter = [&]() -> sockpat::Task<void> {
      try {
        co_await full.put("never");
      } catch (const std::system_error& e) {
        if (is_closed(e)) ++closed_puts;
      }
    };
    sockpat::Queue<int> empty(4);
    int closed_gets = 0;
    auto getter = [&]() -> sockpat::Task<void> {
      try {
        (void)co_await empty.get();
      } catch (const std::system_error& e) {
        if (is_closed(e)) ++closed_gets;
      }
    };
    auto closer = [&]() -> sockpat::Task<void> {
      co_await sockpat::sleep(1ms);
      full.close();
      empty.close();
    };
    std::vector<sockpat::Task<void>> tasks;
    tasks.push_back(putter());
    tasks.push_back(putter());
    tasks.push_back(getter());
    tasks.push_back(getter());
    tasks.push_back(closer());
    co_await sockpat::gather(std::move(tasks));
    CHECK(closed_puts == 2);
    CHECK(closed_gets == 2);
    CHECK(co_await full.get() == "kept");  // what was queued before close is still delivered
    CHECK_THROWS_AS(co_await full.get(), std::system_error);
    CHECK_FALSE(full.try_put("late"));
  });
}

TEST_CASE("Queue: a cancelled put has not queued its item, a cancelled get took none" * doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Queue<int> q(1);
    CHECK(q.try_put(1));
    auto put = [&]() -> sockpat::Task<void> { co_await q.put(2); };
    try {
      co_await sockpat::wait_for(put(), 10ms);
      FAIL("the put should have timed out");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::timed_out);
    }
    CHECK(q.size() == 1);
    CHECK(co_await q.get() == 1);
    CHECK(q.empty());

    auto get = [&]() -> sockpat::Task<int> { co_return co_await q.get(); };
    CHECK_THROWS_AS(co_await sockpat::wait_for(get(), 10ms), std::system_error);
    CHECK(q.try_put(3));  // no cancelled getter is handed the item
    CHECK(q.size() == 1);
  });
}

TEST_CASE("Queue: a waiting get ends with operation_canceled when its loop goes") {
  sockpat::Queue<int> q(1);  // outlives the loop: the cancelled waiter unlinks itself from it
  bool canceled = false;
  {
    sockpat::EventLoop loop;
    loop.create_task([](sockpat::Queue<int>& queue, bool& flag) -> sockpat::Task<void> {
      try {
        (void)co_await queue.get();
      } catch (const std::system_error& e) {
        flag = is_canceled(e);
      }
    }(q, canceled));
    loop.run_until_complete(brief_pause());
    CHECK_FALSE(canceled);
  }
  CHECK(canceled);
  CHECK(q.try_put(1));  // no stale getter is handed the item
  CHECK(q.size() == 1);
}

TEST_CASE("Queue: another thread feeds it through call_soon_threadsafe, in order" * doctest::timeout(10)) {
  sockpat::EventLoop loop;
  sockpat::Queue<int> q(4);
  std::thread feeder([&] {
    for (int i = 0; i < 50; ++i) {
      // A put per item, started on the loop: putters wait their turn while the queue is full.
      loop.call_soon_threadsafe([&q, &loop, i] { loop.create_task(put_one(q, i)); });
    }
    loop.call_soon_threadsafe([&q, &loop] { loop.create_task(put_one(q, -1)); });  // the end
  });
  const auto got = loop.run_until_complete([](sockpat::Queue<int>& queue) -> sockpat::Task<std::vector<int>> {
    std::vector<int> out;
    for (;;) {
      const int item = co_await sockpat::wait_for(get_one(queue), 10s);
      if (item < 0) co_return out;
      out.push_back(item);
    }
  }(q));
  feeder.join();
  REQUIRE(got.size() == 50);
  for (int i = 0; i < 50; ++i) CHECK(got[static_cast<std::size_t>(i)] == i);
}

TEST_CASE("once a task is cancelled, every awaited call raises operation_canceled, whether or not it would suspend" *
          doctest::timeout(10)) {
  sockpat::Event never;
  sockpat::Event set;
  set.set();
  sockpat::Semaphore sem(1);
  sockpat::Queue<int> items(4);
  REQUIRE(items.try_put(7));
  sockpat::Queue<int> room(4);
  std::string raised;  // the calls that raised operation_canceled
  std::string passed;  // the calls that went through
  bool cancelled_while_waiting = false;
  std::error_code as_result_error;
  test::run_bounded([&]() -> sockpat::Task<void> {
    auto done = sockpat::create_task(answer());
    auto victim = sockpat::create_task([&]() -> sockpat::Task<void> {
      try {
        co_await never.wait();
      } catch (const std::system_error& e) {
        cancelled_while_waiting = is_canceled(e);
      }
#define SOCKPAT_ATTEMPT(name, ...)                 \
  try {                                            \
    __VA_ARGS__;                                   \
    passed += name "; ";                           \
  } catch (const std::system_error& e) {           \
    (is_canceled(e) ? raised : passed) += name "; "; \
  }
      // Each of these is ready: none would suspend.
      SOCKPAT_ATTEMPT("Event wait", co_await set.wait())
      SOCKPAT_ATTEMPT("Semaphore acquire", auto permit = co_await sem.acquire(); permit.release())
      SOCKPAT_ATTEMPT("Queue get", (void)co_await items.get())
      SOCKPAT_ATTEMPT("Queue put", co_await room.put(1))
      SOCKPAT_ATTEMPT("sleep(0)", co_await sockpat::sleep(0ms))
      SOCKPAT_ATTEMPT("yield_now", co_await sockpat::yield_now())
      SOCKPAT_ATTEMPT("a Task", (void)co_await answer())
      SOCKPAT_ATTEMPT("a finished TaskHandle", (void)co_await done)
      SOCKPAT_ATTEMPT("gather", (void)co_await sockpat::gather(answer(), answer()))
      SOCKPAT_ATTEMPT("wait_for", (void)co_await sockpat::wait_for(answer(), 1s))
#undef SOCKPAT_ATTEMPT
      // as_result, the non-throwing form, returns the cancellation as its error.
      as_result_error = (co_await sockpat::as_result(set.wait())).error();
    });
    co_await sockpat::yield_now();  // the victim waits on `never`
    victim.cancel();
    co_await sockpat::wait_for(victim, 5s);
  });
  CHECK(cancelled_while_waiting);
  CHECK(as_result_error == std::errc::operation_canceled);
  CHECK(passed == "");
  CHECK(raised ==
        "Event wait; Semaphore acquire; Queue get; Queue put; sleep(0); yield_now; a Task; a finished TaskHandle; "
        "gather; wait_for; ");
  // Raising, they took nothing and gave nothing.
  CHECK(sem.available() == 1);
  CHECK(items.size() == 1);
  CHECK(room.empty());
}
}

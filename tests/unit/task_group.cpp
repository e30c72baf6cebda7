#include "sockpat/task_group.hpp"

#include <doctest/doctest.h>

#include "support/loop.hpp"
#include "support/printing.hpp"

#include <algorithm>     // std::sort
#include <chrono>        // std::chrono_literals
#include <cstddef>       // std::size_t
#include <exception>     // std::rethrow_exception
#include <memory>        // std::make_unique
#include <stdexcept>     // std::runtime_error
#include <string>        // std::string
#include <system_error>  // std::system_error
#include <type_traits>   // std::is_same_v
#include <variant>       // std::variant, std::monostate: when_any of different types
#include <vector>        // std::vector

#include "sockpat/event_loop.hpp"
#include "sockpat/streams.hpp"  // start_server, open_connection: the guide's fan-out snippet
#include "sockpat/sync.hpp"
#include "sockpat/task.hpp"

using namespace std::chrono_literals;

namespace {

// Counts, on destruction, that a task's frame has released what it held.
struct Held {
  int& released;
  explicit Held(int& r) noexcept : released(r) {}
  Held(const Held&) = delete;
  Held& operator=(const Held&) = delete;
  ~Held() { ++released; }
};

// Waits on an event no one sets: it ends only by being cancelled.
sockpat::Task<void> wait_forever(sockpat::Event& never, int& cancelled, int& released) {
  const Held held(released);
  try {
    co_await never.wait();
  } catch (const std::system_error& e) {
    if (e.code() == std::errc::operation_canceled) ++cancelled;
    throw;
  }
}

sockpat::Task<int> fail_after(std::chrono::milliseconds d, const char* why) {
  co_await sockpat::sleep(d);
  throw std::runtime_error(why);
}

sockpat::Task<int> value_after(std::chrono::milliseconds d, int v) {
  co_await sockpat::sleep(d);
  co_return v;
}

sockpat::Task<std::string> text_after(std::chrono::milliseconds d, std::string s) {
  co_await sockpat::sleep(d);
  co_return s;
}

}  // namespace

TEST_SUITE("task_group") {
TEST_CASE("a child's failure cancels its siblings, with_task_group rethrows it, and no task is left" *
          doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Event never;
    int cancelled = 0;
    int released = 0;
    CHECK_THROWS_WITH_AS(co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
      auto sibling = group.create_task(wait_forever(never, cancelled, released));
      for (int i = 0; i < 2; ++i) group.create_task(wait_forever(never, cancelled, released));
      group.create_task(fail_after(2ms, "child failed"));
      CHECK(group.size() == 4);
      CHECK_THROWS_AS(co_await sibling, std::system_error);  // cancelled by the failure
      CHECK(group.cancelled());
      CHECK(group.failures().size() == 1);  // the siblings' cancellations are not failures
    }),
                         "child failed", std::runtime_error);
    CHECK(cancelled == 3);
    CHECK(released == 3);
  });
}

TEST_CASE("every failure is kept; with_task_group rethrows the first" * doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    CHECK_THROWS_WITH_AS(co_await sockpat::with_task_group([](sockpat::TaskGroup& group) -> sockpat::Task<void> {
      // Both fail as they start, before the first failure's cancel can reach the second.
      group.create_task([]() -> sockpat::Task<void> { throw std::runtime_error("first"); co_return; }());
      group.create_task([]() -> sockpat::Task<void> { throw std::runtime_error("second"); co_return; }());
      REQUIRE(group.failures().size() == 2);
      CHECK_THROWS_WITH_AS(std::rethrow_exception(group.failures()[1]), "second", std::runtime_error);
      co_return;
    }),
                         "first", std::runtime_error);
  });
}

TEST_CASE("spawn returns a handle to await for the result, and a group that succeeds joins quietly" *
          doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::TaskHandle<int> kept;
    co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
      auto a = group.create_task(value_after(3ms, 1));
      auto b = group.create_task(value_after(1ms, 2));
      kept = group.create_task(value_after(2ms, 3));
      CHECK_FALSE(a.done());
      CHECK(co_await b == 2);
      CHECK(co_await a == 1);
      CHECK(a.done());
      CHECK(group.failures().empty());
    });
    CHECK(kept.done());
    CHECK(co_await kept == 3);  // a handle outlives its group
  });
}

TEST_CASE("cancelling a handle ends that task with operation_canceled, and is not a group failure" *
          doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Event never;
    int cancelled = 0;
    int released = 0;
    sockpat::TaskHandle<int> other;
    co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
      auto h = group.create_task(wait_forever(never, cancelled, released));
      other = group.create_task(value_after(2ms, 7));
      co_await sockpat::sleep(1ms);
      h.cancel();
      try {
        co_await h;
        FAIL("a cancelled task's handle should rethrow operation_canceled");
      } catch (const std::system_error& e) {
        CHECK(e.code() == std::errc::operation_canceled);
      }
      CHECK_FALSE(group.cancelled());
    });  // does not throw
    CHECK(co_await other == 7);  // the sibling was not cancelled
    CHECK(cancelled == 1);
    CHECK(released == 1);
  });
}

TEST_CASE("wait_for on a group: the timed-out children are cancelled and have ended when it throws" *
          doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Event never;
    int cancelled = 0;
    int released = 0;
    auto scope = [&]() -> sockpat::Task<void> {
      co_await sockpat::with_task_group([&](sockpat::TaskGroup& g) -> sockpat::Task<void> {
        for (int i = 0; i < 5; ++i) g.create_task(wait_forever(never, cancelled, released));
        co_return;
      });
    };
    try {
      co_await sockpat::wait_for(scope(), 20ms);
      FAIL("the group should have timed out");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::timed_out);
    }
    CHECK(cancelled == 5);
    CHECK(released == 5);
  });
}

TEST_CASE("with_task_group: an exception from the body cancels the children and is rethrown after them" *
          doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Event never;
    int cancelled = 0;
    int released = 0;
    CHECK_THROWS_WITH_AS(co_await sockpat::with_task_group([&](sockpat::TaskGroup& g) -> sockpat::Task<void> {
      g.create_task(wait_forever(never, cancelled, released));
      g.create_task(wait_forever(never, cancelled, released));
      co_await sockpat::sleep(1ms);
      throw std::runtime_error("body failed");
    }),
                         "body failed", std::runtime_error);
    CHECK(released == 2);
    CHECK(cancelled == 2);
  });
}

TEST_CASE("gather_settled returns every outcome in order, and a failure cancels nothing" * doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    std::vector<sockpat::Task<int>> tasks;
    tasks.push_back(value_after(3ms, 1));
    tasks.push_back(fail_after(1ms, "middle"));
    tasks.push_back(value_after(5ms, 3));
    auto out = co_await sockpat::gather_settled(std::move(tasks));
    REQUIRE(out.size() == 3);
    CHECK(out[0].ok());
    CHECK(out[0].get() == 1);
    CHECK_FALSE(out[1].ok());
    CHECK_THROWS_WITH_AS(out[1].get(), "middle", std::runtime_error);
    CHECK(out[2].get() == 3);  // ran to its end after the failure
  });
}

TEST_CASE("when_any: the first to finish wins, the others are cancelled and have ended" * doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Event never;
    int cancelled = 0;
    int released = 0;
    auto slow = [&]() -> sockpat::Task<int> {
      co_await wait_forever(never, cancelled, released);
      co_return -1;
    };
    std::vector<sockpat::Task<int>> tasks;
    tasks.push_back(slow());
    tasks.push_back(value_after(2ms, 42));
    tasks.push_back(slow());
    auto [index, outcome] = co_await sockpat::when_any(std::move(tasks));
    CHECK(index == 1);
    CHECK(outcome.get() == 42);
    CHECK(cancelled == 2);
    CHECK(released == 2);

    std::vector<sockpat::Task<int>> failing;
    failing.push_back(fail_after(1ms, "first to end"));
    failing.push_back(value_after(50ms, 1));
    auto [i2, o2] = co_await sockpat::when_any(std::move(failing));
    CHECK(i2 == 0);
    CHECK_THROWS_WITH_AS(o2.get(), "first to end", std::runtime_error);
  });
}

TEST_CASE("with_task_group: the children of a body that throws have ended, their frames' cleanup run, before the caller "
          "resumes" * doctest::timeout(10)) {
  // Cleanup that reads the caller's state: were a child still unwinding when the caller went on
  // and let that state go, ASan would name the read.
  struct Trail {
    std::vector<std::string>& log;
    const std::string& owned;
    const char* who;
    ~Trail() { log.push_back(owned + who + " cleaned up"); }
  };
  std::vector<std::string> log;
  test::run_bounded([&]() -> sockpat::Task<void> {
    sockpat::Event never;
    {
      const auto owned = std::make_unique<std::string>(40, 'c');  // the caller's, on the heap
      try {
        co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
          group.create_task([&]() -> sockpat::Task<void> {
            const Trail trail{log, *owned, ""};
            try {
              co_await never.wait();
            } catch (const std::system_error& e) {
              log.push_back(e.code() == std::errc::operation_canceled ? "child cancelled" : "child failed");
            }
          });
          // A grandchild in a group of a child's own: the cancel reaches it too, and it ends first.
          group.create_task([&]() -> sockpat::Task<void> {
            co_await sockpat::with_task_group([&](sockpat::TaskGroup& inner) -> sockpat::Task<void> {
              inner.create_task([&]() -> sockpat::Task<void> {
                const Trail trail{log, *owned, "'s grandchild"};
                co_await never.wait();
              });
              co_return;
            });
          });
          CHECK(group.size() == 2);
          co_await sockpat::yield_now();
          throw std::runtime_error("body failed");
        });
        FAIL("with_task_group should rethrow the body's exception");
      } catch (const std::runtime_error& e) {
        log.push_back(e.what());
      }
      // The caller's state goes here: no child may be left to touch it.
    }
    co_await sockpat::sleep(1ms);  // a child still running would run now
  });
  // Every child's end came before the caller's resumption; the children's order is the group's.
  REQUIRE(log.size() == 4);
  CHECK(log.back() == "body failed");
  std::sort(log.begin(), log.end() - 1);
  const std::string c(40, 'c');
  CHECK(log == std::vector<std::string>{c + " cleaned up", c + "'s grandchild cleaned up", "child cancelled", "body failed"});
}

TEST_CASE("EventLoop::create_task returns a handle: await it for the value, or cancel it" * doctest::timeout(10)) {
  sockpat::Event never;
  int cancelled = 0;
  int released = 0;
  sockpat::EventLoop loop;
  auto forever = loop.create_task(wait_forever(never, cancelled, released));
  auto value = sockpat::create_task(value_after(1ms, 5));  // the free function: the running loop's
  CHECK(loop.spawned_tasks() == 2);
  loop.run_until_complete([&]() -> sockpat::Task<void> {
    CHECK(co_await value == 5);
    forever.cancel();
    CHECK_THROWS_AS(co_await forever, std::system_error);
  }());
  CHECK(forever.done());
  CHECK(loop.spawned_tasks() == 0);
  CHECK(cancelled == 1);
  CHECK(released == 1);
}

TEST_CASE("create_task(callable, args...) keeps a capturing lambda and its arguments alive while the task runs" *
          doctest::timeout(10)) {
  std::vector<std::string> seen;
  std::size_t spawned = 0;
  test::run_bounded([&]() -> sockpat::Task<void> {
    co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
      for (int i = 0; i < 4; ++i) {
        // Heap-held strings: a capture read from a freed lambda would not compare equal (and
        // ASan names the read).
        std::string name(40, static_cast<char>('a' + i));
        group.create_task(
            [name, i, &seen](int extra, const std::string& suffix) -> sockpat::Task<void> {
              co_await sockpat::sleep(1ms);  // the caller's lambda temporary is gone by now
              co_await sockpat::yield_now();
              seen.push_back(name + suffix + std::to_string(i + extra));
            },
            10, std::string(30, '/'));
      }
      co_return;
    });
    // The loop's and the free create_task, with a value.
    auto on_loop = sockpat::get_running_loop().create_task([big = std::string(64, 'x')]() -> sockpat::Task<std::size_t> {
      co_await sockpat::sleep(1ms);
      co_return big.size();
    });
    auto free = sockpat::create_task(
        [](std::vector<int> v) -> sockpat::Task<int> {
          co_await sockpat::yield_now();
          co_return v.at(2);
        },
        std::vector<int>{1, 2, 3});
    spawned = sockpat::get_running_loop().spawned_tasks();
    CHECK(co_await on_loop == 64);
    CHECK(co_await free == 3);
  });
  REQUIRE(seen.size() == 4);
  std::sort(seen.begin(), seen.end());
  for (int i = 0; i < 4; ++i) {
    CHECK(seen[static_cast<std::size_t>(i)] ==
          std::string(40, static_cast<char>('a' + i)) + std::string(30, '/') + std::to_string(i + 10));
  }
  CHECK(spawned == 2);
}

// docs/guides/async-streams.md, "Task groups, queues and events": the fan-out snippet, run as
// a server's handler against a real client over loopback.
TEST_CASE("the guide's fan-out snippet serves a client: every line comes back, in order" * doctest::timeout(30)) {
  std::vector<std::string> echoed;
  test::run_bounded([&]() -> sockpat::Task<void> {
    auto handler = [](sockpat::StreamReader reader, sockpat::StreamWriter writer) -> sockpat::Task<void> {
      // --- the snippet ---
      sockpat::Queue<std::string> outbox(256);
      co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
        group.create_task([&]() -> sockpat::Task<void> {  // the writer: one per client
          try {
            for (;;) co_await writer.write(co_await outbox.get());
          } catch (const std::system_error&) {  // errc::closed: the client left
          }
        });
        while (auto line = co_await reader.read_line()) {
          if (!outbox.try_put(*line)) break;  // full: a client that does not read
        }
        outbox.close();
      });
      // --- end of the snippet ---
      co_await writer.drain();
      writer.close();
    };
    auto server = co_await sockpat::start_server(handler, "127.0.0.1", 0);
    auto [reader, writer] = co_await sockpat::open_connection("127.0.0.1", server.local_endpoint().port(), 5s);
    for (int i = 0; i < 50; ++i) co_await writer.write("line " + std::to_string(i) + "\n");
    writer.write_eof();
    while (auto line = co_await reader.read_line()) echoed.push_back(*line);
    server.close();
    co_await server.wait_closed();
  });
  REQUIRE(echoed.size() == 50);
  for (int i = 0; i < 50; ++i) CHECK(echoed[static_cast<std::size_t>(i)] == "line " + std::to_string(i) + "\n");
}

TEST_CASE("at shutdown the loop reaches the tasks of a group whose owner will not end, and destroys them" *
          doctest::timeout(30)) {
  int released = 0;
  int cancelled = 0;
  long spins = 0;
  sockpat::Event never;  // outlives the loop: no waiter of a destroyed task may stay in it
  {
    sockpat::EventLoop loop;
    loop.create_task([&]() -> sockpat::Task<void> {
      co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
        // Only its group's cancel reaches this child: the loop does not know it.
        group.create_task(wait_forever(never, cancelled, released));
        group.create_task(wait_forever(never, cancelled, released));
        // The body will not end: it catches every cancellation (up to a bound) and waits again.
        for (; spins < 1000000; ++spins) {
          try {
            co_await sockpat::sleep(1h);
          } catch (const std::system_error&) {
          }
        }
      });
    });
    loop.run_until_complete([]() -> sockpat::Task<void> { co_await sockpat::sleep(1ms); }());
  }
  CHECK(spins < 1000000);
  CHECK(released == 2);  // the children's frames were destroyed, not left suspended forever
  never.set();
}
TEST_CASE("when_any of different types: the first to end says which it was and gives its value; the others are "
          "cancelled and have ended" * doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Event never;
    int cancelled = 0;
    int released = 0;
    auto slow_text = [&]() -> sockpat::Task<std::string> {
      co_await wait_forever(never, cancelled, released);
      co_return "never";
    };
    // A task, an awaitable that moves (an Event's wait) and a task of void, side by side.
    auto first = co_await sockpat::when_any(slow_text(), value_after(2ms, 42), never.wait(),
                                            wait_forever(never, cancelled, released));
    static_assert(std::is_same_v<decltype(first), std::variant<std::string, int, std::monostate, std::monostate>>);
    CHECK(first.index() == 1);
    CHECK(std::get<1>(first) == 42);
    CHECK(cancelled == 2);  // both waits that were in a task of ours: the losers were cancelled
    CHECK(released == 2);   // and had ended when when_any returned

    // void maps to std::monostate; tasks of one type still say which one won.
    auto slept = co_await sockpat::when_any(sockpat::sleep(1ms), text_after(1h, "late"));
    CHECK(slept.index() == 0);
    auto second = co_await sockpat::when_any(value_after(50ms, 1), value_after(1ms, 2));
    CHECK(second.index() == 1);
    CHECK(std::get<1>(second) == 2);
  });
}

TEST_CASE("when_any of different types rethrows the failure of the first to end, after the others have ended" *
          doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Event never;
    int cancelled = 0;
    int released = 0;
    CHECK_THROWS_WITH_AS(
        (void)co_await sockpat::when_any(text_after(1h, "late"), fail_after(1ms, "first to end"),
                                         wait_forever(never, cancelled, released)),
        "first to end", std::runtime_error);
    CHECK(cancelled == 1);
    CHECK(released == 1);
    // A loser that fails while it is cancelled does not replace the winner.
    auto bad_loser = []() -> sockpat::Task<int> {
      try {
        co_await sockpat::sleep(1h);
      } catch (const std::system_error&) {
      }
      throw std::runtime_error("loser failed while unwinding");
    };
    auto won = co_await sockpat::when_any(bad_loser(), text_after(1ms, "winner"));
    CHECK(won.index() == 1);
    CHECK(std::get<1>(won) == "winner");
  });
}

TEST_CASE("when_any of different types, cancelled itself, cancels every task and throws operation_canceled" *
          doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::Event never;
    int cancelled = 0;
    int released = 0;
    auto race = [&]() -> sockpat::Task<void> {
      (void)co_await sockpat::when_any(wait_forever(never, cancelled, released), text_after(1h, "late"),
                                       wait_forever(never, cancelled, released));
    };
    CHECK_THROWS_WITH_AS(co_await sockpat::wait_for(race(), 5ms), doctest::Contains("wait_for 5 ms"),
                         std::system_error);
    CHECK(cancelled == 2);
    CHECK(released == 2);
  });
}

TEST_CASE("gather, gather_settled and when_any take a brace list of tasks of one type" * doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    // Named first: GCC 11 and 12 reject any braced list inside a co_await expression ("array
    // used as initializer", a compiler bug; `co_await f(std::vector<int>{1, 2})` too).
    auto gathered = sockpat::gather({value_after(3ms, 1), value_after(1ms, 2), value_after(2ms, 3)});
    const std::vector<int> all = co_await std::move(gathered);
    CHECK(all == std::vector<int>{1, 2, 3});
    auto settling = sockpat::gather_settled({value_after(2ms, 1), fail_after(1ms, "middle")});
    auto settled = co_await std::move(settling);
    REQUIRE(settled.size() == 2);
    CHECK(settled[0].get() == 1);
    CHECK_THROWS_WITH_AS(settled[1].get(), "middle", std::runtime_error);
    auto racing = sockpat::when_any({value_after(1h, 1), value_after(1ms, 2)});
    auto [index, outcome] = co_await std::move(racing);
    CHECK(index == 1);
    CHECK(outcome.get() == 2);
#if defined(__clang__)
    // The spelling a user writes first, where the compiler takes it.
    CHECK(co_await sockpat::gather({value_after(2ms, 4), value_after(1ms, 5)}) == std::vector<int>{4, 5});
    CHECK((co_await sockpat::when_any({value_after(1h, 1), value_after(1ms, 2)})).first == 1);
#endif
  });
}

TEST_CASE("wait with a timeout keeps what ended: done and pending handles, the pending ones still running" *
          doctest::timeout(10)) {
  std::vector<int> later;
  test::run_bounded([&]() -> sockpat::Task<void> {
    sockpat::Event never;
    int cancelled = 0;
    int released = 0;
    co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
      std::vector<sockpat::TaskHandle<int>> tasks;
      tasks.push_back(group.create_task(value_after(1ms, 1)));
      tasks.push_back(group.create_task([&]() -> sockpat::Task<int> {
        co_await wait_forever(never, cancelled, released);
        co_return -1;
      }));
      tasks.push_back(group.create_task(value_after(2ms, 3)));
      tasks.push_back(group.create_task(value_after(200ms, 4)));
      auto [done, pending] = co_await sockpat::wait(tasks, 50ms);
      REQUIRE(done.size() == 2);
      REQUIRE(pending.size() == 2);
      CHECK(done[0] == tasks[0]);  // each list in the order given
      CHECK(done[1] == tasks[2]);
      CHECK(pending[0] == tasks[1]);
      CHECK(pending[1] == tasks[3]);
      CHECK(co_await done[0] == 1);
      CHECK(co_await done[1] == 3);
      CHECK(cancelled == 0);  // nothing was cancelled at the deadline
      CHECK_FALSE(pending[0].done());
      pending[0].cancel();
      CHECK_THROWS_AS(co_await pending[0], std::system_error);
      later.push_back(co_await pending[1]);  // it ran on, and its value is not lost
      CHECK(cancelled == 1);
      CHECK(released == 1);
    });
  });
  CHECK(later == std::vector<int>{4});
}

TEST_CASE("wait returns as soon as every task has ended, and takes no value or exception from them" *
          doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    int reported = 0;  // the loop reports a failed task of its own, awaited or not
    sockpat::get_running_loop().set_exception_handler([&](std::exception_ptr) { ++reported; });
    std::vector<sockpat::TaskHandle<int>> tasks;
    for (int i = 0; i < 5; ++i) tasks.push_back(sockpat::create_task(value_after(1ms, i)));  // the loop's tasks
    tasks.push_back(sockpat::create_task(fail_after(2ms, "failed in time")));
    const auto start = std::chrono::steady_clock::now();
    auto [done, pending] = co_await sockpat::wait(tasks, 1h);
    CHECK(std::chrono::steady_clock::now() - start < 5s);
    CHECK(done.size() == 6);
    CHECK(pending.empty());
    int sum = 0;
    for (std::size_t i = 0; i < 5; ++i) sum += co_await tasks[i];  // the values are still there, in the handles
    CHECK(sum == 0 + 1 + 2 + 3 + 4);
    CHECK_THROWS_WITH_AS(co_await done[5], "failed in time", std::runtime_error);
    CHECK(reported == 1);
    auto none = co_await sockpat::wait(std::vector<sockpat::TaskHandle<int>>{}, 1h);
    CHECK((none.done.empty() && none.pending.empty()));
    std::vector<sockpat::TaskHandle<int>> empty_handle(1);
    CHECK_THROWS_AS((void)co_await sockpat::wait(empty_handle, 1ms), std::invalid_argument);
  });
}

TEST_CASE("wait, cancelled itself, throws operation_canceled and leaves the tasks running" * doctest::timeout(10)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
      std::vector<sockpat::TaskHandle<int>> tasks{group.create_task(value_after(30ms, 7))};
      auto waiting = group.create_task([&]() -> sockpat::Task<void> { (void)co_await sockpat::wait(tasks, 1h); });
      co_await sockpat::sleep(1ms);
      waiting.cancel();
      try {
        co_await waiting;
        FAIL("a cancelled wait should throw");
      } catch (const std::system_error& e) {
        CHECK(e.code() == std::errc::operation_canceled);
      }
      CHECK_FALSE(tasks[0].done());
      CHECK(co_await tasks[0] == 7);
    });
  });
}
}

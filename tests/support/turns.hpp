// Test helper: a task that counts its turns on the loop, to see whether another coroutine
// ever gives the loop back.
#ifndef SOCKPAT_TESTS_SUPPORT_TURNS_HPP
#define SOCKPAT_TESTS_SUPPORT_TURNS_HPP

#include <coroutine>  // std::coroutine_handle

#include "sockpat/detail/reactor.hpp"
#include "sockpat/task.hpp"

namespace test {

/// One turn in the ready queue and nothing else (no timer, no descriptor): the coroutine is
/// scheduled behind whatever is ready now.
struct YieldNow {
  static bool await_ready() noexcept { return false; }
  static void await_suspend(std::coroutine_handle<> h) { sockpat::detail::current_reactor().schedule(h); }
  static void await_resume() noexcept {}
};

/// Adds one to `turns` each time the loop runs it, until `done`. Spawned, it runs to its first
/// yield at once.
inline sockpat::Task<void> count_turns(int& turns, const bool& done) {
  while (!done) {
    ++turns;
    co_await YieldNow{};
  }
}

}  // namespace test

#endif  // SOCKPAT_TESTS_SUPPORT_TURNS_HPP

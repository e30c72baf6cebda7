// Test helper: a task that counts its turns on the loop, to see whether another coroutine
// ever gives the loop back.
#ifndef SOCKPAT_TESTS_SUPPORT_TURNS_HPP
#define SOCKPAT_TESTS_SUPPORT_TURNS_HPP

#include "sockpat/task.hpp"  // Task, yield_now

namespace test {

/// Adds one to `turns` each time the loop runs it, until `done`. Spawned, it runs to its first
/// yield at once.
inline sockpat::Task<void> count_turns(int& turns, const bool& done) {
  while (!done) {
    ++turns;
    co_await sockpat::yield_now();  // one turn in the ready queue, behind what is ready now
  }
}

}  // namespace test

#endif  // SOCKPAT_TESTS_SUPPORT_TURNS_HPP

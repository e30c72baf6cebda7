// Test helper: runs a coroutine body on a loop of its own, bounded in time.
#ifndef SOCKPAT_TESTS_SUPPORT_LOOP_HPP
#define SOCKPAT_TESTS_SUPPORT_LOOP_HPP

#include <chrono>  // std::chrono::seconds

#include "sockpat/event_loop.hpp"  // EventLoop
#include "sockpat/task.hpp"        // Task, wait_for

namespace test {

/// Makes a loop and runs `body()` (a Task<void>) on it for at most `limit`: past it, the body is
/// cancelled and timed_out is thrown, so a test that would hang fails instead.
template <class F>
void run_bounded(F body, std::chrono::seconds limit = std::chrono::seconds(10)) {
  sockpat::EventLoop loop;
  loop.run_until_complete([&]() -> sockpat::Task<void> { co_await sockpat::wait_for(body(), limit); }());
}

}  // namespace test

#endif  // SOCKPAT_TESTS_SUPPORT_LOOP_HPP

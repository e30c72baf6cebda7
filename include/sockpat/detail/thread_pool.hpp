// sockpat: a small pool of helper threads for calls that can only block (getaddrinfo), so that
// they block neither an event loop nor past a caller's deadline.
#ifndef SOCKPAT_DETAIL_THREAD_POOL_HPP
#define SOCKPAT_DETAIL_THREAD_POOL_HPP

#include <chrono>              // std::chrono::seconds
#include <condition_variable>  // std::condition_variable
#include <cstddef>             // std::size_t
#include <deque>               // std::deque: the queued jobs
#include <functional>          // std::function: a job
#include <mutex>               // std::mutex, std::unique_lock
#include <system_error>        // std::system_error, std::error_code
#include <thread>              // std::thread: the helpers
#include <utility>             // std::move

#include "sockpat/detail/syscall.hpp"  // make_errc

namespace sockpat::detail {

/// At most `max_threads` helpers, started when a job finds no idle one, each ending after
/// `idle_timeout` without work (as libuv's pool for getaddrinfo, but lazy both ways). Jobs run
/// in the order they came. The helpers are detached: a job that never returns (a resolver that
/// hangs) holds one helper, not the process's exit; whoever waits for a job's answer waits on
/// state it shares with the job, bounded by its own deadline.
class ThreadPool {
 public:
  using Job = std::function<void()>;

  explicit ThreadPool(std::size_t max_threads, std::chrono::steady_clock::duration idle_timeout) noexcept
      : max_(max_threads == 0 ? 1 : max_threads), idle_timeout_(idle_timeout) {}
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() = default;  // never runs for the process-wide pool (it is never destroyed)

  /// Queues `job`; starts a helper when fewer are idle than jobs wait and the bound allows.
  /// Returns resource_unavailable_try_again when no helper runs and none can be started.
  std::error_code submit(Job job) noexcept {
    std::unique_lock<std::mutex> lock(mutex_);
    try {
      jobs_.push_back(std::move(job));
    } catch (...) {
      return make_errc(std::errc::not_enough_memory);
    }
    if (idle_ >= jobs_.size() || threads_ >= max_) {
      work_.notify_one();
      return {};
    }
    ++threads_;
    try {
      std::thread([this] { work(); }).detach();
    } catch (...) {
      --threads_;
      if (threads_ == 0) {  // nobody will ever run it
        jobs_.pop_back();
        return make_errc(std::errc::resource_unavailable_try_again);
      }
      work_.notify_one();
    }
    return {};
  }

  /// Helpers alive now (running a job or idle), for tests.
  [[nodiscard]] std::size_t threads() const noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    return threads_;
  }

 private:
  void work() noexcept {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      ++idle_;
      const bool got = work_.wait_for(lock, idle_timeout_, [this] { return !jobs_.empty(); });
      --idle_;
      if (!got) {
        --threads_;
        return;
      }
      Job job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();  // a Job does not throw: the resolver's job catches what the resolver throws
      job = nullptr;  // its captures go before the lock is taken again
      lock.lock();
    }
  }

  mutable std::mutex mutex_;
  std::condition_variable work_;
  std::deque<Job> jobs_;
  std::size_t threads_ = 0;
  std::size_t idle_ = 0;
  const std::size_t max_;
  const std::chrono::steady_clock::duration idle_timeout_;
};

/// The process-wide pool of blocking resolutions: 4 helpers at most (libuv's default), each
/// ending after 5 s idle. Made on first use and never destroyed: a helper may still be inside
/// getaddrinfo when the process exits.
inline ThreadPool& resolver_pool() {
  static ThreadPool* const pool = new ThreadPool(4, std::chrono::seconds(5));
  return *pool;
}

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_THREAD_POOL_HPP

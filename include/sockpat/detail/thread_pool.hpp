// sockpat: a pool of helper threads for calls that can only block (getaddrinfo), so that they
// block neither an event loop nor past a caller's deadline; and process-wide state that survives
// a fork (made afresh in the child, or held across the fork).
#ifndef SOCKPAT_DETAIL_THREAD_POOL_HPP
#define SOCKPAT_DETAIL_THREAD_POOL_HPP

#include <atomic>              // std::atomic: per_process's slot and the fork count
#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock
#include <condition_variable>  // std::condition_variable
#include <cstddef>             // std::size_t
#include <deque>               // std::deque: the queued jobs
#include "sockpat/detail/function.hpp"  // std::function: a job
#include <iterator>            // std::prev
#include <list>                // std::list: the helpers, each with its job's start
#include <mutex>               // std::mutex, std::unique_lock
#include <new>                 // std::nothrow
#include <system_error>        // std::system_error, std::error_code
#include <thread>              // std::thread: the helpers
#include <utility>             // std::move

#include "sockpat/detail/os.hpp"       // pthread_atfork
#include "sockpat/detail/syscall.hpp"  // make_errc

namespace sockpat::detail {

/// At most `max_threads` helpers, started when a job finds no idle one, each ending after
/// `idle_timeout` without work (as libuv's pool for getaddrinfo, but lazy both ways). A job that
/// finds every helper busy and no room for another is refused, not queued behind them: a job
/// that never returns (a resolver that hangs) holds one helper, and must not hold the jobs after
/// it. The helpers are detached, so such a job does not hold the process's exit either; whoever
/// waits for a job's answer waits on state it shares with the job, bounded by its own deadline.
class ThreadPool {
 public:
  using Job = std::function<void()>;
  using Clock = std::chrono::steady_clock;

  /// Why a job was refused: the helpers, all inside a job, and how long the oldest has been.
  struct Busy {
    std::size_t running = 0;
    Clock::duration oldest{};
  };

  explicit ThreadPool(std::size_t max_threads, Clock::duration idle_timeout) noexcept
      : max_(max_threads == 0 ? 1 : max_threads), idle_timeout_(idle_timeout) {}
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() = default;  // only for a pool with no helper left (the process-wide one is never destroyed)

  /// Queues `job` for an idle helper, or starts one. Returns resource_unavailable_try_again (and
  /// fills `busy`) when every helper is busy and none can be started.
  std::error_code submit(Job job, Busy* busy = nullptr) noexcept {
    std::unique_lock<std::mutex> lock(mutex_);
    try {
      jobs_.push_back(std::move(job));
    } catch (...) {
      return make_errc(std::errc::not_enough_memory);
    }
    if (idle_ >= jobs_.size()) {
      work_.notify_one();
      return {};
    }
    if (helpers_.size() < max_) {
      bool added = false;
      try {
        helpers_.emplace_back();
        added = true;
        std::thread([this, self = std::prev(helpers_.end())] { work(self); }).detach();
        return {};
      } catch (...) {
        if (added) helpers_.pop_back();  // its thread did not start
      }
    }
    jobs_.pop_back();
    if (busy != nullptr) *busy = busy_now();
    return make_errc(std::errc::resource_unavailable_try_again);
  }

  /// Helpers alive now (inside a job or idle), for tests.
  [[nodiscard]] std::size_t threads() const noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    return helpers_.size();
  }

 private:
  struct Helper {
    bool running = false;  // inside a job, since `since`
    Clock::time_point since{};
  };
  using HelperList = std::list<Helper>;

  void work(HelperList::iterator self) noexcept {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      ++idle_;
      const bool got = work_.wait_for(lock, idle_timeout_, [this] { return !jobs_.empty(); });
      --idle_;
      if (!got) {
        helpers_.erase(self);
        return;
      }
      Job job = std::move(jobs_.front());
      jobs_.pop_front();
      self->running = true;
      self->since = Clock::now();
      lock.unlock();
      job();  // a Job does not throw: the resolver's job catches what the resolver throws
      job = nullptr;  // its captures go before the lock is taken again
      lock.lock();
      self->running = false;
    }
  }

  Busy busy_now() const noexcept {
    Busy b;
    b.running = helpers_.size() - idle_;  // with the helpers started for a job they have not begun
    const auto now = Clock::now();
    for (const auto& h : helpers_) {
      if (h.running && now - h.since > b.oldest) b.oldest = now - h.since;
    }
    return b;
  }

  mutable std::mutex mutex_;
  std::condition_variable work_;
  std::deque<Job> jobs_;
  HelperList helpers_;
  std::size_t idle_ = 0;
  const std::size_t max_;
  const Clock::duration idle_timeout_;
};

// Forks seen by this process, counted in the child: state made before the last one is a copy
// of the parent's, whose threads the child does not have.
inline std::atomic<unsigned long> forks_seen{0};
inline std::atomic<bool> fork_hook_set{false};

inline void count_forks() noexcept {
#if !defined(SOCKPAT_WINDOWS)
  if (fork_hook_set.exchange(true, std::memory_order_acq_rel)) return;
  // Only the child's handler: it runs on the one thread the child has, before fork returns, and
  // does nothing that a child of a multi-threaded process may not do.
  (void)::pthread_atfork(nullptr, nullptr, [] { forks_seen.fetch_add(1, std::memory_order_relaxed); });
#endif
}

/// The process's T, made (default-constructed) on first use and never destroyed. A forked child
/// makes its own on its first use rather than use its copy of the parent's, whose mutex a thread
/// it does not have may have held, whose condition variable counts waiters that are not there.
/// The copy is leaked. Throws what `new T` throws.
template <class T>
T& per_process() {
  struct Slot {
    unsigned long generation;
    T value;
  };
  static constinit std::atomic<Slot*> current{nullptr};  // no guard variable a fork could copy held
  Slot* slot = current.load(std::memory_order_acquire);
  const unsigned long generation = forks_seen.load(std::memory_order_relaxed);
  while (slot == nullptr || slot->generation != generation) {
    count_forks();
    auto* made = new Slot{generation, {}};
    if (current.compare_exchange_strong(slot, made, std::memory_order_acq_rel)) return made->value;
    delete made;  // another thread made it first: `slot` is its
  }
  return slot->value;
}

/// Makes every later fork wait until no thread holds `Mutex()` and hold it across the fork, so
/// that the child finds it free and what it guards whole: for state the child keeps, guarded for
/// a few instructions at a time (a held lock makes the fork wait that long).
template <std::mutex& (*Mutex)()>
void hold_over_fork() noexcept {
#if !defined(SOCKPAT_WINDOWS)
  static constinit std::atomic<bool> set{false};
  if (set.load(std::memory_order_acquire) || set.exchange(true, std::memory_order_acq_rel)) return;
  (void)::pthread_atfork([] { Mutex().lock(); }, [] { Mutex().unlock(); }, [] { Mutex().unlock(); });
#endif
}

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_THREAD_POOL_HPP

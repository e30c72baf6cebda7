// sockpat: EventLoop, one thread's reactor for coroutines, with create_task and run (asyncio.run).
#ifndef SOCKPAT_EVENT_LOOP_HPP
#define SOCKPAT_EVENT_LOOP_HPP

#include <algorithm>     // std::max
#include <atomic>        // std::atomic
#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock
#include <coroutine>     // std::coroutine_handle
#include <cstddef>       // std::size_t
#include <cstdint>       // std::uint32_t, std::uint64_t
#include <cstdio>        // std::fputs, stderr: the default report of a failed spawned task
#include <exception>     // std::exception_ptr, std::exception
#include "sockpat/detail/function.hpp"  // std::function
#include <new>           // std::bad_alloc
#include <memory>        // std::unique_ptr: the reserve of schedule()
#include <mutex>         // std::mutex, std::lock_guard
#include <optional>      // std::optional
#include <stdexcept>     // std::logic_error
#include <stop_token>    // std::stop_token, std::stop_callback
#include <system_error>  // std::error_code, std::system_error
#include <type_traits>   // std::is_void_v, std::decay_t
#include <utility>       // std::move, std::swap, std::forward, std::exchange
#include <vector>        // std::vector

#include "sockpat/detail/poller.hpp"
#include "sockpat/detail/reactor.hpp"
#include "sockpat/detail/wait.hpp"
#include "sockpat/task.hpp"
#include "sockpat/task_group.hpp"  // TaskSet, TaskHandle: create_task

namespace sockpat {

/// A single-threaded event loop: it waits for descriptors (epoll on Linux, poll elsewhere),
/// timers and posted functions, and resumes the coroutines waiting on them. One loop per
/// thread; it is the thread's running loop (get_running_loop()) from construction to
/// destruction, so `co_await conn.async_read_some(buf)` needs no loop argument.
/// Sockets awaited on a loop must be closed on the loop's thread (closing one finishes its
/// pending operations with operation_canceled). Only stop() and call_soon_threadsafe() may be
/// called from other threads.
class EventLoop final : public detail::Reactor {
 public:
  /// Throws std::system_error if the backend cannot be opened, std::logic_error if this
  /// thread already has a loop.
  EventLoop() {
    if (detail::thread_reactor() != nullptr) throw std::logic_error("sockpat: this thread already has an EventLoop");
    if (auto ec = poller_.open()) throw std::system_error(ec, "event loop");
    if (auto ec = waker_.open()) throw std::system_error(ec, "event loop wake-up");
    if (auto ec = wait_io(waker_.read_handle(), detail::Direction::read, &wake_)) {
      throw std::system_error(ec, "event loop wake-up");
    }
    detail::thread_reactor() = this;
    previous_observer_ = std::exchange(detail::thread_handle_observer(), this);
    tasks_.on_failure = [](void* loop, std::exception_ptr e) noexcept { static_cast<EventLoop*>(loop)->report(e); };
    tasks_.context = this;
    detail::loop_sets().adopter = &tasks_;
  }
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  /// Cancels every pending operation and spawned task (they finish with operation_canceled)
  /// and lets them unwind before the loop goes.
  ~EventLoop() {
    shutdown();
    detail::loop_sets().adopter = nullptr;
    detail::thread_handle_observer() = previous_observer_;
    detail::thread_reactor() = nullptr;
  }

  /// The loop of the calling thread, or null.
  [[nodiscard]] static EventLoop* current() noexcept { return static_cast<EventLoop*>(detail::thread_reactor()); }

  /// The backend in use: "epoll" or "poll".
  [[nodiscard]] static constexpr const char* backend() noexcept { return detail::Poller::name; }

  /// Runs until stop() is called (asyncio's run_forever).
  void run() {
    check_thread();
    const Running running(in_run_);
    while (!stop_.exchange(false, std::memory_order_acq_rel)) run_once();
  }

  /// Runs the loop until `task` finishes and returns its result or rethrows its exception.
  /// stop() meanwhile cancels the task: its pending operation finishes with operation_canceled.
  template <class T>
  T run_until_complete(Task<T> task) {
    check_thread();
    const Running running(in_run_);
    detail::ChildSlot<T> slot;
    MainJoiner joiner;
    auto runner = detail::run_child(std::move(task), slot);
    runner.start(&joiner);
    while (!joiner.done) {
      if (stop_.exchange(false, std::memory_order_acq_rel)) runner.scope().cancel();
      interrupt_ = &joiner.done;
      run_once();
      interrupt_ = nullptr;
    }
    runner = detail::Runner();
    if (slot.error) std::rethrow_exception(slot.error);
    if constexpr (!std::is_void_v<T>) return std::move(*slot.value);
  }

  /// Makes run() return (and run_until_complete cancel its task). Thread-safe.
  void stop() noexcept {
    stop_.store(true, std::memory_order_release);
    wake();
  }

  /// Stops the loop when `token` is stopped, e.g. SignalStop::token() for SIGINT/SIGTERM.
  void stop_when(std::stop_token token) { stop_on_.emplace(std::move(token), StopLoop{this}); }

  /// Runs `f` on the loop's thread soon (asyncio's call_soon_threadsafe). Thread-safe; wakes the loop.
  void call_soon_threadsafe(std::function<void()> f) {
    {
      const std::lock_guard<std::mutex> lock(posted_mutex_);
      posted_.push_back(std::move(f));
    }
    wake();
  }
  /// Starts `task` now, owned by the loop (asyncio's create_task), and returns its handle:
  /// await it for the result, cancel it, or drop it and let the task run. An exception that
  /// escapes the task is reported (see set_exception_handler) and the loop goes on;
  /// destroying the loop cancels the task. Loop thread only.
  template <class T>
  TaskHandle<T> create_task(Task<T> task) {
    return TaskHandle<T>(tasks_.start(std::move(task)));
  }
  /// Starts the task `f(args...)`, with `f` and `args` (decayed) kept alive in its frame until
  /// it ends (TaskGroup::create_task says why).
  template <class F, class... Args>
    requires detail::task_factory<std::decay_t<F>, std::decay_t<Args>...>
  auto create_task(F&& f, Args&&... args) {
    return create_task(detail::call_owned<std::decay_t<F>, std::decay_t<Args>...>(std::forward<F>(f),
                                                                                   std::forward<Args>(args)...));
  }

  /// Called with each exception that escapes a spawned task, except operation_canceled.
  /// The default writes its what() to stderr.
  void set_exception_handler(std::function<void(std::exception_ptr)> handler) { on_error_ = std::move(handler); }

  /// Reports `e` as a failed spawned task would be (operation_canceled is not reported).
  void report_exception(std::exception_ptr e) noexcept { report(e); }

  /// The spawned tasks still running.
  [[nodiscard]] std::size_t spawned_tasks() const noexcept { return tasks_.size(); }
  /// The timers armed now (sleeps and operation deadlines).
  [[nodiscard]] std::size_t timers() const noexcept { return timers_.size(); }

  // --- detail::Reactor ---

  std::error_code wait_io(detail::native_handle h, detail::Direction d, detail::Pending* p) noexcept override {
    if (h == detail::invalid_handle) return detail::make_errc(std::errc::bad_file_descriptor);
    const auto i = static_cast<std::size_t>(h);
    try {
      if (i >= fds_.size()) {
        const std::size_t n = (std::max)(i + 1, 2 * fds_.size());
        hints_.resize(n, hint_unknown);
        fds_.resize(n);
      }
      auto& st = fds_[i];
      detail::Pending*& slot = d == detail::Direction::read ? st.reader : st.writer;
      if (slot != nullptr && slot != p) return detail::make_errc(std::errc::device_or_resource_busy);
      slot = p;
      auto ec = poller_.watch(h, tag_of(h, st.generation), st.reader != nullptr, st.writer != nullptr, st.registered);
      if (ec) slot = nullptr;
      return ec;
    } catch (const std::bad_alloc&) {
      return detail::make_errc(std::errc::not_enough_memory);
    }
  }

  void unwait_io(detail::native_handle h, detail::Direction d, detail::Pending* p) noexcept override {
    const auto i = static_cast<std::size_t>(h);
    if (h == detail::invalid_handle || i >= fds_.size()) return;
    auto& st = fds_[i];
    detail::Pending*& slot = d == detail::Direction::read ? st.reader : st.writer;
    if (slot != p) return;
    slot = nullptr;
    if constexpr (!detail::Poller::edge_triggered) {
      // Narrowing interest never allocates.
      (void)poller_.watch(h, tag_of(h, st.generation), st.reader != nullptr, st.writer != nullptr, st.registered);
    }
  }

  void add_timer(detail::Pending* p) noexcept override {
    p->sequence = ++timer_sequence_;
    try {
      timers_.push_back(p);
    } catch (const std::bad_alloc&) {
      p->cancel(detail::make_errc(std::errc::not_enough_memory));
      return;
    }
    p->heap_index = timers_.size() - 1;
    sift_up(p->heap_index);
  }

  void remove_timer(detail::Pending* p) noexcept override {
    const std::size_t i = p->heap_index;
    if (i == detail::not_in_heap) return;
    p->heap_index = detail::not_in_heap;
    detail::Pending* last = timers_.back();
    timers_.pop_back();
    if (last == p) return;
    timers_[i] = last;
    last->heap_index = i;
    sift_up(i);
    sift_down(last->heap_index);
  }

  void add_stoppable(detail::Pending* p) noexcept override {
    p->stop_prev = nullptr;
    p->stop_next = stoppable_;
    if (stoppable_ != nullptr) stoppable_->stop_prev = p;
    stoppable_ = p;
  }

  void remove_stoppable(detail::Pending* p) noexcept override {
    if (p->stop_prev != nullptr) p->stop_prev->stop_next = p->stop_next;
    else if (stoppable_ == p) stoppable_ = p->stop_next;
    if (p->stop_next != nullptr) p->stop_next->stop_prev = p->stop_prev;
    p->stop_prev = p->stop_next = nullptr;
  }

  void notify_stop() noexcept override {
    stops_.store(true, std::memory_order_release);
    wake();
  }

  void schedule(std::coroutine_handle<> h) noexcept override {
    try {
      ready_.push_back(h);
    } catch (const std::bad_alloc&) {
      // No memory to grow the queue: the reserve made with the loop takes it. Resuming it
      // here instead would run it inside whoever woke it (an Event's set(), a stream's
      // wake-up), which may then find its own object destroyed under it.
      if (spare_count_ < spare_size) {
        spare_[spare_count_++] = h;
      } else {
        h.resume();  // the last resort, past spare_size coroutines woken without memory
      }
    }
  }

  void handle_closing(detail::native_handle h, bool released) noexcept override {
    const auto i = static_cast<std::size_t>(h);
    if (h == detail::invalid_handle || i >= fds_.size()) return;
    auto& st = fds_[i];
    hints_[i] = hint_unknown;  // the number's next socket starts unknown
    if (st.reader == nullptr && st.writer == nullptr && !st.registered) return;
    detail::Pending* r = std::exchange(st.reader, nullptr);
    detail::Pending* w = std::exchange(st.writer, nullptr);
    poller_.forget(h, released, st.registered);
    ++st.generation;  // events already queued for the old descriptor are dropped
    if (r != nullptr) r->cancel(detail::canceled());
    if (w != nullptr) w->cancel(detail::canceled());
  }

 private:
  struct FdState {
    detail::Pending* reader = nullptr;
    detail::Pending* writer = nullptr;
    std::uint32_t generation = 0;
    bool registered = false;
  };

  struct MainJoiner final : detail::Joiner {
    bool done = false;
    std::coroutine_handle<> arrive() noexcept override {
      done = true;
      return std::noop_coroutine();
    }
  };

  struct WakeReader final : detail::Pending {
    explicit WakeReader(EventLoop* l) noexcept : loop(l) {}
    EventLoop* loop;
    void on_ready() noexcept override { loop->woken_ = true; }
    void cancel(std::error_code) noexcept override {}
  };

  struct StopLoop {
    EventLoop* loop;
    void operator()() const noexcept { loop->stop(); }
  };

  static std::uint64_t tag_of(detail::native_handle h, std::uint32_t generation) noexcept {
    return (static_cast<std::uint64_t>(generation) << 32) | static_cast<std::uint32_t>(h);
  }

  void check_thread() const {
    if (detail::thread_reactor() != this) throw std::logic_error("sockpat: an EventLoop runs on the thread that made it");
    if (in_run_) throw std::logic_error("sockpat: the EventLoop is already running (co_await instead)");
  }

  struct Running {
    bool& flag;
    explicit Running(bool& f) noexcept : flag(f) { flag = true; }
    Running(const Running&) = delete;
    Running& operator=(const Running&) = delete;
    ~Running() { flag = false; }
  };

  void wake() noexcept {
    if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) waker_.notify();
  }

  void run_ready() {
    // Handles scheduled while running wait for the next round, after the poller has been
    // asked (with timeout 0), so that a busy task cannot starve I/O.
    std::swap(ready_, running_);
    for (std::size_t i = 0; i < running_.size(); ++i) {
      inline_left_ = inline_limit;
      running_[i].resume();
    }
    running_.clear();
    // Those queued in the reserve: the reserve is emptied first, as more may land in it.
    const std::size_t n = std::exchange(spare_count_, 0);
    if (n == 0) return;
    try {
      ready_.insert(ready_.begin(), spare_.get(), spare_.get() + n);  // ahead of later ones
    } catch (const std::bad_alloc&) {
      // Still no memory: they run now, in order, from the loop itself (not from a waker),
      // out of the other half, as more may land in the reserve meanwhile.
      std::swap(spare_, spare_running_);
      for (std::size_t i = 0; i < n; ++i) {
        inline_left_ = inline_limit;
        spare_running_[i].resume();
      }
    }
  }

  int poll_timeout() const noexcept {
    if (!ready_.empty() || spare_count_ != 0 || stop_.load(std::memory_order_relaxed)) return 0;
    if (interrupt_ != nullptr && *interrupt_) return 0;
    if (timers_.empty()) return -1;
    return detail::poll_timeout_ms(timers_.front()->when);
  }

  void run_once() {
    run_ready();
    auto ec = poller_.wait(poll_timeout(), [this](std::uint64_t tag, bool readable, bool writable, bool hangup) {
      dispatch(tag, readable, writable, hangup);
    });
    if (ec) throw std::system_error(ec, "event loop wait");
    fire_timers();
    if (woken_) {
      woken_ = false;
      // Empty the wake-up first and only then accept new ones: the other order could swallow
      // a wake-up written in between and leave wake_pending_ set forever.
      waker_.drain();
      wake_pending_.store(false, std::memory_order_release);
      if (stops_.exchange(false, std::memory_order_acq_rel)) cancel_stopped();
      run_posted();
    }
  }

  void dispatch(std::uint64_t tag, bool readable, bool writable, bool hangup) noexcept {
    const auto i = static_cast<std::size_t>(static_cast<std::uint32_t>(tag));
    if (i >= fds_.size()) return;
    auto& st = fds_[i];
    if (st.generation != static_cast<std::uint32_t>(tag >> 32)) return;
    hints_[i] = static_cast<unsigned char>(hints_[i] | (readable ? hint_read : 0) | (writable ? hint_write : 0) |
                                           (hangup ? hint_sticky : 0));
    // on_ready only performs the system call and schedules; it cannot close the descriptor.
    if (readable && st.reader != nullptr) st.reader->on_ready();
    if (writable && st.writer != nullptr) st.writer->on_ready();
  }

  void fire_timers() {
    if (timers_.empty()) return;
    const auto now = std::chrono::steady_clock::now();
    while (!timers_.empty() && timers_.front()->when <= now) {
      detail::Pending* p = timers_.front();
      remove_timer(p);
      p->on_timer();
    }
  }

  void cancel_stopped() noexcept {
    for (detail::Pending* p = stoppable_; p != nullptr;) {
      detail::Pending* next = p->stop_next;
      if (p->stop != nullptr && p->stop->stop_requested()) p->cancel(detail::canceled());
      p = next;
    }
  }

  void run_posted() {
    {
      const std::lock_guard<std::mutex> lock(posted_mutex_);
      std::swap(posted_, posting_);
    }
    for (auto& f : posting_) {
      try {
        f();
      } catch (...) {
        report(std::current_exception());
      }
    }
    posting_.clear();
  }

  void report(std::exception_ptr e) noexcept {
    try {
      std::rethrow_exception(e);
    } catch (const std::system_error& x) {
      if (x.code() == std::errc::operation_canceled) return;  // cancellation is not a failure
    } catch (...) {
    }
    try {
      if (on_error_) {
        on_error_(e);
        return;
      }
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      std::fputs("sockpat: a spawned task failed: ", stderr);
      std::fputs(x.what(), stderr);
      std::fputs("\n", stderr);
    } catch (...) {
      std::fputs("sockpat: a spawned task failed with a non-standard exception\n", stderr);
    }
  }

  // Cancels everything still pending and lets the coroutines unwind. While closing, a new
  // wait fails at once, and one that a coroutine keeps retrying suspends after a few
  // (Waiter::begin), to be cancelled on the next round: each round ends, and so do the
  // rounds; a task still alive after them is destroyed.
  void shutdown() noexcept {
    closing_ = true;
    stop_on_.reset();
    for (int round = 0; round < 1000; ++round) {
      tasks_.cancel();
      for (std::size_t i = 0; i < fds_.size(); ++i) {
        auto& st = fds_[i];
        if (st.reader != nullptr && st.reader != &wake_) std::exchange(st.reader, nullptr)->cancel(detail::canceled());
        if (st.writer != nullptr) std::exchange(st.writer, nullptr)->cancel(detail::canceled());
      }
      while (!timers_.empty()) {
        detail::Pending* p = timers_.front();
        remove_timer(p);
        p->cancel(detail::canceled());
      }
      detail::Waiter::cancel_parked();  // the waits that suspended since the last round
      if (ready_.empty() && spare_count_ == 0 && tasks_.size() == 0) break;
      try {
        run_ready();
      } catch (...) {
      }
    }
    // Destroys the tasks that would not end, and with them the tasks of the groups (and
    // servers) they own: nothing is resumed any more, so no frame is left suspended.
    detail::loop_sets().abandoning = true;
    tasks_.abandon();
    detail::loop_sets().abandoning = false;
  }

  detail::Poller poller_;
  detail::Waker waker_;
  WakeReader wake_{this};
  std::vector<FdState> fds_;
  std::vector<detail::Pending*> timers_;  // a binary heap on (when, sequence)
  std::uint64_t timer_sequence_ = 0;
  std::vector<std::coroutine_handle<>> ready_;
  std::vector<std::coroutine_handle<>> running_;
  static constexpr std::size_t spare_size = 1024;
  // The reserve of schedule() without memory, and its other half while it is emptied.
  std::unique_ptr<std::coroutine_handle<>[]> spare_{new std::coroutine_handle<>[spare_size]};
  std::unique_ptr<std::coroutine_handle<>[]> spare_running_{new std::coroutine_handle<>[spare_size]};
  std::size_t spare_count_ = 0;
  detail::Pending* stoppable_ = nullptr;
  detail::TaskSet tasks_{false};  // the tasks it owns: create_task's
  const bool* interrupt_ = nullptr;
  bool woken_ = false;
  bool in_run_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<bool> stops_{false};
  std::atomic<bool> wake_pending_{false};
  std::mutex posted_mutex_;
  std::vector<std::function<void()>> posted_;
  std::vector<std::function<void()>> posting_;
  std::optional<std::stop_callback<StopLoop>> stop_on_;
  std::function<void(std::exception_ptr)> on_error_;
  detail::HandleObserver* previous_observer_ = nullptr;

  bool earlier(std::size_t a, std::size_t b) const noexcept {
    const auto* x = timers_[a];
    const auto* y = timers_[b];
    return x->when < y->when || (x->when == y->when && x->sequence < y->sequence);
  }
  void swap_nodes(std::size_t a, std::size_t b) noexcept {
    std::swap(timers_[a], timers_[b]);
    timers_[a]->heap_index = a;
    timers_[b]->heap_index = b;
  }
  void sift_up(std::size_t i) noexcept {
    while (i > 0 && earlier(i, (i - 1) / 2)) {
      swap_nodes(i, (i - 1) / 2);
      i = (i - 1) / 2;
    }
  }
  void sift_down(std::size_t i) noexcept {
    for (;;) {
      std::size_t best = i;
      const std::size_t l = 2 * i + 1;
      const std::size_t r = l + 1;
      if (l < timers_.size() && earlier(l, best)) best = l;
      if (r < timers_.size() && earlier(r, best)) best = r;
      if (best == i) return;
      swap_nodes(i, best);
      i = best;
    }
  }
};

/// The loop running on (owned by) the calling thread. Throws std::logic_error if there is none.
inline EventLoop& get_running_loop() {
  EventLoop* l = EventLoop::current();
  if (l == nullptr) throw std::logic_error("sockpat: no event loop on this thread");
  return *l;
}

/// Starts `task` on the running loop and returns its handle (see EventLoop::create_task).
template <class T>
TaskHandle<T> create_task(Task<T> task) {
  return get_running_loop().create_task(std::move(task));
}
/// Starts the task `f(args...)` on the running loop, `f` and `args` kept alive in its frame.
template <class F, class... Args>
  requires detail::task_factory<std::decay_t<F>, std::decay_t<Args>...>
auto create_task(F&& f, Args&&... args) {
  return get_running_loop().create_task(std::forward<F>(f), std::forward<Args>(args)...);
}

/// Like asyncio.run: makes a loop on this thread, runs `task` to completion, cancels what it
/// left running, and returns the task's result (or rethrows its exception).
template <class T>
T run(Task<T> task) {
  EventLoop loop;
  return loop.run_until_complete(std::move(task));
}

}  // namespace sockpat

// Connection::async_connect(host, port) is awaited on a loop: its race comes with the loop, so a
// program that only blocks does not compile it.
#include "sockpat/detail/async_connect.hpp"

#endif  // SOCKPAT_EVENT_LOOP_HPP

// sockpat: what an awaited operation needs from the event loop, without the loop itself.
// Awaiters in socket.hpp, connection.hpp and listener.hpp include this light header; the
// EventLoop (event_loop.hpp) implements Reactor, so the RAII core does not pull in the loop.
#ifndef SOCKPAT_DETAIL_REACTOR_HPP
#define SOCKPAT_DETAIL_REACTOR_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock
#include <coroutine>     // std::coroutine_handle
#include <cstddef>       // std::size_t
#include <cstdint>       // std::uint64_t
#include <stdexcept>     // std::logic_error
#include <stop_token>    // std::stop_token
#include <system_error>  // std::error_code
#include <vector>        // std::vector: the readiness hints

#include "sockpat/detail/handle_observer.hpp"
#include "sockpat/detail/syscall.hpp"

namespace sockpat::detail {

enum class Direction : unsigned char { read, write };

inline constexpr std::size_t not_in_heap = static_cast<std::size_t>(-1);

/// A suspended leaf operation: waiting for a descriptor, a timer, or both. It lives in the
/// awaiter, in the coroutine frame, so waiting allocates nothing. Every member is used on
/// the loop's thread only.
class Pending {
 public:
  /// Its descriptor became ready (or reported an error or hang-up): try the operation again.
  virtual void on_ready() noexcept {}
  /// Its timer expired.
  virtual void on_timer() noexcept {}
  /// Finish now with `why` (operation_canceled, timed_out).
  virtual void cancel(std::error_code why) noexcept = 0;

  // Timer-heap bookkeeping, owned by the loop.
  std::chrono::steady_clock::time_point when{};
  std::uint64_t sequence = 0;
  std::size_t heap_index = not_in_heap;

  // Stop-token bookkeeping: an intrusive list the loop walks when a stop token fires.
  const std::stop_token* stop = nullptr;
  Pending* stop_prev = nullptr;
  Pending* stop_next = nullptr;

 protected:
  Pending() = default;
  Pending(const Pending&) = default;
  Pending& operator=(const Pending&) = default;
  ~Pending() = default;
};

/// What cancelling a task reaches: its current leaf operation. A task awaiting a task shares
/// its scope; wait_for, gather and create_task open a new one for the tasks they run.
struct CancelScope {
  Pending* leaf = nullptr;
  std::error_code reason;  ///< set once the scope is cancelled

  void cancel(std::error_code why = make_errc(std::errc::operation_canceled)) noexcept {
    if (reason) return;
    reason = why;
    if (Pending* p = leaf) p->cancel(make_errc(std::errc::operation_canceled));
  }
  [[nodiscard]] bool cancelled() const noexcept { return static_cast<bool>(reason); }
};

/// The scope of the coroutine whose handle an awaiter receives, if its promise has one.
template <class Promise>
CancelScope* scope_of(std::coroutine_handle<Promise> h) noexcept {
  if constexpr (requires { h.promise().cancel_scope(); }) {
    return h.promise().cancel_scope();
  } else {
    return nullptr;
  }
}

/// The event loop as its awaiters see it. Implemented by EventLoop; one per thread at most.
class Reactor : public HandleObserver {
 public:
  /// Waits for `h` to be ready in `d`; `p->on_ready()` is then called on the loop's thread.
  /// One reader and one writer per descriptor at a time (device_or_resource_busy otherwise).
  virtual std::error_code wait_io(native_handle h, Direction d, Pending* p) noexcept = 0;
  /// Stops waiting (no-op unless `p` is the current waiter).
  virtual void unwait_io(native_handle h, Direction d, Pending* p) noexcept = 0;
  /// Arms `p->on_timer()` at `p->when`.
  virtual void add_timer(Pending* p) noexcept = 0;
  virtual void remove_timer(Pending* p) noexcept = 0;
  /// Watches `p->stop`; when a stop is requested (from any thread) the loop cancels `p`.
  virtual void add_stoppable(Pending* p) noexcept = 0;
  virtual void remove_stoppable(Pending* p) noexcept = 0;
  /// Thread-safe: a stop token fired, check the stoppable operations.
  virtual void notify_stop() noexcept = 0;
  /// Resumes `h` soon, on the loop's thread.
  virtual void schedule(std::coroutine_handle<> h) noexcept = 0;

  /// True once the loop is shutting down: every new wait then fails with operation_canceled.
  [[nodiscard]] bool closing() const noexcept { return closing_; }

  // Readiness hints, so an operation can skip a system call that would only say EAGAIN: a
  // direction is "drained" after a short read or write, until the backend reports readiness
  // on it again. Never wrong in the unsafe direction: every readiness change after the short
  // call is reported (edge-triggered epoll queues it; poll sees the level when asked), and a
  // hang-up or error seen once keeps the descriptor "maybe ready" for good, since a peer's
  // FIN can sit behind the data a short read took without any further event.
  static constexpr unsigned char hint_read = 1;
  static constexpr unsigned char hint_write = 2;
  static constexpr unsigned char hint_sticky = 4;
  static constexpr unsigned char hint_unknown = hint_read | hint_write;

  [[nodiscard]] bool maybe_ready(native_handle h, Direction d) const noexcept {
    const auto i = static_cast<std::size_t>(h);
    return i >= hints_.size() || (hints_[i] & bit_of(d)) != 0;
  }
  void drained(native_handle h, Direction d) noexcept {
    const auto i = static_cast<std::size_t>(h);
    if (i < hints_.size() && (hints_[i] & hint_sticky) == 0) hints_[i] = static_cast<unsigned char>(hints_[i] & ~bit_of(d));
  }

  // Fairness. A coroutine whose operations all complete at once (a receive queue that never
  // empties, a send buffer that never fills) would never give the loop back: no other task,
  // timer or connection would run until it stopped. So each operation that completes without
  // waiting spends one unit of a budget that the loop refills whenever it resumes a coroutine;
  // once it is spent, the operation keeps its result and its coroutine yields: it is scheduled
  // behind what is ready, after the loop has polled. (Tokio's cooperative budget, 128
  // operations per task, is the same idea.) 64 such operations cost one poll with a zero timeout.
  static constexpr unsigned inline_limit = 64;
  /// Spends one unit of the running coroutine's budget; false when it is spent and the
  /// coroutine should yield (schedule() itself) before it goes on.
  [[nodiscard]] bool spend_inline() noexcept {
    if (inline_left_ == 0) return false;
    --inline_left_;
    return true;
  }

 protected:
  static constexpr unsigned char bit_of(Direction d) noexcept { return d == Direction::read ? hint_read : hint_write; }
  std::vector<unsigned char> hints_;  // by descriptor number; descriptors past its end are "maybe ready"

  Reactor() = default;
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;
  ~Reactor() = default;
  bool closing_ = false;
  unsigned inline_left_ = inline_limit;  ///< refilled by the loop before it resumes a coroutine
};

/// The reactor of the calling thread, or null.
inline Reactor*& thread_reactor() noexcept {
  thread_local Reactor* reactor = nullptr;
  return reactor;
}

inline Reactor& current_reactor() {
  Reactor* r = thread_reactor();
  if (r == nullptr) throw std::logic_error("sockpat: no event loop on this thread (create a sockpat::EventLoop first)");
  return *r;
}

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_REACTOR_HPP

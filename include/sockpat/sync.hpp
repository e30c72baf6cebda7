// sockpat: synchronisation between the tasks of one event loop, in asyncio's shape: Event,
// Semaphore and a bounded Queue<T>. Loop-bound, as asyncio's are: every call is made on the
// loop's thread. From another thread, hand the call to the loop with
// EventLoop::call_soon_threadsafe (e.g. `loop.call_soon_threadsafe([&] { queue.try_put(x); })`).
#ifndef SOCKPAT_SYNC_HPP
#define SOCKPAT_SYNC_HPP

#include <coroutine>     // std::coroutine_handle
#include <cstddef>       // std::size_t
#include <deque>         // std::deque: the queue's items
#include <optional>      // std::optional: try_get, a getter's slot
#include <stdexcept>     // std::invalid_argument
#include <system_error>  // std::error_code, std::system_error
#include <utility>       // std::move, std::exchange

#include "sockpat/detail/waiter.hpp"
#include "sockpat/error.hpp"  // errc::closed

namespace sockpat {

/// asyncio.Event: wait() suspends until set(); set() wakes every waiter; clear() re-arms it.
/// A cancelled wait() throws std::system_error(operation_canceled).
class Event {
 public:
  Event() = default;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() { waiters_.complete_all(detail::canceled()); }

  [[nodiscard]] bool is_set() const noexcept { return set_; }
  void set() noexcept {
    set_ = true;
    waiters_.complete_all();
  }
  void clear() noexcept { set_ = false; }

  class [[nodiscard]] Awaiter final : private detail::ListWaiter {
   public:
    explicit Awaiter(Event& e) noexcept : ListWaiter(e.waiters_), e_(e) {}
    using ListWaiter::cancel_before_start;
    bool await_ready() { return begin() || e_.set_; }
    using ListWaiter::await_suspend;
    void await_resume() const { check("Event wait"); }

   private:
    Event& e_;
  };
  /// Returns at once when the event is set.
  [[nodiscard]] Awaiter wait() noexcept { return Awaiter(*this); }

 private:
  detail::WaitList waiters_;
  bool set_ = false;
};

/// asyncio.Semaphore: `auto permit = co_await sem.acquire();` takes a permit or waits, first
/// come first served, and the Permit gives it back when it goes (asyncio's `async with sem`);
/// release() hands a permit to the longest waiter, or keeps it. A waiter that is cancelled, or
/// whose task is destroyed before it resumes, takes none.
class Semaphore {
 public:
  /// A permit held: move-only, released on destruction (or by release(), once).
  class [[nodiscard]] Permit {
   public:
    Permit() noexcept = default;
    Permit(Permit&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    Permit& operator=(Permit&& o) noexcept {
      if (this != &o) {
        release();
        s_ = std::exchange(o.s_, nullptr);
      }
      return *this;
    }
    Permit(const Permit&) = delete;
    Permit& operator=(const Permit&) = delete;
    ~Permit() { release(); }

    /// True while it holds a permit.
    explicit operator bool() const noexcept { return s_ != nullptr; }
    /// Gives the permit back now; no-op when it holds none.
    void release() noexcept {
      if (Semaphore* s = std::exchange(s_, nullptr)) s->release();
    }

   private:
    friend class Semaphore;
    explicit Permit(Semaphore& s) noexcept : s_(&s) {}
    Semaphore* s_ = nullptr;
  };

  explicit Semaphore(std::size_t permits) noexcept : permits_(permits) {}
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;
  ~Semaphore() {
    waiters_.complete_all(detail::canceled());
    while (detail::Waiter* w = granted_waiters_.pop_front()) static_cast<Awaiter*>(w)->granted_ = false;
  }

  [[nodiscard]] std::size_t available() const noexcept { return permits_; }
  /// Takes a permit if one is free and no one waits for it; never suspends. The manual form:
  /// the caller owes a release().
  [[nodiscard]] bool try_acquire() noexcept {
    if (permits_ == 0 || !waiters_.empty()) return false;
    --permits_;
    return true;
  }
  void release() noexcept {
    if (auto* w = static_cast<Awaiter*>(static_cast<detail::Waiter*>(waiters_.pop_front()))) {
      w->granted_ = true;  // the permit goes straight to it: no one can take it in between
      granted_waiters_.push_back(w);  // its links are free once it has left waiters_
      w->complete();
    } else {
      ++permits_;
    }
  }

  class [[nodiscard]] Awaiter final : private detail::ListWaiter {
   public:
    explicit Awaiter(Semaphore& s) noexcept : ListWaiter(s.waiters_), s_(s) {}
    using ListWaiter::cancel_before_start;  // then it takes no permit
    Awaiter(const Awaiter&) = delete;
    Awaiter& operator=(const Awaiter&) = delete;
    // A permit handed over to a task that was destroyed before it resumed (its loop went)
    // goes back, rather than being lost.
    ~Awaiter() {
      if (!granted_) return;
      s_.granted_waiters_.erase(this);
      s_.release();
    }
    bool await_ready() {
      if (begin()) return true;
      return s_.try_acquire();
    }
    using ListWaiter::await_suspend;
    Permit await_resume() {
      if (std::exchange(granted_, false)) s_.granted_waiters_.erase(this);
      check("Semaphore acquire");
      return Permit(s_);
    }

   private:
    friend class Semaphore;
    Semaphore& s_;
    bool granted_ = false;
  };
  [[nodiscard]] Awaiter acquire() noexcept { return Awaiter(*this); }

 private:
  detail::WaitList waiters_;
  detail::WaitList granted_waiters_;  // waiters handed a permit, not yet resumed
  std::size_t permits_;
};

/// A bounded FIFO between tasks (asyncio.Queue with a maxsize, and its shutdown()). put()
/// waits while the queue is full, get() while it is empty; items are handed over in order,
/// and waiting putters and getters are served in the order they came. close() wakes every
/// waiter: a put() then throws errc::closed, and a get() returns what is left, then throws
/// errc::closed. A cancelled put() has not queued its item; a cancelled get() took none.
template <class T>
class Queue {
 public:
  /// `capacity` items at most (at least 1).
  explicit Queue(std::size_t capacity) : capacity_(capacity) {
    if (capacity == 0) throw std::invalid_argument("sockpat: a Queue needs a capacity of at least 1");
  }
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;
  ~Queue() {
    getters_.complete_all(detail::canceled());
    putters_.complete_all(detail::canceled());
    // A getter handed an item and not yet resumed keeps it, and no longer refers to the queue.
    while (detail::Waiter* w = handed_getters_.pop_front()) static_cast<GetAwaiter*>(w)->handed_ = false;
  }

  [[nodiscard]] std::size_t size() const noexcept { return items_.size(); }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] bool empty() const noexcept { return items_.empty(); }
  [[nodiscard]] bool full() const noexcept { return items_.size() >= capacity_; }
  [[nodiscard]] bool closed() const noexcept { return closed_; }

  /// Queues `value` if there is room (or hands it to a waiting getter); never suspends. On
  /// false (full or closed) `value` is left as it was.
  [[nodiscard]] bool try_put(T&& value) { return offer(value); }
  [[nodiscard]] bool try_put(const T& value) {
    T copy(value);
    return offer(copy);
  }
  /// The oldest item, if there is one; never suspends.
  [[nodiscard]] std::optional<T> try_get() {
    if (items_.empty()) return std::nullopt;
    std::optional<T> out(std::move(items_.front()));
    items_.pop_front();
    refill();
    return out;
  }

  /// Ends the queue: pending and later put()s throw errc::closed; get()s drain what is left,
  /// then throw errc::closed. Idempotent.
  void close() noexcept {
    if (closed_) return;
    closed_ = true;
    putters_.complete_all(make_error_code(errc::closed));
    getters_.complete_all(make_error_code(errc::closed));
  }

  class [[nodiscard]] PutAwaiter final : private detail::ListWaiter {
   public:
    PutAwaiter(Queue& q, T&& v) : ListWaiter(q.putters_), q_(q), value_(std::move(v)) {}
    using ListWaiter::cancel_before_start;  // then it queues nothing
    bool await_ready() {
      if (begin() || q_.closed_) return true;
      done_ = q_.offer(value_);
      return done_;
    }
    using ListWaiter::await_suspend;
    void await_resume() const {
      check("Queue put");
      if (!done_) throw std::system_error(make_error_code(errc::closed), "Queue put");
    }

   private:
    friend class Queue;
    Queue& q_;
    T value_;
    bool done_ = false;
  };

  class [[nodiscard]] GetAwaiter final : private detail::ListWaiter {
   public:
    explicit GetAwaiter(Queue& q) noexcept : ListWaiter(q.getters_), q_(q) {}
    using ListWaiter::cancel_before_start;  // then it takes no item
    GetAwaiter(const GetAwaiter&) = delete;
    GetAwaiter& operator=(const GetAwaiter&) = delete;
    // An item handed over to a task that was destroyed before it resumed (its loop went)
    // goes back to the head of the queue, rather than being lost.
    ~GetAwaiter() {
      if (!handed_) return;
      q_.handed_getters_.erase(this);
      q_.give_back(std::move(*slot_));
    }
    bool await_ready() {
      if (begin()) return true;
      slot_ = q_.try_get();
      return slot_.has_value() || q_.closed_;
    }
    using ListWaiter::await_suspend;
    T await_resume() {
      if (std::exchange(handed_, false)) q_.handed_getters_.erase(this);
      check("Queue get");
      if (!slot_) throw std::system_error(make_error_code(errc::closed), "Queue get");
      return std::move(*slot_);
    }

   private:
    friend class Queue;
    Queue& q_;
    std::optional<T> slot_;
    bool handed_ = false;  // slot_ was filled by a putter while it waited, and not yet taken
  };

  /// Waits for room, then queues `value`. Throws std::system_error: errc::closed, or
  /// operation_canceled (the item was not queued).
  [[nodiscard]] PutAwaiter put(T value) { return PutAwaiter(*this, std::move(value)); }
  /// Waits for an item. Throws std::system_error: errc::closed once closed and drained, or
  /// operation_canceled (no item was taken).
  [[nodiscard]] GetAwaiter get() noexcept { return GetAwaiter(*this); }

 private:
  // A waiting getter is served before the buffer, which is then empty; otherwise the item is
  // buffered if there is room and no earlier putter waits (they keep their turn).
  bool offer(T& value) {
    if (closed_) return false;
    if (auto* g = static_cast<GetAwaiter*>(static_cast<detail::Waiter*>(getters_.pop_front()))) {
      g->slot_.emplace(std::move(value));
      hand(g);
      return true;
    }
    if (items_.size() >= capacity_ || !putters_.empty()) return false;
    items_.push_back(std::move(value));
    return true;
  }
  void hand(GetAwaiter* g) noexcept {
    g->handed_ = true;
    handed_getters_.push_back(g);  // its links are free once it has left getters_
    g->complete();
  }
  // An item a getter was handed but never took: the oldest item, so it goes first again (to
  // the next waiting getter, or to the head of the buffer, which may then hold one too many
  // for a moment rather than lose it). Never throws from a destructor: without memory for
  // it, the item is dropped.
  void give_back(T&& value) noexcept {
    try {
      if (auto* g = static_cast<GetAwaiter*>(static_cast<detail::Waiter*>(getters_.pop_front()))) {
        g->slot_.emplace(std::move(value));
        hand(g);
        return;
      }
      items_.push_front(std::move(value));
    } catch (...) {
    }
  }
  // Room was made: the longest-waiting putter's item moves in.
  void refill() {
    if (items_.size() >= capacity_) return;
    if (auto* p = static_cast<PutAwaiter*>(static_cast<detail::Waiter*>(putters_.pop_front()))) {
      items_.push_back(std::move(p->value_));
      p->done_ = true;
      p->complete();
    }
  }

  std::deque<T> items_;
  std::size_t capacity_;
  detail::WaitList getters_;
  detail::WaitList putters_;
  detail::WaitList handed_getters_;  // getters handed an item, not yet resumed
  bool closed_ = false;
};

}  // namespace sockpat

#endif  // SOCKPAT_SYNC_HPP

// sockpat: the waiting core. How an awaited operation suspends on the running loop, is
// cancelled, and resumes: written once here, for every awaiter that waits on something other
// than a descriptor (timers, events, queues, semaphores).
#ifndef SOCKPAT_DETAIL_WAITER_HPP
#define SOCKPAT_DETAIL_WAITER_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock, std::chrono::ceil
#include <coroutine>     // std::coroutine_handle
#include <cstddef>       // std::size_t, std::ptrdiff_t
#include <new>           // std::bad_alloc
#include <optional>      // std::optional: the stop callback
#include <stop_token>    // std::stop_token, std::stop_callback
#include <string>        // std::string, std::to_string: error messages
#include <system_error>  // std::error_code, std::system_error
#include <utility>       // std::move
#include <vector>        // std::vector: the waits parked while their loop closes

#include "sockpat/detail/reactor.hpp"
#include "sockpat/detail/wait.hpp"  // steady_time, no_deadline

namespace sockpat::detail {

inline std::error_code canceled() noexcept { return make_errc(std::errc::operation_canceled); }

/// Appends "N ms" (rounded up), as every timeout message says a duration.
inline std::string& append_ms(std::string& s, std::chrono::steady_clock::duration d) {
  return s.append(std::to_string(std::chrono::ceil<std::chrono::milliseconds>(d).count())).append(" ms");
}
/// For a timeout with a known duration, appends " after N ms": "read from PEER after 50 ms".
/// `waited` is zero when the bound was a time point (no duration to name).
inline std::string& append_waited(std::string& s, std::error_code ec, std::chrono::steady_clock::duration waited) {
  if (ec == std::errc::timed_out && waited > waited.zero()) append_ms(s.append(" after "), waited);
  return s;
}

struct NotifyStop {
  Reactor* reactor;
  void operator()() const noexcept { reactor->notify_stop(); }
};

/// The deadline of an awaited operation, written once for every awaiter that takes one: a time
/// point that ends the wait with timed_out (through the Pending's on_timer) and a stop token
/// that ends it with operation_canceled (through its cancel), plus the timeout it was made
/// from, for the message. NoDeadline is its empty twin, for an awaiter called without one:
/// `[[no_unique_address]]`, it adds nothing to the awaiter.
class DeadlinePart {
 public:
  DeadlinePart(steady_time at, std::stop_token stop, std::chrono::steady_clock::duration timeout) noexcept
      : at_(at), stop_(std::move(stop)), timeout_(timeout) {}
  // Moved only before it watches (from the call into its awaiter): there is no callback yet.
  DeadlinePart(DeadlinePart&& o) noexcept : at_(o.at_), stop_(std::move(o.stop_)), timeout_(o.timeout_) {}
  DeadlinePart& operator=(DeadlinePart&&) = delete;
  ~DeadlinePart() = default;

  [[nodiscard]] bool stop_requested() const noexcept { return stop_.stop_requested(); }
  [[nodiscard]] bool passed() const noexcept { return at_ != no_deadline && std::chrono::steady_clock::now() >= at_; }
  [[nodiscard]] std::chrono::steady_clock::duration timeout() const noexcept { return timeout_; }

  /// Arms `p`'s timer and stop watch on `r`, once `p` waits.
  void watch(Pending& p, Reactor& r) noexcept {
    if (at_ != no_deadline) {
      p.when = at_;
      r.add_timer(&p);
    }
    if (stop_.stop_possible()) {
      p.stop = &stop_;
      r.add_stoppable(&p);
      on_stop_.emplace(stop_, NotifyStop{&r});
    }
  }
  /// Disarms them (the wait ended, or is cancelled).
  static void unwatch(Pending& p, Reactor& r) noexcept {
    if (p.heap_index != not_in_heap) r.remove_timer(&p);
    if (p.stop != nullptr) {
      r.remove_stoppable(&p);
      p.stop = nullptr;
    }
  }
  /// Drops the stop callback: in await_resume, on the loop's thread.
  void release() noexcept { on_stop_.reset(); }

 private:
  steady_time at_;
  std::stop_token stop_;
  std::chrono::steady_clock::duration timeout_;
  std::optional<std::stop_callback<NotifyStop>> on_stop_;
};

struct NoDeadline {
  [[nodiscard]] static constexpr bool stop_requested() noexcept { return false; }
  [[nodiscard]] static constexpr bool passed() noexcept { return false; }
  [[nodiscard]] static constexpr std::chrono::steady_clock::duration timeout() noexcept { return {}; }
  static void watch(Pending&, Reactor&) noexcept {}
  static void unwatch(Pending&, Reactor&) noexcept {}
  static void release() noexcept {}
};

/// One suspended coroutine. The awaiter that derives from it calls begin() in await_ready,
/// arm() in await_suspend, and complete() when what it waits for has happened; cancel (a
/// cancelled scope, a closing loop) ends the wait with operation_canceled through the same
/// complete(), after unlink() has taken the waiter out of whatever list it sits in.
/// A wait awaited by a task already cancelled does not start: the task's promise calls
/// cancel_before_start() (PromiseBase::await_transform), begin() then returns true, and the
/// awaiter reports operation_canceled as it reports its other errors. So await_ready must call
/// begin() before it takes anything (an item, a permit, bytes), and await_resume must check
/// error() before it hands anything out.
/// The coroutine always resumes from the loop (schedule), never inside the caller of
/// complete(): a producer that wakes ten consumers keeps running until it suspends itself.
class Waiter : public Pending {
 public:
  /// The operation's outcome once resumed: empty, operation_canceled, or the operation's error.
  [[nodiscard]] std::error_code error() const noexcept { return ec_; }

  /// The awaiting task is cancelled: the wait ends before it starts, with operation_canceled.
  void cancel_before_start() noexcept { ec_ = canceled(); }

  /// For await_ready: binds the loop of this thread; true (do not suspend) when it is closing.
  /// A coroutine that keeps waiting while its loop closes (it catches operation_canceled and
  /// waits again) gets a few such failures at once, then its wait suspends all the same, with
  /// operation_canceled, and the loop's shutdown cancels it on its next round: so it gives
  /// the loop back, and the shutdown's bounded rounds end (then its task is destroyed).
  // Always inlined, as arm() and the constructor: GCC left them out of line once the
  // awaiters became templates (callgrind: +60 instructions per echoed message).
  [[gnu::always_inline]] bool begin() {
    bind();
    if (reactor_->closing()) {
      ec_ = canceled();
      if (reactor_->spend_inline()) return true;
      park_ = true;  // arm() suspends it, whatever its scope says
      return false;
    }
    return static_cast<bool>(ec_);
  }
  /// begin() without the closing check: binds the loop of this thread (throws if none).
  void bind() { reactor_ = &current_reactor(); }

  /// For await_suspend: false (resume at once, with operation_canceled) when the caller's
  /// scope is already cancelled; otherwise the waiter is the scope's current leaf.
  template <class Promise>
  [[gnu::always_inline]] bool arm(std::coroutine_handle<Promise> h) noexcept {
    if (park_) return park(h);
    if (CancelScope* s = scope_of(h); s != nullptr && s->cancelled()) {
      ec_ = canceled();
      return false;
    }
    attach(h);
    return true;
  }

  /// The waits that suspended while their loop was closing (begin()): the loop's shutdown
  /// cancels them on each of its rounds. One loop per thread, so one list per thread.
  static std::vector<Waiter*>& parked() noexcept {
    thread_local std::vector<Waiter*> list;
    return list;
  }
  /// For the loop's shutdown: cancels every parked wait (its coroutine is scheduled).
  static void cancel_parked() noexcept {
    auto& list = parked();
    while (!list.empty()) {
      Waiter* w = list.back();
      list.pop_back();
      w->park_ = false;
      w->cancel(canceled());
    }
  }

 protected:
  /// arm() without the cancelled check, for a waiter that handles that itself.
  template <class Promise>
  void attach(std::coroutine_handle<Promise> h) noexcept {
    scope_ = scope_of(h);
    handle_ = h;
    if (scope_ != nullptr) scope_->leaf = this;
    armed_ = true;
  }
  void set_error(std::error_code ec) noexcept { ec_ = ec; }
  /// The outcome itself, for an operation that reports into a std::error_code&.
  [[nodiscard]] std::error_code& error_slot() noexcept { return ec_; }

 public:
  /// Ends the wait and schedules the coroutine (with `ec`, when given). Idempotent. Two
  /// overloads, not a default argument: a default std::error_code costs a call to
  /// system_category() on the hot path.
  void complete() noexcept {
    if (!armed_) return;
    armed_ = false;
    if (scope_ != nullptr && scope_->leaf == this) scope_->leaf = nullptr;
    if (park_) unpark();
    reactor_->schedule(handle_);
  }
  void complete(std::error_code ec) noexcept {
    if (!armed_) return;
    ec_ = ec;
    complete();
  }

  /// complete() for a waiter whose coroutine is resumed by symmetric transfer (from the end
  /// of a task it waited for): returns the handle to transfer to instead of scheduling it.
  [[nodiscard]] std::coroutine_handle<> finish() noexcept {
    armed_ = false;
    if (scope_ != nullptr && scope_->leaf == this) scope_->leaf = nullptr;
    if (park_) unpark();
    return handle_;
  }
  [[nodiscard]] std::coroutine_handle<> finish(std::error_code ec) noexcept {
    ec_ = ec;
    return finish();
  }

  /// Throws std::system_error(error(), what) when the wait ended in an error.
  void check(const char* what) const {
    if (ec_) throw std::system_error(ec_, what);
  }

  /// What a cancelled scope or a closing loop calls: by default, stop waiting and resume
  /// with `why`. A waiter that must see work end before it resumes (a group's join) overrides it.
  void cancel(std::error_code why) noexcept override {
    if (!armed_) return;
    unlink();
    complete(why);
  }

  /// True between arm() and complete().
  [[nodiscard]] bool waiting() const noexcept { return armed_; }

  // An intrusive FIFO link, for the lists of WaitList.
  Waiter* prev = nullptr;
  Waiter* next = nullptr;

 protected:
  [[gnu::always_inline]] Waiter() noexcept {}  // NOLINT(modernize-use-equals-default): for the attribute
  Waiter(const Waiter&) = default;
  Waiter& operator=(const Waiter&) = default;
  ~Waiter() {
    if (park_) unpark();  // its task was destroyed while parked
  }

  /// Takes the waiter out of the list, timer or registration it waits in; called on cancel.
  virtual void unlink() noexcept {}

  [[nodiscard]] Reactor& reactor() const noexcept { return *reactor_; }

 private:
  template <class Promise>
  bool park(std::coroutine_handle<Promise> h) noexcept {
    try {
      parked().push_back(this);
    } catch (const std::bad_alloc&) {
      park_ = false;
      return false;  // no room to park it: it fails at once, as before
    }
    attach(h);
    return true;
  }
  void unpark() noexcept {
    park_ = false;
    auto& list = parked();
    for (std::size_t i = list.size(); i-- > 0;) {
      if (list[i] == this) {
        list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
        return;
      }
    }
  }

  std::error_code ec_;
  Reactor* reactor_ = nullptr;
  CancelScope* scope_ = nullptr;
  std::coroutine_handle<> handle_;
  bool armed_ = false;
  bool park_ = false;  ///< set by begin() on a closing loop; in parked() once armed
};

/// A FIFO of waiters, linked through the waiters themselves: waiting allocates nothing.
class WaitList {
 public:
  [[nodiscard]] bool empty() const noexcept { return head_ == nullptr; }
  [[nodiscard]] Waiter* front() const noexcept { return head_; }

  void push_back(Waiter* w) noexcept {
    w->next = nullptr;
    w->prev = tail_;
    if (tail_ != nullptr) {
      tail_->next = w;
    } else {
      head_ = w;
    }
    tail_ = w;
  }
  void erase(Waiter* w) noexcept {
    if (w->prev != nullptr) {
      w->prev->next = w->next;
    } else if (head_ == w) {
      head_ = w->next;
    } else {
      return;  // not in this list
    }
    if (w->next != nullptr) {
      w->next->prev = w->prev;
    } else {
      tail_ = w->prev;
    }
    w->prev = w->next = nullptr;
  }
  Waiter* pop_front() noexcept {
    Waiter* w = head_;
    if (w != nullptr) erase(w);
    return w;
  }
  /// Completes every waiter, in order (with `ec`, when given).
  void complete_all() noexcept {
    while (Waiter* w = pop_front()) w->complete();
  }
  void complete_all(std::error_code ec) noexcept {
    while (Waiter* w = pop_front()) w->complete(ec);
  }

 private:
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
};

/// A Waiter that waits in a WaitList until its owner completes it: the awaiters of an event, a
/// queue, a semaphore. The derived awaiter adds await_ready and await_resume.
class ListWaiter : public Waiter {
 public:
  explicit ListWaiter(WaitList& list) noexcept : list_(&list) {}
  ListWaiter(const ListWaiter&) = default;
  ListWaiter& operator=(const ListWaiter&) = default;
  // A task destroyed while it waits (its loop gave up on it) leaves no waiter in the list.
  ~ListWaiter() {
    if (waiting()) list_->erase(this);
  }

  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
    if (!arm(h)) return false;
    list_->push_back(this);
    return true;
  }

 protected:
  void unlink() noexcept override { list_->erase(this); }

 private:
  WaitList* list_;
};

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_WAITER_HPP

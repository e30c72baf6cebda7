// sockpat: Task<T>, the lazy coroutine type of the event-loop layer, and what combines tasks:
// gather, wait_for, sleep. (create_task and run need the loop: event_loop.hpp.)
#ifndef SOCKPAT_TASK_HPP
#define SOCKPAT_TASK_HPP

#include <chrono>        // std::chrono::steady_clock, std::chrono::duration
#include <coroutine>     // std::coroutine_handle, std::suspend_always, std::noop_coroutine
#include <cstddef>       // std::size_t
#include <cstdint>       // std::uintptr_t: Continuation
#include <exception>     // std::exception_ptr, std::rethrow_exception, std::terminate
#include <new>           // placement new, ::operator new
#include <optional>      // std::optional
#include <string>        // std::string: Result::what
#include <stdexcept>     // std::logic_error
#include <system_error>  // std::error_code, std::system_error
#include <type_traits>   // std::is_void_v, std::remove_cvref_t, std::is_move_constructible_v
#include <utility>       // std::exchange, std::move
#include <vector>        // std::vector

#include "sockpat/detail/per_thread.hpp"  // per_thread: the frame cache
#include "sockpat/detail/reactor.hpp"
#include "sockpat/detail/waiter.hpp"  // Waiter, canceled: sleep

namespace sockpat {

template <class T = void>
class Task;

namespace detail {

/// Coroutine frames come from a small per-thread cache of freed frames, so that a task
/// started per message does not cost a heap allocation in steady state. The cache is freed
/// when its thread ends.
class FrameCache {
 public:
  static constexpr std::size_t granule = 16;   // fine-grained: a frame held per idle connection
  static constexpr std::size_t classes = 128;  // frames up to 2 KiB are cached
  static constexpr std::size_t max_cached = 256;

  static void* allocate(std::size_t n) {
    const std::size_t c = class_of(n);
    if (c < classes) {
      auto& cache = per_thread<FrameCache>();
      if (Free* f = cache.free_[c]) {
        cache.free_[c] = f->next;
        --cache.count_[c];
        return f;
      }
      return ::operator new((c + 1) * granule);
    }
    return ::operator new(n);
  }
  static void deallocate(void* p, std::size_t n) noexcept {
    const std::size_t c = class_of(n);
    if (c < classes) {
      try {
        auto& cache = per_thread<FrameCache>();
        if (cache.count_[c] < max_cached) {
          cache.free_[c] = new (p) Free{cache.free_[c]};
          ++cache.count_[c];
          return;
        }
      } catch (const std::bad_alloc&) {
        // A thread with no cache yet, and no memory to make one: free the frame.
      }
    }
    ::operator delete(p);
  }

  FrameCache() = default;
  FrameCache(const FrameCache&) = delete;
  FrameCache& operator=(const FrameCache&) = delete;
  ~FrameCache() {
    for (Free* f : free_) {
      while (f != nullptr) ::operator delete(std::exchange(f, f->next));
    }
  }

 private:
  struct Free {
    Free* next;
  };
  static std::size_t class_of(std::size_t n) noexcept { return n == 0 ? 0 : (n - 1) / granule; }
  Free* free_[classes] = {};
  unsigned short count_[classes] = {};  // at most max_cached
};

/// What every sockpat coroutine promise shares: its frame allocator and its cancel scope.
struct PromiseBase {
  static void* operator new(std::size_t n) { return FrameCache::allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { FrameCache::deallocate(p, n); }

  [[nodiscard]] CancelScope* cancel_scope() const noexcept { return scope; }

  CancelScope* scope = nullptr;
};

/// Told when one of the tasks it started finishes; returns the coroutine to resume then.
class Joiner {
 public:
  virtual std::coroutine_handle<> arrive() noexcept = 0;

 protected:
  Joiner() = default;
  Joiner(const Joiner&) = default;
  Joiner& operator=(const Joiner&) = default;
  ~Joiner() = default;
};

/// What a task's end resumes: the coroutine awaiting it, or a Joiner (a task run by a TaskSet
/// has no coroutine of its own around it), or nothing. One word, the Joiner's tagged by its low
/// bit (frames and Joiners are at least 2-aligned): a Joiner* beside the handle would grow
/// every task's frame by a word.
class Continuation {
 public:
  Continuation() noexcept = default;
  template <class Promise>
  Continuation(std::coroutine_handle<Promise> h) noexcept  // NOLINT: implicit, as the handle it replaced
      : bits_(reinterpret_cast<std::uintptr_t>(h.address())) {}
  explicit Continuation(Joiner* j) noexcept : bits_(reinterpret_cast<std::uintptr_t>(j) | 1) {}

  /// What the ending task transfers to (a Joiner is told first).
  [[nodiscard]] std::coroutine_handle<> take_turn() const noexcept {
    if ((bits_ & 1) != 0) [[unlikely]] return reinterpret_cast<Joiner*>(bits_ & ~std::uintptr_t{1})->arrive();
    if (bits_ == 0) return std::noop_coroutine();
    return std::coroutine_handle<>::from_address(reinterpret_cast<void*>(bits_));
  }

 private:
  std::uintptr_t bits_ = 0;
};

template <class Promise>
struct FinalAwaiter {
  static bool await_ready() noexcept { return false; }
  // Symmetric transfer: the awaiting coroutine resumes without growing the stack.
  std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) noexcept {
    return h.promise().continuation.take_turn();
  }
  static void await_resume() noexcept {}
};

template <class T>
struct TaskPromise : PromiseBase {
  Continuation continuation;
  std::exception_ptr error;
  std::optional<T> value;

  Task<T> get_return_object() noexcept;
  static std::suspend_always initial_suspend() noexcept { return {}; }
  static FinalAwaiter<TaskPromise> final_suspend() noexcept { return {}; }
  template <class U>
  void return_value(U&& v) {
    value.emplace(std::forward<U>(v));
  }
  void unhandled_exception() noexcept { error = std::current_exception(); }
  T take() {
    if (error) std::rethrow_exception(error);
    return std::move(*value);
  }
};

template <>
struct TaskPromise<void> : PromiseBase {
  Continuation continuation;
  std::exception_ptr error;

  Task<void> get_return_object() noexcept;
  static std::suspend_always initial_suspend() noexcept { return {}; }
  static FinalAwaiter<TaskPromise> final_suspend() noexcept { return {}; }
  static void return_void() noexcept {}
  void unhandled_exception() noexcept { error = std::current_exception(); }
  void take() const {
    if (error) std::rethrow_exception(error);
  }
};

}  // namespace detail

/// A lazy coroutine: it starts when awaited (or handed to EventLoop::create_task / run), then runs
/// until its first suspension. Move-only; destroying an unstarted or finished task frees it.
/// An exception thrown inside is rethrown by co_await. Cancelling its scope (wait_for,
/// server close, loop stop) makes its pending operation finish with operation_canceled.
template <class T>
class [[nodiscard]] Task {
 public:
  using promise_type = detail::TaskPromise<T>;
  using value_type = T;

  Task() noexcept = default;
  explicit Task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  Task(Task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() {
    if (h_) h_.destroy();
  }

  [[nodiscard]] bool valid() const noexcept { return static_cast<bool>(h_); }
  [[nodiscard]] bool done() const noexcept { return h_ && h_.done(); }

  struct Awaiter {
    std::coroutine_handle<promise_type> h;
    [[nodiscard]] bool await_ready() const noexcept { return !h || h.done(); }
    template <class Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> caller) noexcept {
      h.promise().continuation = caller;
      h.promise().scope = detail::scope_of(caller);  // cancelling the caller reaches into the callee
      return h;
    }
    T await_resume() {
      if (!h) throw std::logic_error("sockpat: co_await on an empty Task");
      return h.promise().take();
    }
  };
  Awaiter operator co_await() && noexcept { return Awaiter{h_}; }

  /// For the loop and the combinators: the coroutine itself.
  [[nodiscard]] std::coroutine_handle<promise_type> handle() const noexcept { return h_; }

 private:
  std::coroutine_handle<promise_type> h_;
};

template <class T>
Task<T> detail::TaskPromise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<TaskPromise>::from_promise(*this));
}
inline Task<void> detail::TaskPromise<void>::get_return_object() noexcept {
  return Task<void>(std::coroutine_handle<TaskPromise>::from_promise(*this));
}

namespace detail {

template <class T>
struct ChildSlot {
  std::optional<T> value;
  std::exception_ptr error;
};
template <>
struct ChildSlot<void> {
  bool value = false;
  std::exception_ptr error;
};

/// Runs one child task in a cancel scope of its own and tells its Joiner when it is done.
class Runner {
 public:
  struct promise_type : PromiseBase {
    CancelScope own;
    Joiner* joiner = nullptr;
    promise_type() noexcept { scope = &own; }
    Runner get_return_object() noexcept { return Runner(std::coroutine_handle<promise_type>::from_promise(*this)); }
    static std::suspend_always initial_suspend() noexcept { return {}; }
    struct Final {
      static bool await_ready() noexcept { return false; }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
        return h.promise().joiner->arrive();
      }
      static void await_resume() noexcept {}
    };
    static Final final_suspend() noexcept { return {}; }
    static void return_void() noexcept {}
    [[noreturn]] static void unhandled_exception() noexcept { std::terminate(); }  // run_child catches all
  };

  Runner() noexcept = default;
  explicit Runner(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  Runner(Runner&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Runner& operator=(Runner&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;
  ~Runner() {
    if (h_) h_.destroy();
  }

  void start(Joiner* j) noexcept {
    h_.promise().joiner = j;
    h_.resume();
  }
  [[nodiscard]] CancelScope& scope() noexcept { return h_.promise().own; }

 private:
  std::coroutine_handle<promise_type> h_;
};

template <class T>
Runner run_child(Task<T> task, ChildSlot<T>& slot) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(task);
      slot.value = true;
    } else {
      slot.value.emplace(co_await std::move(task));
    }
  } catch (...) {
    slot.error = std::current_exception();
  }
}

/// Waits for its tasks, run as children: the waiting core's waiter, resumed by the last child
/// to end. Cancelling it cancels the children; it still resumes only once they have ended.
template <class T>
class [[nodiscard]] GatherAwaiter final : private Waiter, private Joiner {
 public:
  explicit GatherAwaiter(std::vector<Task<T>> tasks) : tasks_(std::move(tasks)), slots_(tasks_.size()) {
    runners_.reserve(tasks_.size());
  }

  [[nodiscard]] bool await_ready() const noexcept { return tasks_.empty(); }

  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) {
    for (std::size_t i = 0; i < tasks_.size(); ++i) runners_.push_back(run_child(std::move(tasks_[i]), slots_[i]));
    // One extra count while starting: a child that finishes at once must not resume the
    // parent from inside this function.
    remaining_ = runners_.size() + 1;
    const CancelScope* scope = scope_of(h);
    attach(h);
    for (auto& r : runners_) {
      if (scope != nullptr && scope->cancelled()) r.scope().cancel(canceled());
      r.start(this);
    }
    if (--remaining_ == 0) {
      (void)finish();
      return false;
    }
    return true;
  }

  auto await_resume() {
    runners_.clear();
    if (first_error_) std::rethrow_exception(first_error_);
    if constexpr (std::is_void_v<T>) {
      return;
    } else {
      std::vector<T> out;
      out.reserve(slots_.size());
      for (auto& s : slots_) out.push_back(std::move(*s.value));
      return out;
    }
  }

 private:
  void cancel(std::error_code) noexcept override {
    for (auto& r : runners_) r.scope().cancel(canceled());
  }
  std::coroutine_handle<> arrive() noexcept override {
    if (!failed_) {
      for (auto& s : slots_) {
        if (s.error) {
          // The first failure cancels the siblings; the parent resumes once all have ended.
          failed_ = true;
          first_error_ = s.error;
          for (auto& r : runners_) r.scope().cancel(canceled());
          break;
        }
      }
    }
    if (--remaining_ != 0) return std::noop_coroutine();
    return finish();
  }

  std::vector<Task<T>> tasks_;
  std::vector<ChildSlot<T>> slots_;
  std::vector<Runner> runners_;
  std::size_t remaining_ = 0;
  bool failed_ = false;
  std::exception_ptr first_error_;
};

/// Runs one task as a child under a timer: the waiting core's waiter with a deadline.
template <class T>
class [[nodiscard]] WaitForAwaiter final : private Waiter, private Joiner {
 public:
  WaitForAwaiter(Task<T> task, std::chrono::steady_clock::duration timeout) : task_(std::move(task)), timeout_(timeout) {}

  bool await_ready() {
    bind();
    return false;
  }

  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) {
    runner_ = run_child(std::move(task_), slot_);
    remaining_ = 2;
    when = std::chrono::steady_clock::now() + timeout_;
    reactor().add_timer(this);
    const CancelScope* scope = scope_of(h);
    attach(h);
    if (scope != nullptr && scope->cancelled()) runner_.scope().cancel(canceled());
    runner_.start(this);
    if (--remaining_ == 0) {
      stop_timer();
      (void)finish();
      return false;
    }
    return true;
  }

  T await_resume() {
    runner_ = Runner();
    if (slot_.error) {
      if (timed_out_) throw std::system_error(detail::make_errc(std::errc::timed_out), "wait_for");
      std::rethrow_exception(slot_.error);
    }
    if constexpr (!std::is_void_v<T>) {
      return std::move(*slot_.value);
    }
  }

 private:
  void on_timer() noexcept override {
    timed_out_ = true;
    runner_.scope().cancel(canceled());
  }
  void cancel(std::error_code) noexcept override { runner_.scope().cancel(canceled()); }
  void stop_timer() noexcept {
    if (heap_index != not_in_heap) reactor().remove_timer(this);
  }
  std::coroutine_handle<> arrive() noexcept override {
    if (--remaining_ != 0) return std::noop_coroutine();
    stop_timer();
    return finish();
  }

  Task<T> task_;
  std::chrono::steady_clock::duration timeout_;
  ChildSlot<T> slot_;
  Runner runner_;
  std::size_t remaining_ = 0;
  bool timed_out_ = false;
};

class [[nodiscard]] SleepAwaiter final : private Waiter {
 public:
  explicit SleepAwaiter(std::chrono::steady_clock::time_point until) noexcept { when = until; }

  bool await_ready() { return begin(); }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
    if (!arm(h)) return false;
    reactor().add_timer(this);
    return true;
  }
  void await_resume() const { check("sleep"); }

 private:
  void on_timer() noexcept override { complete(); }
  void unlink() noexcept override {
    if (heap_index != not_in_heap) reactor().remove_timer(this);
  }
};

}  // namespace detail

/// Runs the tasks side by side on the running loop and returns their results in order. The
/// first exception cancels the others; it is rethrown once every task has ended.
template <class T>
[[nodiscard]] detail::GatherAwaiter<T> gather(std::vector<Task<T>> tasks) {
  return detail::GatherAwaiter<T>(std::move(tasks));
}

/// Runs `task` for at most `timeout`. On expiry the task is cancelled (its pending operation
/// finishes with operation_canceled), and once it has unwound, wait_for throws timed_out.
template <class T, class Rep, class Period>
[[nodiscard]] detail::WaitForAwaiter<T> wait_for(Task<T> task, std::chrono::duration<Rep, Period> timeout) {
  return detail::WaitForAwaiter<T>(std::move(task),
                                   std::chrono::ceil<std::chrono::steady_clock::duration>(timeout));
}

namespace detail {
template <class A>
decltype(auto) awaiter_of(A&& a) {
  if constexpr (requires { static_cast<A&&>(a).operator co_await(); }) {
    return static_cast<A&&>(a).operator co_await();
  } else if constexpr (requires { operator co_await(static_cast<A&&>(a)); }) {
    return operator co_await(static_cast<A&&>(a));
  } else {
    return static_cast<A&&>(a);
  }
}
template <class A>
using await_result_t = decltype(awaiter_of(std::declval<A>()).await_resume());

template <class T>
inline constexpr bool is_task_v = false;
template <class T>
inline constexpr bool is_task_v<Task<T>> = true;

// An awaitable run as a task, so that it can be given a cancel scope of its own. One that
// cannot be moved (an I/O awaiter) is used where it is: the temporary in the co_await
// expression outlives the task.
template <class A>
Task<await_result_t<A>> as_task(A awaitable) {
  co_return co_await std::move(awaitable);
}
template <class A>
Task<await_result_t<A>> as_task_ref(A& awaitable) {
  co_return co_await awaitable;
}
}  // namespace detail

/// Any other awaitable (a gather, a read, an accept, a group's join, ...) for at most
/// `timeout`, as for a task: on expiry its operation is cancelled and has ended before
/// wait_for throws timed_out. Await the result in the same expression
/// (`co_await wait_for(reader.read_chunk(), 5s)`): an I/O awaiter is not copied into it.
template <class A, class Rep, class Period>
  requires(!detail::is_task_v<std::remove_cvref_t<A>>) && requires(A&& a) { detail::awaiter_of(static_cast<A&&>(a)); }
[[nodiscard]] detail::WaitForAwaiter<detail::await_result_t<A>> wait_for(A&& awaitable,
                                                                         std::chrono::duration<Rep, Period> timeout) {
  using Plain = std::remove_cvref_t<A>;
  if constexpr (std::is_move_constructible_v<Plain>) {
    return wait_for(detail::as_task<Plain>(static_cast<A&&>(awaitable)), timeout);
  } else {
    return wait_for(detail::as_task_ref<Plain>(awaitable), timeout);
  }
}

/// A value, or the error a std::system_error carried instead: what as_result() gives, so that
/// a reset or a timeout can be handled as data rather than as an exception.
template <class T>
class [[nodiscard]] Result {
 public:
  explicit Result(T value) : value_(std::move(value)) {}
  Result(std::error_code ec, std::exception_ptr e) noexcept : ec_(ec), exception_(std::move(e)) {}

  explicit operator bool() const noexcept { return !ec_; }
  /// The error (empty when there is a value). Its exception's message names the operation and
  /// the peer: what().
  [[nodiscard]] std::error_code error() const noexcept { return ec_; }
  [[nodiscard]] std::string what() const {
    try {
      if (exception_) std::rethrow_exception(exception_);
    } catch (const std::exception& e) {
      return e.what();
    }
    return {};
  }
  /// The value; rethrows the original exception (a TransferError stays one) when there is none.
  T& value() & {
    if (ec_) std::rethrow_exception(exception_);
    return *value_;
  }
  T&& value() && { return std::move(value()); }
  T& operator*() & { return value(); }
  T* operator->() { return &value(); }

 private:
  std::optional<T> value_;
  std::error_code ec_;
  std::exception_ptr exception_;
};
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() noexcept = default;
  Result(std::error_code ec, std::exception_ptr e) noexcept : ec_(ec), exception_(std::move(e)) {}
  explicit operator bool() const noexcept { return !ec_; }
  [[nodiscard]] std::error_code error() const noexcept { return ec_; }
  void value() const {
    if (ec_) std::rethrow_exception(exception_);
  }

 private:
  std::error_code ec_;
  std::exception_ptr exception_;
};

namespace detail {
template <class R, class A>
Task<Result<R>> result_of(A& awaitable) {
  std::error_code ec;
  std::exception_ptr error;
  try {
    // A Task is awaited as an rvalue (its co_await is &&-qualified), an awaiter where it is:
    // an I/O awaiter is never moved.
    constexpr bool rvalue = requires { std::move(awaitable).operator co_await(); };
    if constexpr (std::is_void_v<R> && rvalue) {
      co_await std::move(awaitable);
      co_return Result<void>();
    } else if constexpr (std::is_void_v<R>) {
      co_await awaitable;
      co_return Result<void>();
    } else if constexpr (rvalue) {
      co_return Result<R>(co_await std::move(awaitable));
    } else {
      co_return Result<R>(co_await awaitable);
    }
  } catch (const std::system_error& e) {
    ec = e.code();
    error = std::current_exception();
  }
  co_return Result<R>(ec, std::move(error));
}
template <class R, class A>
Task<Result<R>> result_of_value(A awaitable) {
  co_return co_await result_of<R>(awaitable);
}
}  // namespace detail

/// The non-throwing form of any awaited call: `co_await as_result(reader.read_line())` gives a
/// Result holding the value, or the error of the std::system_error it threw (other exceptions
/// still propagate). Await it in the same expression, as wait_for.
template <class A>
  requires requires(A&& a) { detail::awaiter_of(static_cast<A&&>(a)); }
[[nodiscard]] Task<Result<detail::await_result_t<A>>> as_result(A&& awaitable) {
  using Plain = std::remove_cvref_t<A>;
  using R = detail::await_result_t<A>;
  if constexpr (std::is_move_constructible_v<Plain>) {
    return detail::result_of_value<R, Plain>(static_cast<A&&>(awaitable));
  } else {
    return detail::result_of<R, Plain>(awaitable);
  }
}

namespace detail {
class [[nodiscard]] YieldAwaiter final : private Waiter {
 public:
  bool await_ready() { return begin(); }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
    if (!arm(h)) return false;
    complete();  // behind what is ready now, after the loop has polled
    return true;
  }
  void await_resume() const { check("yield_now"); }
};
}  // namespace detail

/// Lets the other ready tasks, timers and I/O of the loop run, then goes on (asyncio's
/// `await asyncio.sleep(0)`). Throws operation_canceled when cancelled.
[[nodiscard]] inline detail::YieldAwaiter yield_now() noexcept { return {}; }

/// Suspends for `d` on the running loop (and yields to other tasks even when `d` is 0).
/// Throws std::system_error(operation_canceled) when cancelled.
template <class Rep, class Period>
[[nodiscard]] detail::SleepAwaiter sleep(std::chrono::duration<Rep, Period> d) {
  return detail::SleepAwaiter(std::chrono::steady_clock::now() +
                              std::chrono::ceil<std::chrono::steady_clock::duration>(d));
}
[[nodiscard]] inline detail::SleepAwaiter sleep_until(std::chrono::steady_clock::time_point t) {
  return detail::SleepAwaiter(t);
}

}  // namespace sockpat

#endif  // SOCKPAT_TASK_HPP

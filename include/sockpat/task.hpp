// sockpat: Task<T>, the lazy coroutine type of the event-loop layer, and what combines tasks:
// gather, wait_for, sleep. (create_task and run need the loop: event_loop.hpp.)
#ifndef SOCKPAT_TASK_HPP
#define SOCKPAT_TASK_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock, std::chrono::duration
#include <coroutine>     // std::coroutine_handle, std::suspend_always, std::noop_coroutine
#include <cstddef>       // std::size_t
#include <cstdint>       // std::uintptr_t: Continuation
#include <exception>     // std::exception_ptr, std::rethrow_exception, std::terminate
#include <new>           // placement new, ::operator new
#include <optional>      // std::optional
#include <string>        // std::string: Result::what
#include <stdexcept>     // std::logic_error
#include <system_error>  // std::error_code, std::system_error
#include <tuple>         // std::tuple: gather of different types
#include <type_traits>   // std::is_void_v, std::conditional_t, std::remove_cvref_t, std::is_move_constructible_v,
                         // std::is_lvalue_reference_v
#include <utility>       // std::exchange, std::move, std::declval, std::index_sequence
#include <variant>       // std::monostate: what a void task gives in a gather of different types
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

/// Awaitables that are no checkpoint (PromiseBase::await_transform): a shield, which is how a
/// cancelled task still awaits, and as_result's Task, whose awaited call reports the
/// cancellation as data. A type says so with `static constexpr bool ignores_cancellation = true`.
template <class A>
inline constexpr bool ignores_cancellation_v = requires { requires A::ignores_cancellation; };

/// The awaiter a co_await expression made, awaited where it is (PromiseBase::await_transform).
template <class W>
struct AwaiterRef {
  W* w;
  bool await_ready() { return w->await_ready(); }
  template <class Promise>
  decltype(auto) await_suspend(std::coroutine_handle<Promise> h) {
    return w->await_suspend(h);
  }
  decltype(auto) await_resume() { return w->await_resume(); }
};

[[noreturn]] inline void throw_canceled_checkpoint() {
  throw std::system_error(canceled(), "co_await in a cancelled task");
}
/// True while the thread's loop is being destroyed. Then a cancelled task's awaits go on to
/// the waiting core, whose waits fail at once and, retried, park (Waiter::begin): a task that
/// catches every error and awaits again still gives the closing loop back.
inline bool loop_closing() noexcept {
  const Reactor* r = thread_reactor();
  return r != nullptr && r->closing();
}

/// What every sockpat coroutine promise shares: its frame allocator, its cancel scope, and the
/// checkpoint at each co_await.
struct PromiseBase {
  static void* operator new(std::size_t n) { return FrameCache::allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { FrameCache::deallocate(p, n); }

  [[nodiscard]] CancelScope* cancel_scope() const noexcept { return scope; }

  /// Every co_await is a checkpoint (trio's rule): once the task's scope is cancelled, what it
  /// awaits ends at once with operation_canceled, ready or not. A wait of the waiting core
  /// reports it itself, naming its operation (or into its std::error_code); anything else (a
  /// Task, a TaskHandle) is not started and operation_canceled is thrown here. One load and a
  /// test while not cancelled: the hot path's cost.
  template <class A>
  auto await_transform(A&& a) const {
    if (scope != nullptr && scope->cancelled()) [[unlikely]] checkpoint(a);
    // Returned by value: GCC copies an awaiter that await_transform returns by reference, and
    // an I/O awaiter cannot be copied. So a reference to it goes on, or the awaiter that its
    // operator co_await makes.
    if constexpr (requires { static_cast<A&&>(a).operator co_await(); }) {
      using R = decltype(static_cast<A&&>(a).operator co_await());
      if constexpr (std::is_reference_v<R>) {
        auto&& w = static_cast<A&&>(a).operator co_await();
        return AwaiterRef<std::remove_reference_t<R>>{&w};
      } else {
        return static_cast<A&&>(a).operator co_await();
      }
    } else if constexpr (requires { operator co_await(static_cast<A&&>(a)); }) {
      using R = decltype(operator co_await(static_cast<A&&>(a)));
      if constexpr (std::is_reference_v<R>) {
        auto&& w = operator co_await(static_cast<A&&>(a));
        return AwaiterRef<std::remove_reference_t<R>>{&w};
      } else {
        return operator co_await(static_cast<A&&>(a));
      }
    } else {
      return AwaiterRef<std::remove_reference_t<A>>{&a};
    }
  }

  CancelScope* scope = nullptr;

 private:
  template <class A>
  static void checkpoint(A& a) {
    if constexpr (ignores_cancellation_v<std::remove_cvref_t<A>>) {
      return;
    } else if constexpr (requires { a.cancel_before_start(); }) {
      a.cancel_before_start();
    } else if (!loop_closing()) {
      throw_canceled_checkpoint();
    }
  }
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
/// server close, loop stop) makes its pending operation finish with operation_canceled, and
/// every later co_await in it too, ready or not (trio's checkpoints), except in a shield().
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
inline constexpr bool is_task_v = false;
template <class T>
inline constexpr bool is_task_v<Task<T>> = true;

/// What `f(args...)` returns when that is a Task: the callable form of create_task.
template <class F, class... Args>
concept task_factory = requires(F& f, Args&... args) { requires is_task_v<decltype(f(args...))>; };
template <class F, class... Args>
using factory_result_t = typename decltype(std::declval<F&>()(std::declval<Args&>()...))::value_type;

// The task `f(args...)` makes, run in a frame that holds `f` and `args` (decayed) by value, so
// that a lambda's captures live as long as the coroutine that reads them (C++ Core Guidelines
// CP.51). with_task_group holds its body the same way.
template <class F, class... Args>
Task<factory_result_t<F, Args...>> call_owned(F f, Args... args) {
  if constexpr (std::is_void_v<factory_result_t<F, Args...>>) {
    co_await f(args...);
  } else {
    co_return co_await f(args...);
  }
}


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
/// Each child tells its own entry when it ends, so an arrival looks at that child's slot
/// alone: linear in the number of children, not quadratic.
template <class T>
class [[nodiscard]] GatherAwaiter final : private Waiter {
 public:
  explicit GatherAwaiter(std::vector<Task<T>> tasks) : tasks_(std::move(tasks)), entries_(tasks_.size()) {}
  GatherAwaiter(GatherAwaiter&& o) noexcept : Waiter(o), tasks_(std::move(o.tasks_)), entries_(std::move(o.entries_)) {}
  GatherAwaiter& operator=(GatherAwaiter&&) = delete;

  // Then no task starts; on a closing loop they start cancelled, and their waits park.
  void cancel_before_start() noexcept {
    if (!loop_closing()) Waiter::cancel_before_start();
  }
  [[nodiscard]] bool await_ready() const noexcept { return tasks_.empty() || error(); }

  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) {
    for (std::size_t i = 0; i < tasks_.size(); ++i) {
      entries_[i].owner = this;
      entries_[i].runner = run_child(std::move(tasks_[i]), entries_[i].slot);
    }
    // One extra count while starting: a child that finishes at once must not resume the
    // parent from inside this function.
    remaining_ = entries_.size() + 1;
    const CancelScope* scope = scope_of(h);
    attach(h);
    for (auto& e : entries_) {
      if (scope != nullptr && scope->cancelled()) e.runner.scope().cancel(canceled());
      e.runner.start(&e);
    }
    if (--remaining_ == 0) {
      (void)finish();
      return false;
    }
    return true;
  }

  auto await_resume() {
    for (auto& e : entries_) e.runner = Runner();
    check("gather");
    if (first_error_) std::rethrow_exception(first_error_);
    if constexpr (std::is_void_v<T>) {
      return;
    } else {
      std::vector<T> out;
      out.reserve(entries_.size());
      for (auto& e : entries_) out.push_back(std::move(*e.slot.value));
      return out;
    }
  }

 private:
  struct Entry final : Joiner {
    ChildSlot<T> slot;
    Runner runner;
    GatherAwaiter* owner = nullptr;
    std::coroutine_handle<> arrive() noexcept override { return owner->arrived(*this); }
  };

  void cancel(std::error_code) noexcept override { cancel_children(); }
  void cancel_children() noexcept {
    for (auto& e : entries_) e.runner.scope().cancel(canceled());
  }
  std::coroutine_handle<> arrived(Entry& e) noexcept {
    if (!failed_ && e.slot.error) {
      // The first failure cancels the siblings; the parent resumes once all have ended.
      failed_ = true;
      first_error_ = e.slot.error;
      cancel_children();
    }
    if (--remaining_ != 0) return std::noop_coroutine();
    return finish();
  }

  std::vector<Task<T>> tasks_;
  std::vector<Entry> entries_;
  std::size_t remaining_ = 0;
  bool failed_ = false;
  std::exception_ptr first_error_;
};

/// True when `e` is a std::system_error(operation_canceled): how a cancelled task ends.
inline bool is_cancellation(const std::exception_ptr& e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const std::system_error& x) {
    return x.code() == std::errc::operation_canceled;
  } catch (...) {
  }
  return false;
}

/// Runs one task as a child under a timer: the waiting core's waiter with a deadline. Its
/// timeout names it in the error ("wait_for 50 ms"), so that of nested waits, the one that ran
/// out is known; a wait_until names the time it had left when it was made ("wait_until after 50 ms").
/// Shielded (shield()), the child is out of reach of the awaiting task's cancellation, which
/// stays on that task's scope for its next co_await; only the timer or a closing loop cancels it.
template <class T, bool Shield = false>
class [[nodiscard]] WaitForAwaiter final : private Waiter, private Joiner {
 public:
  static constexpr bool ignores_cancellation = Shield;
  // Then the task does not start; on a closing loop it starts cancelled, and its waits park.
  void cancel_before_start() noexcept {
    if (!loop_closing()) Waiter::cancel_before_start();
  }

  WaitForAwaiter(Task<T> task, std::chrono::steady_clock::duration timeout)
      : task_(std::move(task)), timeout_(timeout) {
    when = time_after(timeout);
  }
  WaitForAwaiter(Task<T> task, std::chrono::steady_clock::time_point until)
      : task_(std::move(task)), timeout_(until - std::chrono::steady_clock::now()), until_(true) {
    when = until;
  }

  bool await_ready() {
    bind();
    return static_cast<bool>(error());
  }

  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) {
    runner_ = run_child(std::move(task_), slot_);
    remaining_ = 2;
    reactor().add_timer(this);
    const CancelScope* scope = scope_of(h);
    attach(h);
    if (!Shield && scope != nullptr && scope->cancelled()) runner_.scope().cancel(canceled());
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
    check(name());
    if (slot_.error) {
      // The cancellation the timer caused is reported as the timeout; an error of the task's
      // own (one it met while unwinding, or one that beat the cancellation) as itself.
      if (timed_out_ && is_cancellation(slot_.error)) throw_timed_out();
      std::rethrow_exception(slot_.error);
    }
    if constexpr (!std::is_void_v<T>) {
      return std::move(*slot_.value);
    }
  }

 private:
  [[nodiscard]] const char* name() const noexcept { return Shield ? "shield" : until_ ? "wait_until" : "wait_for"; }
  [[noreturn]] void throw_timed_out() const {
    const auto ec = detail::make_errc(std::errc::timed_out);
    std::string what = name();
    if (until_) {
      append_waited(what, ec, timeout_);
    } else if (timeout_ > timeout_.zero()) {
      append_ms(what.append(1, ' '), timeout_);
    }
    throw std::system_error(ec, what);
  }
  void on_timer() noexcept override {
    timed_out_ = true;
    runner_.scope().cancel(canceled());
  }
  void cancel(std::error_code) noexcept override {
    if (Shield && !reactor().closing()) return;  // the task's cancel waits on its scope
    runner_.scope().cancel(canceled());
  }
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
  bool until_ = false;
};

class [[nodiscard]] SleepAwaiter final : private Waiter {
 public:
  explicit SleepAwaiter(std::chrono::steady_clock::time_point until) noexcept { when = until; }
  using Waiter::cancel_before_start;

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

namespace detail {
// A brace list's tasks, taken out of it: std::initializer_list cannot move, an array can.
template <class T, std::size_t N>
std::vector<Task<T>> moved_into_vector(Task<T> (&tasks)[N]) {
  std::vector<Task<T>> out;
  out.reserve(N);
  for (auto& t : tasks) out.push_back(std::move(t));
  return out;
}
}  // namespace detail

/// Runs the tasks side by side on the running loop and returns their results in order. The
/// first exception cancels the others; it is rethrown once every task has ended.
template <class T>
[[nodiscard]] detail::GatherAwaiter<T> gather(std::vector<Task<T>> tasks) {
  return detail::GatherAwaiter<T>(std::move(tasks));
}
/// gather of a brace list of tasks of one type: `co_await gather({fetch(a), fetch(b)})`.
template <class T, std::size_t N>
[[nodiscard]] detail::GatherAwaiter<T> gather(Task<T> (&&tasks)[N]) {
  return detail::GatherAwaiter<T>(detail::moved_into_vector(tasks));
}

namespace detail {
template <class T>
using gathered_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <class T>
Task<void> keep_result(Task<T> task, std::optional<gathered_t<T>>& out) {
  if constexpr (std::is_void_v<T>) {
    co_await std::move(task);
    out.emplace();
  } else {
    out.emplace(co_await std::move(task));
  }
}

template <class... T, std::size_t... I>
Task<std::tuple<gathered_t<T>...>> gather_tuple(std::index_sequence<I...>, Task<T>... tasks) {
  std::tuple<std::optional<gathered_t<T>>...> slots;
  {
    std::vector<Task<void>> all;
    all.reserve(sizeof...(T));
    (all.push_back(keep_result(std::move(tasks), std::get<I>(slots))), ...);
    co_await GatherAwaiter<void>(std::move(all));
  }
  co_return std::tuple<gathered_t<T>...>(std::move(*std::get<I>(slots))...);
}
}  // namespace detail

/// gather over tasks of different result types: `auto [n, name] = co_await gather(count(),
/// fetch_name());` A task of void gives std::monostate. The same rules as for a vector.
template <class... T>
  requires(sizeof...(T) > 0)
[[nodiscard]] Task<std::tuple<detail::gathered_t<T>...>> gather(Task<T>... tasks) {
  return detail::gather_tuple<T...>(std::index_sequence_for<T...>{}, std::move(tasks)...);
}

/// Runs `task` for at most `timeout`. On expiry the task is cancelled (its pending operation
/// finishes with operation_canceled), and once it has unwound, wait_for throws timed_out.
template <class T, class Rep, class Period>
[[nodiscard]] detail::WaitForAwaiter<T> wait_for(Task<T> task, std::chrono::duration<Rep, Period> timeout) {
  return detail::WaitForAwaiter<T>(std::move(task),
                                   std::chrono::ceil<std::chrono::steady_clock::duration>(timeout));
}

/// Runs `task` until `until` (a steady_clock time point), as wait_for: past it, the task is
/// cancelled and, once it has unwound, wait_until throws timed_out.
template <class T>
[[nodiscard]] detail::WaitForAwaiter<T> wait_until(Task<T> task, std::chrono::steady_clock::time_point until) {
  return detail::WaitForAwaiter<T>(std::move(task), until);
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


// An awaitable run as a task, so that it can be given a cancel scope of its own. One that
// cannot be moved (an I/O awaiter) is used where it is: the temporary in the co_await
// expression outlives the task.
template <class A>
Task<await_result_t<A>> as_task(A awaitable) {
  co_return co_await std::move(awaitable);
}
// An awaitable whose co_await is &&-qualified (a Task, a Borrowing) is awaited as an rvalue,
// an awaiter where it is: an I/O awaiter is never moved (nor copied, which GCC attempts for
// `co_await std::move(awaiter)`).
template <class A>
inline constexpr bool awaited_as_rvalue = requires(A&& a) { static_cast<A&&>(a).operator co_await(); };
template <class A>
Task<await_result_t<A>> as_task_ref(A& awaitable) {
  if constexpr (awaited_as_rvalue<A>) {
    co_return co_await std::move(awaitable);
  } else {
    co_return co_await awaitable;
  }
}

/// What wait_for and as_result return for an operation they cannot own (an I/O awaiter, which
/// does not move): they borrow it from the co_await expression it was written in, so the result
/// can be awaited only as that expression's temporary. `auto p = wait_for(r.read_chunk(), 1s);
/// co_await p;` does not compile: `p` would outlive the read it refers to.
template <class Inner>
class [[nodiscard]] Borrowing {
 public:
  explicit Borrowing(Inner inner) noexcept(std::is_nothrow_move_constructible_v<Inner>) : inner_(std::move(inner)) {}
  Borrowing(const Borrowing&) = delete;
  Borrowing& operator=(const Borrowing&) = delete;
  ~Borrowing() = default;

  decltype(auto) operator co_await() && { return awaiter_of(std::move(inner_)); }
  void cancel_before_start() noexcept
    requires requires(Inner& i) { i.cancel_before_start(); }
  {
    inner_.cancel_before_start();
  }

 private:
  Inner inner_;
};
template <class Inner>
inline constexpr bool ignores_cancellation_v<Borrowing<Inner>> = ignores_cancellation_v<Inner>;
}  // namespace detail

namespace detail {
/// wait_for, wait_until and shield on any awaitable: `limit` is a steady_clock duration or time point.
template <bool Shield, class A, class Limit>
auto wait_bounded(A&& awaitable, Limit limit) {
  using Plain = std::remove_cvref_t<A>;
  using Awaiter = WaitForAwaiter<await_result_t<A>, Shield>;
  if constexpr (is_task_v<Plain>) {
    return Awaiter(static_cast<A&&>(awaitable), limit);
  } else if constexpr (std::is_move_constructible_v<Plain>) {
    return Awaiter(as_task<Plain>(static_cast<A&&>(awaitable)), limit);
  } else if constexpr (std::is_lvalue_reference_v<A>) {
    return Awaiter(as_task_ref<Plain>(awaitable), limit);  // the caller's object: it stays
  } else {
    return Borrowing<Awaiter>(Awaiter(as_task_ref<Plain>(awaitable), limit));
  }
}
}  // namespace detail

/// Any other awaitable (a gather, a read, an accept, a group's join, ...) for at most
/// `timeout`, as for a task: on expiry its operation is cancelled and has ended before
/// wait_for throws timed_out. An I/O awaiter is not moved into it but borrowed: then the
/// result can only be awaited in the same expression (`co_await wait_for(r.read_chunk(), 5s)`).
template <class A, class Rep, class Period>
  requires(!detail::is_task_v<std::remove_cvref_t<A>>) && requires(A&& a) { detail::awaiter_of(static_cast<A&&>(a)); }
[[nodiscard]] auto wait_for(A&& awaitable, std::chrono::duration<Rep, Period> timeout) {
  return detail::wait_bounded<false>(static_cast<A&&>(awaitable),
                                     std::chrono::ceil<std::chrono::steady_clock::duration>(timeout));
}

/// Any other awaitable until `until`, as wait_for.
template <class A>
  requires(!detail::is_task_v<std::remove_cvref_t<A>>) && requires(A&& a) { detail::awaiter_of(static_cast<A&&>(a)); }
[[nodiscard]] auto wait_until(A&& awaitable, std::chrono::steady_clock::time_point until) {
  return detail::wait_bounded<false>(static_cast<A&&>(awaitable), until);
}

/// Awaits `awaitable` (a task, a write, a drain...) out of reach of its task's cancellation,
/// for at most `timeout`: the cleanup that must still run once a task is cancelled (trio's
/// CancelScope(shield=True), asyncio.shield). A cancel that arrives meanwhile is kept: the
/// next co_await after the shield throws it. On expiry the awaitable is cancelled and, once
/// it has unwound, shield throws timed_out ("shield 1000 ms"). A closing loop cancels it all
/// the same. An I/O awaiter is borrowed, as by wait_for.
template <class A, class Rep, class Period>
  requires requires(A&& a) { detail::awaiter_of(static_cast<A&&>(a)); }
[[nodiscard]] auto shield(A&& awaitable, std::chrono::duration<Rep, Period> timeout) {
  return detail::wait_bounded<true>(static_cast<A&&>(awaitable),
                                    std::chrono::ceil<std::chrono::steady_clock::duration>(timeout));
}
/// The same, bounded by a steady_clock time point.
template <class A>
  requires requires(A&& a) { detail::awaiter_of(static_cast<A&&>(a)); }
[[nodiscard]] auto shield(A&& awaitable, std::chrono::steady_clock::time_point until) {
  return detail::wait_bounded<true>(static_cast<A&&>(awaitable), until);
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
// as_result's task: the call it awaits is the checkpoint, and its cancellation comes back as data.
template <class R>
inline constexpr bool ignores_cancellation_v<Task<Result<R>>> = true;

template <class R, class A>
Task<Result<R>> result_of(A& awaitable) {
  std::error_code ec;
  std::exception_ptr error;
  try {
    if constexpr (std::is_void_v<R> && awaited_as_rvalue<A>) {
      co_await std::move(awaitable);
      co_return Result<void>();
    } else if constexpr (std::is_void_v<R>) {
      co_await awaitable;
      co_return Result<void>();
    } else if constexpr (awaited_as_rvalue<A>) {
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
/// still propagate). An I/O awaiter is borrowed, as by wait_for: await it in the same expression.
template <class A>
  requires requires(A&& a) { detail::awaiter_of(static_cast<A&&>(a)); }
[[nodiscard]] auto as_result(A&& awaitable) {
  using Plain = std::remove_cvref_t<A>;
  using R = detail::await_result_t<A>;
  if constexpr (std::is_move_constructible_v<Plain>) {
    return detail::result_of_value<R, Plain>(static_cast<A&&>(awaitable));
  } else if constexpr (std::is_lvalue_reference_v<A>) {
    return detail::result_of<R, Plain>(awaitable);
  } else {
    return detail::Borrowing<Task<Result<R>>>(detail::result_of<R, Plain>(awaitable));
  }
}

namespace detail {
class [[nodiscard]] YieldAwaiter final : private Waiter {
 public:
  using Waiter::cancel_before_start;
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

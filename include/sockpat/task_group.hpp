// sockpat: structured concurrency. TaskGroup (asyncio's TaskGroup, trio's nursery), which only
// with_task_group makes, and the TaskHandle its create_task returns; when_any, gather_settled
// and the Outcome they report; wait (asyncio.wait: done and pending at a timeout).
#ifndef SOCKPAT_TASK_GROUP_HPP
#define SOCKPAT_TASK_GROUP_HPP

#include <coroutine>     // std::coroutine_handle
#include <cstddef>       // std::size_t
#include <exception>     // std::exception_ptr, std::rethrow_exception
#include <optional>      // std::optional
#include <stdexcept>     // std::logic_error, std::invalid_argument
#include <system_error>  // std::system_error, std::errc
#include <type_traits>   // std::is_void_v, std::decay_t, std::remove_cvref_t, std::is_move_constructible_v
#include <utility>       // std::move, std::exchange, std::pair, std::forward, std::index_sequence, std::in_place_index
#include <variant>       // std::variant: when_any of different types
#include <vector>        // std::vector

#include "sockpat/detail/chrono.hpp"  // std::chrono::duration: wait's timeout
#include "sockpat/detail/waiter.hpp"
#include "sockpat/task.hpp"

namespace sockpat {

namespace detail {

class TaskSet;

/// What a TaskSet needs from the thread's loop: its own set (its create_task's), which adopts
/// the tasks of a set destroyed before they ended, and whether the loop is now destroying
/// the tasks that would not end. Set by EventLoop.
struct LoopSets {
  TaskSet* adopter = nullptr;
  bool abandoning = false;
};
inline LoopSets& loop_sets() noexcept {
  thread_local LoopSets sets;
  return sets;
}

/// One started task's place in its set, and its cancel scope. Owned together by its set (until
/// it ends) and by its handles. The task runs with no coroutine of its own around it: its end
/// tells this record (a Joiner) directly, and its outcome stays in its own promise.
class ChildBase : public Joiner {
 public:
  ChildBase(const ChildBase&) = delete;
  ChildBase& operator=(const ChildBase&) = delete;

  [[nodiscard]] bool finished() const noexcept { return finished_; }
  [[nodiscard]] virtual std::exception_ptr error() const noexcept = 0;
  void cancel() noexcept {
    if (!finished_) scope.cancel();
  }
  void retain() noexcept { ++refs_; }
  void release() noexcept {
    if (--refs_ == 0) delete this;
  }

  CancelScope scope;  ///< the task's own: cancelling it reaches the task's pending operation
  ChildBase* prev = nullptr;
  ChildBase* next = nullptr;
  TaskSet* set = nullptr;

 protected:
  ChildBase() = default;
  virtual ~ChildBase() = default;
  /// Called once the task has ended, before its set learns it (and may find itself empty):
  /// Child<T> wakes its handles' waiters, an owner's own record does its bookkeeping.
  virtual void ending() noexcept = 0;

 private:
  friend class TaskSet;
  /// Runs the task until its first suspension.
  virtual void start() noexcept = 0;
  /// Destroys the task without letting it end (a loop that is going).
  virtual void drop() noexcept = 0;
  std::coroutine_handle<> arrive() noexcept override;
  unsigned refs_ = 1;  // the set's
  bool finished_ = false;
};

/// A ChildBase holding its Task<T>: the task's promise is where its outcome stays.
template <class T>
class TaskRecord : public ChildBase {
 protected:
  explicit TaskRecord(Task<T> task) noexcept : task_(std::move(task)) {
    auto& p = task_.handle().promise();
    p.scope = &scope;
    p.continuation = Continuation(static_cast<Joiner*>(this));
  }
  [[nodiscard]] TaskPromise<T>& outcome() const noexcept { return task_.handle().promise(); }

 private:
  void start() noexcept final { task_.handle().resume(); }
  void drop() noexcept final { task_ = Task<T>(); }
  Task<T> task_;
};

template <class T>
class Child final : public TaskRecord<T> {
 public:
  explicit Child(Task<T> task) noexcept : TaskRecord<T>(std::move(task)) {}
  [[nodiscard]] std::exception_ptr error() const noexcept override { return this->outcome().error; }
  /// The task's result: its value (moved out once) or its exception.
  [[nodiscard]] TaskPromise<T>& result() const noexcept { return this->outcome(); }
  WaitList joiners;  ///< coroutines awaiting a handle of this task

 private:
  void ending() noexcept override { joiners.complete_all(); }
};

/// The set of tasks that one owner started: a group's children, or a loop's detached tasks.
/// Counts them, keeps their failures, cancels them together, and wakes a joiner when the last
/// one has ended. Policy by flags: fail_fast cancels the rest at the first failure.
class TaskSet {
 public:
  explicit TaskSet(bool fail_fast) noexcept : fail_fast_(fail_fast) {}
  TaskSet(const TaskSet&) = delete;
  TaskSet& operator=(const TaskSet&) = delete;
  ~TaskSet() {
    // Its owner joins it first (with_task_group's join, the loop's shutdown). A task still
    // running here (its server or node was destroyed, after cancelling it) goes on unwinding
    // on the loop, as one of the loop's own tasks: the loop reports its failure, cancels it and,
    // if it would not end, destroys it when it goes. When the loop is destroying its tasks
    // (this set's owner was one of them), the set's tasks are destroyed with it.
    LoopSets& loop = loop_sets();
    if (loop.abandoning) {
      abandon();
      return;
    }
    TaskSet* adopter = loop.adopter != this ? loop.adopter : nullptr;
    while (ChildBase* c = head_) {
      unlink(c);
      c->set = nullptr;
      if (adopter != nullptr) adopter->adopt(c);
    }
  }

  /// Starts `task`; the caller owns one reference to the returned child (a TaskHandle adopts
  /// it), taken before the task runs, so a task that ends at once is still there.
  template <class T>
  Child<T>* start(Task<T> task) {
    if (!task.valid()) throw std::invalid_argument("sockpat: create_task of an empty Task");
    return start_record(new Child<T>(std::move(task)));
  }
  /// start() of a record the caller made (a TaskRecord of its own): the set takes the reference
  /// it was made with, and the caller gets one more, as from start().
  template <class C>
  C* start_record(C* c) noexcept {
    link(c);
    if (cancelled_) c->scope.cancel();
    c->retain();
    static_cast<ChildBase*>(c)->start();
    return c;
  }
  /// Takes over a running task of a set that is going (with the set's reference to it).
  void adopt(ChildBase* c) noexcept {
    link(c);
    if (cancelled_) c->cancel();
  }

  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool cancelled() const noexcept { return cancelled_; }
  /// Cancels every task in the set now and every task started in it from now on.
  void cancel() noexcept {
    cancelled_ = true;
    for (ChildBase* c = head_; c != nullptr;) {
      ChildBase* next = c->next;  // a cancel may end c at once
      c->cancel();
      c = next;
    }
  }
  /// Destroys the tasks still in the set without letting them end: for a loop that is going
  /// and whose tasks would not unwind. Their handles stay valid and never complete.
  void abandon() noexcept {
    while (ChildBase* c = head_) {
      unlink(c);
      c->set = nullptr;
      c->drop();
      c->release();
    }
  }

  [[nodiscard]] const std::vector<std::exception_ptr>& failures() const noexcept { return failures_; }
  [[nodiscard]] std::exception_ptr first_failure() const noexcept {
    return failures_.empty() ? std::exception_ptr() : failures_.front();
  }

  /// The owner's hooks, given `context`: each failure as it happens (the loop reports them), and
  /// the set becoming empty (a server checks whether it has closed). Either may be empty.
  /// on_empty is the set's last step: it may end the owner's life, set included (a server that
  /// keeps itself alive while it has tasks).
  void (*on_failure)(void* context, std::exception_ptr) noexcept = nullptr;
  void (*on_empty)(void* context) noexcept = nullptr;
  void* context = nullptr;

  /// Waiters completed when the set becomes empty.
  WaitList empty_waiters;

 private:
  friend class ChildBase;
  void link(ChildBase* c) noexcept {
    c->set = this;
    c->prev = nullptr;
    c->next = head_;
    if (head_ != nullptr) head_->prev = c;
    head_ = c;
    ++size_;
  }
  void unlink(ChildBase* c) noexcept {
    if (c->prev != nullptr) c->prev->next = c->next;
    else head_ = c->next;
    if (c->next != nullptr) c->next->prev = c->prev;
    c->prev = c->next = nullptr;
    --size_;
  }
  void ended(ChildBase* c) noexcept {
    unlink(c);
    if (std::exception_ptr e = c->error(); e && !is_cancellation(e)) {
      try {
        failures_.push_back(e);
      } catch (...) {
        // Out of memory keeping a second failure: the first one is what join rethrows.
      }
      if (on_failure != nullptr) on_failure(context, e);
      if (fail_fast_) cancel();
    }
    if (size_ == 0) {
      empty_waiters.complete_all();
      if (on_empty != nullptr) on_empty(context);  // last: it may destroy this set
    }
  }

  ChildBase* head_ = nullptr;
  std::size_t size_ = 0;
  std::vector<std::exception_ptr> failures_;
  bool fail_fast_;
  bool cancelled_ = false;
};

inline std::coroutine_handle<> ChildBase::arrive() noexcept {
  finished_ = true;
  ending();
  if (TaskSet* s = std::exchange(set, nullptr)) s->ended(this);
  // The set's reference. The task's frame is suspended at its end, so it may be destroyed
  // from here; the outcome lives on in its promise while a handle holds the task.
  release();
  return std::noop_coroutine();
}

/// Waits until a set is empty. If the waiting coroutine is cancelled meanwhile, the set's
/// tasks are cancelled and the wait goes on until they have ended: nothing outlives a join.
class [[nodiscard]] SetJoin final : private Waiter {
 public:
  explicit SetJoin(TaskSet& set) noexcept : set_(set) {}
  SetJoin(const SetJoin&) = default;
  SetJoin& operator=(const SetJoin&) = delete;
  // A task destroyed while it joins (its loop gave up on it) leaves no waiter behind.
  ~SetJoin() {
    if (waiting()) set_.empty_waiters.erase(this);
  }
  /// A join is a checkpoint of its own kind: in a cancelled task it cancels the set's tasks
  /// and still waits for them to end, then throws operation_canceled.
  void cancel_before_start() noexcept { cancel_tasks(); }
  bool await_ready() {
    bind();
    return set_.size() == 0;
  }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
    if (CancelScope* s = scope_of(h); s != nullptr && s->cancelled()) cancel_tasks();
    if (set_.size() == 0) return false;
    attach(h);
    set_.empty_waiters.push_back(this);
    return true;
  }
  /// Rethrows operation_canceled if this wait was cancelled, else nothing: the set's failures
  /// are the owner's to report.
  void await_resume() const { check("join"); }

 private:
  void cancel(std::error_code why) noexcept override {
    if (!waiting()) return;
    set_error(why);
    cancel_tasks();  // the wait ends when they have
  }
  void cancel_tasks() noexcept {
    set_error(canceled());
    set_.cancel();
  }
  void unlink() noexcept override { set_.empty_waiters.erase(this); }
  TaskSet& set_;
};

/// Waits until a task has ended, taking nothing from it: what a TaskHandle's awaiter and
/// wait() share. Cancelling the waiting coroutine ends this wait, not the task.
template <class T>
class [[nodiscard]] TaskEnd : private Waiter {
 public:
  explicit TaskEnd(Child<T>* c) noexcept : c_(c) {}
  TaskEnd(const TaskEnd&) = default;
  TaskEnd& operator=(const TaskEnd&) = delete;
  // A task destroyed while it waits (its loop gave up on it) leaves no waiter behind.
  ~TaskEnd() {
    if (waiting()) c_->joiners.erase(this);
  }
  bool await_ready() {
    if (c_ == nullptr) throw std::logic_error("sockpat: co_await on an empty TaskHandle");
    return c_->finished() || begin();
  }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
    if (!arm(h)) return false;
    c_->joiners.push_back(this);
    return true;
  }
  void await_resume() const { check("TaskHandle wait"); }

 protected:
  [[nodiscard]] Child<T>* child() const noexcept { return c_; }

 private:
  void unlink() noexcept override { c_->joiners.erase(this); }
  Child<T>* c_;
};

}  // namespace detail

/// What create_task returns (TaskGroup's and EventLoop's): await it for the task's result (or its exception), cancel it, ask if
/// it is done. Copyable; the task runs on whether or not a handle is kept. Loop thread only.
template <class T = void>
class TaskHandle {
 public:
  TaskHandle() noexcept = default;
  /// Takes over one reference the caller holds (TaskSet::start's).
  explicit TaskHandle(detail::Child<T>* adopted) noexcept : c_(adopted) {}
  TaskHandle(const TaskHandle& o) noexcept : c_(o.c_) {
    if (c_ != nullptr) c_->retain();
  }
  TaskHandle(TaskHandle&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  TaskHandle& operator=(TaskHandle o) noexcept {
    std::swap(c_, o.c_);
    return *this;
  }
  ~TaskHandle() {
    if (c_ != nullptr) c_->release();
  }

  [[nodiscard]] bool valid() const noexcept { return c_ != nullptr; }
  [[nodiscard]] bool done() const noexcept { return c_ != nullptr && c_->finished(); }
  /// Handles are equal when they are of the same task (as asyncio compares tasks).
  friend bool operator==(const TaskHandle& a, const TaskHandle& b) noexcept { return a.c_ == b.c_; }
  /// For the combinators: the task's record.
  [[nodiscard]] detail::Child<T>* child() const noexcept { return c_; }
  /// Cancels the task: its pending operation ends with operation_canceled. No-op once done.
  void cancel() noexcept {
    if (c_ != nullptr) c_->cancel();
  }

  class [[nodiscard]] Awaiter final : public detail::TaskEnd<T> {
   public:
    using detail::TaskEnd<T>::TaskEnd;
    /// The task's value, moved out (so a value is taken once), or its exception rethrown.
    /// Cancelling the awaiting coroutine ends this wait, not the task.
    T await_resume() {
      detail::TaskEnd<T>::await_resume();
      auto& slot = this->child()->result();
      if (slot.error) std::rethrow_exception(slot.error);
      if constexpr (!std::is_void_v<T>) {
        if (!slot.value) throw std::logic_error("sockpat: a TaskHandle's value was already taken");
        T out = std::move(*slot.value);
        slot.value.reset();
        return out;
      }
    }
  };
  Awaiter operator co_await() const noexcept { return Awaiter(c_); }

 private:
  detail::Child<T>* c_ = nullptr;
};

class TaskGroup;
template <class F>
  requires detail::task_factory<F, TaskGroup>
Task<void> with_task_group(F body);

/// asyncio's TaskGroup, trio's nursery: the tasks started in it (create_task) run side by side,
/// and the first failure cancels the others. Only with_task_group() makes one, and it ends only
/// once every child has ended: no child outlives the group, by construction.
/// Loop thread only.
class TaskGroup {
 public:
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;

  /// Starts `task` now, as a child of the group. After the group failed or was cancelled,
  /// the task starts cancelled.
  template <class T>
  TaskHandle<T> create_task(Task<T> task) {
    return TaskHandle<T>(set_.start(std::move(task)));
  }
  /// Starts the task `f(args...)`, with `f` and `args` (decayed) kept alive in its frame until
  /// it ends: the safe way to start a capturing lambda, `create_task([&]() -> Task<void> {...})`.
  template <class F, class... Args>
    requires detail::task_factory<std::decay_t<F>, std::decay_t<Args>...>
  auto create_task(F&& f, Args&&... args) {
    return create_task(detail::call_owned<std::decay_t<F>, std::decay_t<Args>...>(std::forward<F>(f),
                                                                                   std::forward<Args>(args)...));
  }

  /// Cancels every child (and any started later).
  void cancel() noexcept { set_.cancel(); }
  /// The children still running.
  [[nodiscard]] std::size_t size() const noexcept { return set_.size(); }
  /// True once the group was cancelled or a child failed.
  [[nodiscard]] bool cancelled() const noexcept { return set_.cancelled(); }
  /// Every failure so far, first first (cancellations are not failures).
  [[nodiscard]] const std::vector<std::exception_ptr>& failures() const noexcept { return set_.failures(); }

 private:
  template <class F>
    requires detail::task_factory<F, TaskGroup>
  friend Task<void> with_task_group(F body);

  TaskGroup() = default;
  // Reached with children running only when with_task_group's frame is destroyed before it
  // ends (a loop that is going destroys the tasks that would not end): the set destroys them.
  ~TaskGroup() { set_.cancel(); }

  // Waits until every child has ended, then rethrows the first failure; operation_canceled if
  // the waiting coroutine was cancelled (its children were then cancelled, and have ended).
  // with_task_group's alone: a child that joined its own group would wait for itself, and
  // a body that must wait for some children before going on nests a with_task_group.
  class [[nodiscard]] JoinAwaiter {
   public:
    explicit JoinAwaiter(detail::TaskSet& s) noexcept : set_(s), wait_(s) {}
    void cancel_before_start() noexcept { wait_.cancel_before_start(); }
    bool await_ready() { return wait_.await_ready(); }
    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
      return wait_.await_suspend(h);
    }
    void await_resume() const {
      if (auto e = set_.first_failure()) std::rethrow_exception(e);
      wait_.await_resume();
    }

   private:
    detail::TaskSet& set_;
    detail::SetJoin wait_;
  };
  [[nodiscard]] JoinAwaiter join() noexcept { return JoinAwaiter(set_); }

  detail::TaskSet set_{true};
};

/// Runs `body(group)` with a new group, then waits until the group's children have ended,
/// whatever way the body ended: an exception from the body cancels them and is rethrown after
/// they have ended; otherwise the group's first failure is. Cancelling the caller cancels the
/// children, and the call still returns only after they have ended. The body's own locals end
/// with the body, before that wait: what the children share lives in the caller (or is theirs,
/// by create_task(f, args...)); a body that must wait for some children nests a with_task_group.
template <class F>
  requires detail::task_factory<F, TaskGroup>
Task<void> with_task_group(F body) {
  TaskGroup group;
  std::exception_ptr error;
  try {
    co_await body(group);
  } catch (...) {
    error = std::current_exception();
    group.cancel();
  }
  std::exception_ptr join_error;
  try {
    co_await group.join();
  } catch (...) {
    join_error = std::current_exception();
  }
  if (error) std::rethrow_exception(error);
  if (join_error) std::rethrow_exception(join_error);
}

/// One task's ending: a value or an exception (gather_settled, asyncio's return_exceptions).
template <class T>
struct Outcome {
  std::optional<T> value;
  std::exception_ptr error;
  [[nodiscard]] bool ok() const noexcept { return !error; }
  /// The value, or the exception rethrown.
  T& get() {
    if (error) std::rethrow_exception(error);
    return *value;
  }
};
template <>
struct Outcome<void> {
  std::exception_ptr error;
  [[nodiscard]] bool ok() const noexcept { return !error; }
  void get() const {
    if (error) std::rethrow_exception(error);
  }
};

namespace detail {
template <class T>
Task<void> settle(Task<T> task, Outcome<T>& out) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(task);
    } else {
      out.value.emplace(co_await std::move(task));
    }
  } catch (...) {
    out.error = std::current_exception();
  }
}

template <class T>
struct AnyState {
  std::size_t winner = static_cast<std::size_t>(-1);
  Outcome<T> outcome;
};
template <class T>
Task<void> race(Task<T> task, std::size_t index, AnyState<T>& state, TaskGroup& group) {
  Outcome<T> mine;
  co_await settle(std::move(task), mine);
  if (state.winner != static_cast<std::size_t>(-1) || group.cancelled()) co_return;  // lost, or all cancelled
  state.winner = index;
  state.outcome = std::move(mine);
  group.cancel();
}
}  // namespace detail

/// Runs the tasks side by side and returns every one's Outcome, in order, once all have
/// ended; a failure cancels nothing (asyncio's gather(..., return_exceptions=True)).
template <class T>
Task<std::vector<Outcome<T>>> gather_settled(std::vector<Task<T>> tasks) {
  std::vector<Outcome<T>> out(tasks.size());
  {
    std::vector<Task<void>> settled;
    settled.reserve(tasks.size());
    for (std::size_t i = 0; i < tasks.size(); ++i) settled.push_back(detail::settle(std::move(tasks[i]), out[i]));
    co_await gather(std::move(settled));
  }
  co_return out;
}

/// Runs the tasks side by side; the first to end, with a value or an exception, wins and the
/// others are cancelled. Returns once all have ended: the winner's index and its Outcome.
/// Throws std::invalid_argument for no tasks, operation_canceled if cancelled itself.
template <class T>
Task<std::pair<std::size_t, Outcome<T>>> when_any(std::vector<Task<T>> tasks) {
  if (tasks.empty()) throw std::invalid_argument("sockpat: when_any of no tasks");
  detail::AnyState<T> state;
  co_await with_task_group([&](TaskGroup& group) -> Task<void> {
    for (std::size_t i = 0; i < tasks.size(); ++i) group.create_task(detail::race(std::move(tasks[i]), i, state, group));
    co_return;
  });
  co_return std::pair<std::size_t, Outcome<T>>(state.winner, std::move(state.outcome));
}

/// gather_settled and when_any of a brace list of tasks of one type.
template <class T, std::size_t N>
Task<std::vector<Outcome<T>>> gather_settled(Task<T> (&&tasks)[N]) {
  return gather_settled(detail::moved_into_vector(tasks));
}
template <class T, std::size_t N>
Task<std::pair<std::size_t, Outcome<T>>> when_any(Task<T> (&&tasks)[N]) {
  return when_any(detail::moved_into_vector(tasks));
}

namespace detail {
template <class A>
concept awaitable = requires(A&& a) { awaiter_of(static_cast<A&&>(a)).await_ready(); };

// An awaitable as a task of its result; a task as itself. One that does not move (an I/O
// awaiter) is awaited where it is, as wait_for does: see borrowed_v.
template <class A>
auto task_of(A&& a) {
  using Plain = std::remove_cvref_t<A>;
  if constexpr (is_task_v<Plain>) {
    static_assert(!std::is_lvalue_reference_v<A>, "sockpat: when_any takes a Task by value: std::move it");
    return Plain(static_cast<A&&>(a));
  } else if constexpr (std::is_move_constructible_v<Plain>) {
    return as_task<Plain>(static_cast<A&&>(a));
  } else {
    return as_task_ref<Plain>(a);
  }
}
template <class A>
inline constexpr bool borrowed_v = !is_task_v<std::remove_cvref_t<A>> &&
                                   !std::is_move_constructible_v<std::remove_cvref_t<A>> &&
                                   !std::is_lvalue_reference_v<A>;

template <class V>
struct FirstOf {
  std::optional<V> value;
  std::exception_ptr error;
  bool decided = false;
};
// Runs the I-th task of a when_any; the first to end (with a value or an exception) decides,
// and cancels the others.
template <std::size_t I, class R, class V>
Task<void> race_at(Task<R> task, FirstOf<V>& first, TaskGroup& group) {
  std::optional<gathered_t<R>> value;
  std::exception_ptr error;
  try {
    if constexpr (std::is_void_v<R>) {
      co_await std::move(task);
      value.emplace();
    } else {
      value.emplace(co_await std::move(task));
    }
  } catch (...) {
    error = std::current_exception();
  }
  if (first.decided || group.cancelled()) co_return;  // lost, or all cancelled from outside
  first.decided = true;
  if (error) {
    first.error = error;
  } else {
    first.value.emplace(std::in_place_index<I>, std::move(*value));
  }
  group.cancel();
}
template <class... R, std::size_t... I>
Task<std::variant<gathered_t<R>...>> when_any_of(std::index_sequence<I...>, Task<R>... tasks) {
  using V = std::variant<gathered_t<R>...>;
  FirstOf<V> first;
  co_await with_task_group([&](TaskGroup& group) -> Task<void> {
    (group.create_task(race_at<I, R, V>(std::move(tasks), first, group)), ...);
    co_return;
  });
  if (first.error) std::rethrow_exception(first.error);
  co_return std::move(*first.value);
}
}  // namespace detail

/// when_any of tasks or awaitables of different types: `auto first = co_await when_any(
/// reader.read_line(), stop.wait());` Its variant's index() is the one that ended first, which
/// holds its value (std::monostate for void). The others are cancelled and have ended when it
/// returns; the first's exception is rethrown. An I/O awaiter is borrowed, as by wait_for.
template <class... A>
  requires(sizeof...(A) > 0 && (detail::awaitable<A> && ...))
[[nodiscard]] auto when_any(A&&... awaitables) {
  auto task = detail::when_any_of<detail::await_result_t<A>...>(std::index_sequence_for<A...>{},
                                                                 detail::task_of(static_cast<A&&>(awaitables))...);
  if constexpr ((detail::borrowed_v<A> || ...)) {
    return detail::Borrowing<decltype(task)>(std::move(task));
  } else {
    return task;
  }
}

/// What wait() returns: the tasks that had ended and those still running, each in the order given.
template <class T>
struct DoneAndPending {
  std::vector<TaskHandle<T>> done;
  std::vector<TaskHandle<T>> pending;
};

namespace detail {
template <class T>
Task<void> all_ended(const std::vector<TaskHandle<T>>& tasks) {
  for (const auto& t : tasks) co_await TaskEnd<T>(t.child());
}
}  // namespace detail

/// asyncio.wait(tasks, timeout=): waits until every task has ended or `timeout` has passed,
/// and says which had ended. It cancels nothing and takes nothing: await a done handle for its
/// value or exception; a pending one runs on, owned by whoever started it (its TaskGroup or the
/// loop), to await later or cancel. Throws std::invalid_argument for an empty handle, and
/// operation_canceled if cancelled itself (the tasks run on).
template <class T, class Rep, class Period>
Task<DoneAndPending<T>> wait(std::vector<TaskHandle<T>> tasks, std::chrono::duration<Rep, Period> timeout) {
  for (const auto& t : tasks) {
    if (!t.valid()) throw std::invalid_argument("sockpat: wait on an empty TaskHandle");
  }
  try {
    co_await wait_for(detail::all_ended(tasks), timeout);
  } catch (const std::system_error& e) {
    if (e.code() != std::errc::timed_out) throw;
  }
  DoneAndPending<T> out;
  for (auto& t : tasks) (t.done() ? out.done : out.pending).push_back(std::move(t));
  co_return out;
}

}  // namespace sockpat

#endif  // SOCKPAT_TASK_GROUP_HPP

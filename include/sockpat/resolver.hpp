// sockpat: name resolution bounded by a deadline: getaddrinfo (or a resolver of the program's
// own) on a helper thread, awaited by a blocking caller or by a coroutine on an event loop.
#ifndef SOCKPAT_RESOLVER_HPP
#define SOCKPAT_RESOLVER_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::ceil: "after N ms"
#include <condition_variable>  // std::condition_variable_any: a blocking caller's wait
#include <coroutine>           // std::coroutine_handle
#include <cstdint>             // std::uint16_t
#include "sockpat/detail/function.hpp"  // std::function: Resolver
#include <memory>              // std::shared_ptr, std::make_shared
#include <mutex>               // std::mutex, std::lock_guard, std::unique_lock
#include <new>                 // std::bad_alloc
#include <optional>            // std::optional
#include <stdexcept>           // std::invalid_argument
#include <stop_token>          // std::stop_source, std::stop_token, std::stop_callback
#include <string>              // std::string
#include <string_view>         // std::string_view
#include <system_error>        // std::error_code, std::system_error
#include <utility>             // std::move
#include <vector>              // std::vector

#include "sockpat/deadline.hpp"
#include "sockpat/detail/reactor.hpp"      // Reactor::notify_stop: the answer wakes the loop
#include "sockpat/detail/thread_pool.hpp"  // ThreadPool, per_process, hold_over_fork
#include "sockpat/detail/waiter.hpp"       // Waiter: ResolveAwaiter
#include "sockpat/endpoint.hpp"

namespace sockpat {

/// Resolves a host name into the addresses to try, in order; reports failure through `ec`.
/// It is called on a helper thread (never on an event loop's), possibly on several at once.
/// A caller whose deadline passes first does not wait for it: its late answer is dropped.
using Resolver = std::function<std::vector<Endpoint>(const std::string& host, std::uint16_t port, std::error_code& ec)>;

/// getaddrinfo: every IPv4 and IPv6 address of a stream socket, in its order, without duplicates.
/// Errors come in the `sockpat.resolver` category (EAI_*).
[[nodiscard]] inline Resolver system_resolver() {
  return [](const std::string& host, std::uint16_t port, std::error_code& ec) {
    std::vector<detail::RawAddress> raw;
    ec = detail::get_addresses(host, port, Family::unspecified, detail::SocketType::stream, raw);
    std::vector<Endpoint> out;
    out.reserve(raw.size());
    for (const auto& r : raw) out.push_back(Endpoint::from_native(&r.storage, r.size));
    return out;
  };
}

namespace detail {

struct DefaultResolver {
  std::mutex mutex;  // held for a pointer's copy only: a fork waits for it (hold_over_fork)
  std::shared_ptr<const Resolver> resolver;
};
inline DefaultResolver& default_resolver_slot() {
  static DefaultResolver slot;
  return slot;
}
inline std::mutex& default_resolver_mutex() { return default_resolver_slot().mutex; }

/// The resolver set by set_default_resolver(); null for system_resolver().
inline std::shared_ptr<const Resolver> default_resolver_set() {
  auto& slot = default_resolver_slot();
  hold_over_fork<default_resolver_mutex>();
  const std::lock_guard<std::mutex> lock(slot.mutex);
  return slot.resolver;
}

}  // namespace detail

/// Replaces the resolver that connects by name use when their options name none (every
/// thread's, from now on); an empty one restores system_resolver(). Thread-safe.
inline void set_default_resolver(Resolver r) {
  auto p = r ? std::make_shared<const Resolver>(std::move(r)) : nullptr;
  auto& slot = detail::default_resolver_slot();
  detail::hold_over_fork<detail::default_resolver_mutex>();
  {
    const std::lock_guard<std::mutex> lock(slot.mutex);
    slot.resolver.swap(p);
  }
  // the old resolver is destroyed here, outside the lock: its destructor is the program's code
}

/// The resolver set by set_default_resolver(), or system_resolver(). Thread-safe.
[[nodiscard]] inline Resolver default_resolver() {
  if (auto set = detail::default_resolver_set()) return *set;
  return system_resolver();
}

namespace detail {

/// Helpers that may be inside a resolver at once, process-wide. One name whose server does not
/// answer holds one of them (its askers share the call); 64 such names before a lookup is refused.
inline constexpr std::size_t max_resolver_threads = 64;

/// What a resolution on a helper thread and one call waiting for it share. Either side may go
/// first: a caller whose deadline passed drops its reference, and the helper's answer is freed
/// with the last one.
struct ResolveState {
  std::mutex mutex;
  std::condition_variable_any answered;  // a blocking caller waits on it
  bool done = false;
  std::vector<Endpoint> addresses;
  std::error_code ec;
  Reactor* loop = nullptr;  // while a coroutine awaits the answer: its loop, to wake
  std::stop_source wake;    // requested with the answer: how the loop finds the awaiter (see ResolveAwaiter)
};

/// Gives a caller the answer and wakes it (its thread, or the loop its coroutine waits on).
inline void deliver(ResolveState& state, std::vector<Endpoint> addresses, std::error_code ec) noexcept {
  const std::lock_guard<std::mutex> lock(state.mutex);
  state.addresses = std::move(addresses);
  state.ec = ec;
  state.done = true;
  state.answered.notify_all();
  // The awaiter clears `loop` (under this mutex) before it stops waiting, so the loop is alive here.
  if (state.loop != nullptr) {
    state.wake.request_stop();
    state.loop->notify_stop();
  }
}

/// One call of a resolver on the pool and the callers waiting for its answer (those gone, their
/// deadline passed, are expired). Guarded by Resolutions::mutex.
struct Lookup {
  std::shared_ptr<const Resolver> resolver;  // the default resolver asked: keeps the key's pointer unique
  std::string host;                          // with resolver and port, what a joining caller must ask
  std::uint16_t port = 0;
  std::vector<std::weak_ptr<ResolveState>> waiting;
  std::size_t prune_at = 16;  // drop the expired callers when `waiting` grows this long

  [[nodiscard]] bool asks(const Resolver* r, std::string_view h, std::uint16_t p) const noexcept {
    return resolver.get() == r && port == p && host == h;
  }
};

/// The process's resolver pool and the lookups through the default resolver that are running,
/// by (that resolver, host, port): a caller asking what one of them asks joins it. (A resolver
/// passed to one call has no identity to compare, so its lookups are not shared.) The getaddrinfo
/// of system_resolver() is always for a stream socket of either family, so the family is not in
/// the key. A forked child gets its own (per_process).
struct Resolutions {
  ThreadPool pool{max_resolver_threads, std::chrono::seconds(5)};
  std::mutex mutex;
  // The shared lookups running: at most one per pool helper, so a short list searched in order
  // (a std::map here cost every includer of connection.hpp its parse time).
  std::vector<std::shared_ptr<Lookup>> running;

  [[nodiscard]] std::shared_ptr<Lookup>* find(const Resolver* r, std::string_view host, std::uint16_t port) noexcept {
    for (auto& lookup : running) {
      if (lookup->asks(r, host, port)) return &lookup;
    }
    return nullptr;
  }
  void forget(const Lookup& done) noexcept {
    std::erase_if(running, [&done](const std::shared_ptr<Lookup>& l) { return l.get() == &done; });
  }

  /// Callers waiting now for a shared lookup of `host`, for tests.
  [[nodiscard]] std::size_t waiting(std::string_view host) {
    const std::lock_guard<std::mutex> lock(mutex);
    std::size_t n = 0;
    for (const auto& lookup : running) {
      if (lookup->host != host) continue;
      for (const auto& w : lookup->waiting) n += w.expired() ? 0 : 1;
    }
    return n;
  }
};
inline Resolutions& resolutions() { return per_process<Resolutions>(); }

/// " (64 lookups already running, the oldest for 31 s)": why a lookup was refused.
inline std::string describe_busy(const ThreadPool::Busy& busy) {
  return " (" + std::to_string(busy.running) + (busy.running == 1 ? " lookup" : " lookups") +
         " already running, the oldest for " +
         std::to_string(std::chrono::duration_cast<std::chrono::seconds>(busy.oldest).count()) + " s)";
}

/// The answer known without a resolver: a bad argument, or a numeric host (which needs no
/// lookup). True when `out`/`ec` hold it.
inline bool resolve_at_once(std::string_view host, int port, std::vector<Endpoint>& out, std::error_code& ec) {
  ec.clear();
  if (host.empty() || port < 0 || port > 65535 || malformed_dotted_quad(host)) {
    ec = make_errc(std::errc::invalid_argument);
    return true;
  }
  RawAddress raw;
  if (!parse_numeric_host(host, static_cast<std::uint16_t>(port), raw)) return false;
  out.assign(1, Endpoint::from_native(&raw.storage, raw.size));
  return true;
}

/// Starts resolving on the pool, or joins the same lookup running through the default resolver;
/// null (with `ec`, and `busy` when the pool is full) when it cannot start.
inline std::shared_ptr<ResolveState> start_resolve(std::string host, std::uint16_t port, Resolver resolver,
                                                   std::error_code& ec, ThreadPool::Busy* busy = nullptr) noexcept {
  try {
    auto& all = resolutions();
    auto state = std::make_shared<ResolveState>();
    auto lookup = std::make_shared<Lookup>();
    const bool key = !resolver;  // shared: through the default resolver, by (resolver, host, port)
    if (key) {
      lookup->resolver = default_resolver_set();
      resolver = lookup->resolver ? *lookup->resolver : system_resolver();
      lookup->host = host;
      lookup->port = port;
    }
    const std::lock_guard<std::mutex> lock(all.mutex);
    if (key) {
      if (const auto* running = all.find(lookup->resolver.get(), host, port)) {
        auto& joined = **running;
        if (joined.waiting.size() >= joined.prune_at) {
          std::erase_if(joined.waiting, [](const std::weak_ptr<ResolveState>& w) { return w.expired(); });
          joined.prune_at = 2 * joined.waiting.size() < 16 ? 16 : 2 * joined.waiting.size();
        }
        joined.waiting.push_back(state);
        ec.clear();
        return state;
      }
    }
    lookup->waiting.push_back(state);
    if (key) all.running.push_back(lookup);
    ec = all.pool.submit(
        [&all, lookup, key, resolver = std::move(resolver), host = std::move(host), port]() noexcept {
          std::error_code failed;
          std::vector<Endpoint> found;
          try {
            found = resolver(host, port, failed);
          } catch (const std::system_error& e) {
            failed = e.code();
          } catch (const std::bad_alloc&) {
            failed = make_errc(std::errc::not_enough_memory);
          } catch (...) {
            failed = make_errc(std::errc::io_error);  // a resolver that throws something else
          }
          std::vector<std::weak_ptr<ResolveState>> waiting;
          {
            const std::lock_guard<std::mutex> held(all.mutex);
            // From now on an asker starts a lookup of its own: this answer is not for it.
            if (key) all.forget(*lookup);
            waiting.swap(lookup->waiting);
          }
          std::vector<std::shared_ptr<ResolveState>> alive;
          try {
            for (auto& w : waiting) {
              if (auto s = w.lock()) alive.push_back(std::move(s));
            }
          } catch (const std::bad_alloc&) {
            failed = make_errc(std::errc::not_enough_memory);  // those gathered get the error: the others time out
            found.clear();
          }
          for (std::size_t i = 0; i < alive.size(); ++i) {
            std::vector<Endpoint> copy;
            if (i + 1 == alive.size()) {
              copy = std::move(found);
            } else {
              try {
                copy = found;
              } catch (const std::bad_alloc&) {
                deliver(*alive[i], {}, make_errc(std::errc::not_enough_memory));
                continue;
              }
            }
            deliver(*alive[i], std::move(copy), failed);
          }
        },
        busy);
    if (ec) {
      if (key) all.forget(*lookup);
      return nullptr;
    }
    return state;
  } catch (const std::bad_alloc&) {
    ec = make_errc(std::errc::not_enough_memory);
    return nullptr;
  }
}

/// Resolves by name on the pool, waiting at most until `d`; `busy` tells why a full pool refused.
[[nodiscard]] inline std::vector<Endpoint> resolve_waiting(std::string_view host, int port, const Deadline& d,
                                                           std::error_code& ec, const Resolver& resolver,
                                                           ThreadPool::Busy* busy) noexcept {
  std::vector<Endpoint> out;
  try {
    if (resolve_at_once(host, port, out, ec)) return out;
    if (d.stop_token().stop_requested()) {
      ec = make_errc(std::errc::operation_canceled);
      return {};
    }
    if (d.expired()) {
      ec = make_errc(std::errc::timed_out);
      return {};
    }
    auto state = start_resolve(std::string(host), static_cast<std::uint16_t>(port), resolver, ec, busy);
    if (ec) return {};
    std::unique_lock<std::mutex> lock(state->mutex);
    const auto answered = [&] { return state->done; };
    const bool done = d.has_time() ? state->answered.wait_until(lock, d.stop_token(), d.time(), answered)
                                   : state->answered.wait(lock, d.stop_token(), answered);
    if (!done) {
      ec = make_errc(d.stop_token().stop_requested() ? std::errc::operation_canceled : std::errc::timed_out);
      return {};
    }
    ec = state->ec;
    return std::move(state->addresses);
  } catch (const std::bad_alloc&) {
    ec = make_errc(std::errc::not_enough_memory);
    return {};
  }
}

/// Awaits a resolution on the pool, on the running loop, bounded by a Deadline. The helper
/// wakes the loop the way a stop token does (Reactor::notify_stop, which any thread may call):
/// the awaiter sits in the loop's list of stoppable operations with a token that the answer
/// (or the caller's own stop token) requests, and the loop then ends its wait through cancel(),
/// which takes the answer if there is one. A deadline, a cancel or a closing loop that comes
/// first ends the wait at once and leaves the answer to the helper, which frees it.
class [[nodiscard]] ResolveAwaiter final : private Waiter {
 public:
  ResolveAwaiter(std::string host, int port, Deadline d, Resolver resolver, std::error_code* out) noexcept
      : host_(std::move(host)), port_(port), deadline_(std::move(d)), resolver_(std::move(resolver)), out_(out) {}
  ResolveAwaiter(const ResolveAwaiter&) = delete;  // as_result and wait_for take it by reference
  ResolveAwaiter& operator=(const ResolveAwaiter&) = delete;
  using Waiter::cancel_before_start;
  ~ResolveAwaiter() {
    if (waiting()) unlink();  // its coroutine was destroyed while it waited
    detach();
  }

  bool await_ready() {
    if (begin()) return true;  // the loop is closing: operation_canceled
    if (deadline_.stop_token().stop_requested()) {
      set_error(canceled());
      return true;
    }
    std::error_code ec;
    try {
      if (resolve_at_once(host_, port_, addresses_, ec)) {
        set_error(ec);
        return true;
      }
    } catch (const std::bad_alloc&) {
      set_error(make_errc(std::errc::not_enough_memory));
      return true;
    }
    if (deadline_.expired()) {
      set_error(make_errc(std::errc::timed_out));
      return true;
    }
    state_ = start_resolve(host_, static_cast<std::uint16_t>(port_), std::move(resolver_), ec, &busy_);
    set_error(ec);
    return static_cast<bool>(ec);
  }

  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
    if (!arm(h)) return false;
    {
      const std::lock_guard<std::mutex> lock(state_->mutex);
      if (state_->done) {
        addresses_ = std::move(state_->addresses);
        (void)finish(state_->ec);
        return false;
      }
      state_->loop = &reactor();
    }
    if (deadline_.has_time()) {
      when = deadline_.time();
      reactor().add_timer(this);
    }
    wake_ = state_->wake.get_token();
    stop = &wake_;
    reactor().add_stoppable(this);
    if (deadline_.stop_token().stop_possible()) on_stop_.emplace(deadline_.stop_token(), WakeOnStop{state_.get()});
    return true;
  }

  std::vector<Endpoint> await_resume() {
    on_stop_.reset();
    if (out_ != nullptr) {
      *out_ = error();
    } else if (error()) {
      throw std::system_error(error(), "resolve " + sockpat::detail::quoted(host_) +
                                           (busy_.running != 0 ? describe_busy(busy_) : std::string()));
    }
    return std::move(addresses_);
  }

 private:
  // The caller's stop token fired (on any thread): wake the loop as the answer would.
  struct WakeOnStop {
    ResolveState* state;
    void operator()() const noexcept {
      state->wake.request_stop();
      const std::lock_guard<std::mutex> lock(state->mutex);
      if (state->loop != nullptr) state->loop->notify_stop();
    }
  };

  // The loop calls it when the answer came (the wake token), on the caller's stop, on a
  // cancelled scope and on a closing loop: the answer wins if it is there.
  void cancel(std::error_code why) noexcept override {
    if (!waiting()) return;
    unlink();
    complete(take_answer() ? answer_ec_ : why);
  }
  void on_timer() noexcept override {
    unlink();
    complete(take_answer() ? answer_ec_ : make_errc(std::errc::timed_out));
  }
  void unlink() noexcept override {
    if (heap_index != not_in_heap) reactor().remove_timer(this);
    if (stop != nullptr) {
      reactor().remove_stoppable(this);
      stop = nullptr;
    }
  }
  // Stops the helper from waking this loop; true, with the answer moved here, if it came.
  bool take_answer() noexcept {
    if (!state_) return false;
    const std::lock_guard<std::mutex> lock(state_->mutex);
    state_->loop = nullptr;
    if (!state_->done) return false;
    addresses_ = std::move(state_->addresses);
    answer_ec_ = state_->ec;
    return true;
  }
  void detach() noexcept {
    if (!state_) return;
    const std::lock_guard<std::mutex> lock(state_->mutex);
    state_->loop = nullptr;
  }

  std::string host_;
  int port_;
  Deadline deadline_;
  Resolver resolver_;
  std::error_code* out_;
  std::shared_ptr<ResolveState> state_;
  std::vector<Endpoint> addresses_;
  std::error_code answer_ec_;
  ThreadPool::Busy busy_;  // why a full pool refused the lookup
  std::stop_token wake_;
  std::optional<std::stop_callback<WakeOnStop>> on_stop_;
};

}  // namespace detail

/// Resolves `host` (a name, or a numeric address, which is returned as is without a lookup) on
/// a helper thread with `resolver` (empty: default_resolver()), waiting at most until `d`.
/// Throws std::invalid_argument for an empty host, a bad port or a malformed dotted quad, and
/// std::system_error ("resolve \"host\"": timed_out, operation_canceled on stop, the resolver's error).
[[nodiscard]] inline std::vector<Endpoint> resolve(std::string_view host, int port, Deadline d,
                                                   const Resolver& resolver = {});

/// As above; every error (a bad argument as invalid_argument) goes to `ec`.
[[nodiscard]] inline std::vector<Endpoint> resolve(std::string_view host, int port, Deadline d, std::error_code& ec,
                                                   const Resolver& resolver = {}) noexcept {
  return detail::resolve_waiting(host, port, d, ec, resolver, nullptr);
}

inline std::vector<Endpoint> resolve(std::string_view host, int port, Deadline d, const Resolver& resolver) {
  (void)detail::checked_port(port, host);
  if (host.empty()) throw std::invalid_argument("sockpat: cannot resolve an empty host");
  if (detail::malformed_dotted_quad(host)) {
    throw std::invalid_argument("sockpat: " + detail::quoted(host) + " is not a valid IPv4 address");
  }
  std::error_code ec;
  detail::ThreadPool::Busy busy;
  auto out = detail::resolve_waiting(host, port, d, ec, resolver, &busy);
  if (ec) {
    std::string what = "resolve " + detail::quoted(host);
    if (ec == std::errc::timed_out && d.timeout() > d.timeout().zero()) {
      what += " after " + std::to_string(std::chrono::ceil<std::chrono::milliseconds>(d.timeout()).count()) + " ms";
    }
    if (busy.running != 0) what += detail::describe_busy(busy);
    throw std::system_error(ec, what);
  }
  return out;
}

/// Resolves `host` on a helper thread while the running loop goes on; awaiting it gives the
/// addresses, or throws as resolve(host, port, d) does (bad arguments as std::system_error
/// invalid_argument). Await it in the same expression: it keeps its arguments until then.
[[nodiscard]] inline detail::ResolveAwaiter async_resolve(std::string host, int port, Deadline d = {},
                                                          Resolver resolver = {}) noexcept {
  return {std::move(host), port, std::move(d), std::move(resolver), nullptr};
}
/// As above; the error is stored in `ec` (which must outlive the co_await) instead of thrown.
[[nodiscard]] inline detail::ResolveAwaiter async_resolve(std::string host, int port, Deadline d, std::error_code& ec,
                                                          Resolver resolver = {}) noexcept {
  return {std::move(host), port, std::move(d), std::move(resolver), &ec};
}

}  // namespace sockpat

#endif  // SOCKPAT_RESOLVER_HPP

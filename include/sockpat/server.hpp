// sockpat: Server<P>, Python's socketserver for C++: owns a Listener and runs a handler per client,
// on elastic threads (reused, retired when idle), sequentially, on a thread per connection, or on a
// fixed pool of threads; bounded everywhere;
// stops gracefully from any thread, a std::stop_token or a signal.
#ifndef SOCKPAT_SERVER_HPP
#define SOCKPAT_SERVER_HPP

#include <algorithm>           // std::max
#include <atomic>              // std::atomic
#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock
#include <concepts>            // std::same_as
#include <condition_variable>  // std::condition_variable_any, std::condition_variable
#include <cstddef>             // std::size_t
#include <deque>               // std::deque: the pool's queue of accepted clients
#include <exception>           // std::exception_ptr
#include "sockpat/detail/function.hpp"  // std::function: ServerOptions::on_error
#include <list>                // std::list: live sessions and elastic workers, stable while they run
#include <mutex>               // std::mutex
#include <optional>            // std::optional
#include <stdexcept>           // std::logic_error
#include <stop_token>          // std::stop_source, std::stop_token, std::stop_callback
#include <string>              // std::string: ServeControl's messages
#include <string_view>         // std::string_view: the host of Server(host, port, handler)
#include <system_error>        // std::system_error
#include <thread>              // std::thread: threads are the point of this header
#include <type_traits>         // std::is_invocable_v
#include <utility>             // std::move, std::exchange
#include <vector>              // std::vector

#include "sockpat/backoff.hpp"  // Backoff, BackoffSequence: pauses after accept errors
#include "sockpat/connection.hpp"
#include "sockpat/deadline.hpp"
#include "sockpat/detail/report.hpp"           // report_failure: on_error or stderr
#include "sockpat/detail/unique_function.hpp"  // UniqueFunction: a move-only handler
#include "sockpat/detail/wait.hpp"             // poll_handles, StopWatch: clients before their first byte
#include "sockpat/error.hpp"                   // detail::ending_of: normal endings
#include "sockpat/listener.hpp"

namespace sockpat {

/// How a Server runs its handlers.
enum class Strategy {
  /// A thread per client being served, reused: a thread that ends a session takes the next client,
  /// and one idle for `thread_idle` ends (Java's cached thread pool). Idle clients cost a thread
  /// each but never keep a new client waiting.
  elastic,
  sequential,             ///< one client at a time (socketserver.TCPServer)
  thread_per_connection,  ///< a new thread per client (socketserver.ThreadingTCPServer)
  /// A fixed pool of threads fed by a bounded queue. Head-of-line blocking: N idle clients hold
  /// N threads, and the clients queued behind them wait (up to the idle timeout).
  thread_pool,
};

/// What a Server does with a new client while it holds max_connections already.
enum class Overload {
  /// Stop accepting: new clients wait in the kernel's listen backlog (their connect succeeds and
  /// they wait for the first reply); once the backlog is full the OS drops or refuses them.
  wait,
  /// Accept and close at once: the client sees its connection end immediately.
  refuse,
};

struct ServerOptions {
  Strategy strategy = Strategy::elastic;
  /// thread_pool: the number of worker threads; 0 means std::thread::hardware_concurrency().
  /// Ignored by the other strategies (elastic threads follow the clients, up to max_connections).
  std::size_t threads = 0;
  /// Clients held at once: being handled, plus (sequential, thread_pool) accepted and queued for a
  /// worker. 0 means 1 for sequential, twice the threads for thread_pool (a queue as long as the
  /// pool), and for elastic and thread_per_connection a bound from the descriptor limit (each
  /// client takes its socket and its thread's wake-up descriptor; 64 are left for the rest of the
  /// process). Past it, `overload` applies; nothing is unbounded.
  std::size_t max_connections = 0;
  /// elastic: how long a thread with no client waits for the next before it ends.
  std::chrono::steady_clock::duration thread_idle = std::chrono::seconds(10);
  Overload overload = Overload::wait;
  /// TCP servers: TCP_NODELAY on each client's connection, so that the tail of a reply is not
  /// held back waiting for the client's ACK (Nagle's algorithm). Ignored for Unix-domain servers.
  bool no_delay = true;
  /// Set on each client's connection (Connection::set_timeout): a blocking call on it that waits
  /// longer fails with timed_out, and a FramedConnection read must complete within it, so a silent
  /// or dribbling client is dropped. std::nullopt: no limit.
  std::optional<std::chrono::steady_clock::duration> idle_timeout = std::chrono::seconds(60);
  /// For protocols whose client speaks first (TLS, HTTP): a client goes to a handler only once it
  /// has sent something (or closed). Until then it waits on the accepting thread, holding no
  /// worker, for at most this long; then it is closed and counted in stats().silent, not reported.
  /// Clients waiting so are bounded apart from max_connections, by the descriptor limit (as
  /// elastic's max_connections is). std::nullopt: a client goes to a handler at once.
  std::optional<std::chrono::steady_clock::duration> first_byte_timeout = std::nullopt;
  /// On stop: how long a handler that takes the stop token (`handler(connection, stop)`) may go
  /// on before its connection is canceled. A handler without it is canceled at once; a second
  /// stop request (request_stop() again, or the `urgent` token of serve/start) ends the grace.
  std::chrono::steady_clock::duration grace = std::chrono::seconds(5);
  /// After accept fails (out of descriptors or memory): the pauses before accepting again, 20 ms
  /// doubled on each failure up to 500 ms, no jitter (one process, no one to fall out of step
  /// with); a client leaving ends the pause early.
  Backoff accept_backoff{.initial = std::chrono::milliseconds(20), .max = std::chrono::milliseconds(500), .multiplier = 2.0,
                         .jitter = 0.0};
  /// Called with what a handler threw (its peer, if still known) and with accept errors (no peer;
  /// once per run of failures). Called from the thread that met the error, so it must be
  /// thread-safe; what it throws is ignored. Unset: a line on stderr, as socketserver does.
  std::function<void(std::exception_ptr error, const Endpoint& peer)> on_error = {};
};

/// Counters of a Server, read at one moment.
struct ServerStats {
  std::size_t accepted = 0;        ///< connections accepted
  std::size_t refused = 0;         ///< accepted and closed at once (Overload::refuse)
  std::size_t active = 0;          ///< clients held now: handled or queued
  std::size_t handler_errors = 0;  ///< handlers that failed (reported to on_error)
  std::size_t accept_errors = 0;   ///< accepts that failed (EMFILE, ENFILE, ...)
  std::size_t canceled = 0;        ///< connections canceled by the stop
  // Normal endings, counted apart from failures and not reported: a handler that threw one of
  // these errors from its connection's calls.
  std::size_t timed_out = 0;    ///< a call ran past its deadline or the idle timeout
  std::size_t peer_closed = 0;  ///< the peer reset the connection or closed it early (end_of_stream)
  std::size_t silent = 0;       ///< closed for sending nothing within first_byte_timeout
};

namespace detail {
/// The server this thread serves (its serve() runs here, or it is one of its workers), so that a
/// stop() from a handler or an on_error on it does not wait for itself.
inline const void*& current_server() noexcept {
  thread_local const void* server = nullptr;
  return server;
}

/// Marks this thread as `server`'s while serve() runs on it; a server served from another's
/// handler gets the other back afterwards.
class ServingThread {
 public:
  explicit ServingThread(const void* server) noexcept : previous_(std::exchange(current_server(), server)) {}
  ServingThread(const ServingThread&) = delete;
  ServingThread& operator=(const ServingThread&) = delete;
  ~ServingThread() { current_server() = previous_; }

 private:
  const void* previous_;
};

/// The run state of a blocking server (Server, RequestServer): serve() runs once, start() runs
/// it on a thread of its own, and stop() waits until it has returned. `who` names the server in
/// the std::logic_error of a second serve() or start().
class ServeControl {
 public:
  /// Marks the server as serving; false if it stopped already. Throws std::logic_error if it serves.
  bool begin(const char* who) {
    std::lock_guard lock(mutex_);
    if (state_ == State::serving) throw std::logic_error(std::string("sockpat: ") + who + "::serve is running already");
    if (state_ == State::stopped) return false;
    state_ = State::serving;
    return true;
  }

  /// begin(), then `serve_begun` (which calls end() when it returns) on a thread of its own.
  /// Throws std::logic_error if it was started already, std::system_error if no thread starts.
  template <class F>
  void start(const char* who, F serve_begun) {
    std::lock_guard join_lock(join_mutex_);
    if (background_.joinable()) throw std::logic_error(std::string("sockpat: ") + who + "::start was called already");
    if (!begin(who)) return;
    try {
      background_ = std::thread(std::move(serve_begun));
    } catch (...) {
      std::lock_guard lock(mutex_);
      state_ = State::idle;
      throw;
    }
  }

  /// serve() has returned: wakes wait_stopped(). It notifies under the lock: once a waiter sees
  /// `stopped` the server may be destroyed, and this thread touches nothing of it after the unlock.
  void end() noexcept {
    std::lock_guard lock(mutex_);
    state_ = State::stopped;
    cv_.notify_all();
  }

  /// Waits until serve() has returned: joins start()'s thread, or waits for the thread in serve().
  /// On a thread that serves `server` (its serve() or a worker: a handler, on_error) it returns at
  /// once, since that thread is what stop() would wait for. A server that never served is marked
  /// stopped: it will not serve.
  void wait_stopped(const void* server) noexcept {
    if (current_server() == server) return;
    {
      std::lock_guard lock(join_mutex_);
      if (background_.joinable()) {
        if (background_.get_id() != std::this_thread::get_id()) background_.join();
        return;
      }
    }
    std::unique_lock lock(mutex_);
    if (state_ == State::idle) {
      state_ = State::stopped;
      return;
    }
    cv_.wait(lock, [this] { return state_ != State::serving; });
  }

 private:
  enum class State { idle, serving, stopped };
  std::mutex mutex_;
  std::condition_variable cv_;
  State state_ = State::idle;
  std::mutex join_mutex_;
  std::thread background_;
};
}  // namespace detail

/// Accepts clients on a Listener and runs `handler(connection)` (or `handler(connection, stop)`,
/// where `stop` is requested when the server begins to stop) for each, on the strategy's threads.
/// A handler that throws is reported to on_error and its connection closed; the server goes on.
/// A handler ended by its peer (a reset, end_of_stream), by a timeout or by the stop is not a
/// failure: it is counted in stats() and not reported.
///
/// serve() runs the accept loop on the calling thread until a stop; start() runs it on a thread of
/// its own. Stopping (stop(), request_stop(), the token given to serve/start, or SignalStop's
/// token): accepting ends at once and the listener closes; clients queued but not started are
/// closed; running handlers' connections are canceled at once (every blocking call on them
/// returns operation_canceled), except for handlers that take the stop token: those get `grace`
/// to finish first, or until a second stop request; every thread is joined. A handler that does
/// no I/O on its connection and never returns keeps stop() waiting.
template <StreamProtocol P>
class Server {
 public:
  using protocol_type = P;
  /// Move-only, so a handler may own what it uses (a lambda capturing a std::unique_ptr).
  using Handler = detail::UniqueFunction<void(Connection<P>&, std::stop_token)>;

  /// Serves clients of `listener`. The handler is moved in; it need not be copyable.
  template <class H>
    requires std::is_invocable_v<H&, Connection<P>&> || std::is_invocable_v<H&, Connection<P>&, std::stop_token>
  Server(Listener<P> listener, H handler, ServerOptions options = {})
      : listener_(std::move(listener)), local_(listener_.local_endpoint()), options_(std::move(options)) {
    if constexpr (std::is_invocable_v<H&, Connection<P>&, std::stop_token>) {
      handler_ = std::move(handler);
      finishes_in_grace_ = true;
    } else {
      handler_ = [h = std::move(handler)](Connection<P>& c, std::stop_token) mutable { h(c); };
    }
    const std::size_t hardware = (std::max)(1u, std::thread::hardware_concurrency());
    switch (options_.strategy) {
      case Strategy::sequential: threads_ = 1; break;
      case Strategy::thread_pool: threads_ = options_.threads != 0 ? options_.threads : hardware; break;
      case Strategy::elastic:
      case Strategy::thread_per_connection: threads_ = 0; break;
    }
    const std::size_t descriptors = detail::descriptor_limit();
    const std::size_t by_descriptors = descriptors > 96 ? (descriptors - 64) / 2 : 16;
    max_ = options_.max_connections != 0                ? options_.max_connections
           : options_.strategy == Strategy::sequential  ? 1
           : options_.strategy == Strategy::thread_pool ? 2 * threads_
                                                        : by_descriptors;
    max_waiting_ = by_descriptors;
  }
  /// Binds `local` (port 0 picks a free port: read it back with local_endpoint()) and serves it.
  template <class H>
    requires std::is_invocable_v<H&, Connection<P>&> || std::is_invocable_v<H&, Connection<P>&, std::stop_token>
  Server(const Endpoint& local, H handler, ServerOptions options = {})
      : Server(Listener<P>::bind(local), std::move(handler), std::move(options)) {}
  /// Resolves `host` and serves on the first address that binds, as Listener::bind(host, port).
  template <class H>
    requires InternetProtocol<P> &&
             (std::is_invocable_v<H&, Connection<P>&> || std::is_invocable_v<H&, Connection<P>&, std::stop_token>)
  Server(std::string_view host, int port, H handler, ServerOptions options = {})
      : Server(Listener<P>::bind(host, port), std::move(handler), std::move(options)) {}

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  /// Stops and joins, as stop() does. Do not destroy a server from one of its own handlers.
  ~Server() { stop(); }

  /// Runs the accept loop on this thread until a stop is requested (by stop(), request_stop() or
  /// `stop`), then stops gracefully and returns when every handler has returned and every thread
  /// is joined; `urgent` ends the grace (SignalStop::urgent_token(): a second Ctrl-C). Returns at
  /// once on a server already stopped. Throws std::logic_error if it runs already.
  void serve(std::stop_token stop = {}, std::stop_token urgent = {}) {
    if (!control_.begin("Server")) return;
    serve_begun(std::move(stop), std::move(urgent));
  }

  /// serve() on a thread of its own; returns at once. stop() or the destructor joins it.
  /// Throws std::logic_error if the server runs already, std::system_error if no thread starts.
  void start(std::stop_token stop = {}, std::stop_token urgent = {}) {
    control_.start("Server", [this, stop, urgent] { serve_begun(stop, urgent); });
  }

  /// Asks the server to stop and returns at once; safe from any thread, a handler included. A
  /// second request, while the server stops, cancels the handlers still in their grace period.
  void request_stop() noexcept {
    if (stop_.request_stop()) return;
    {
      std::lock_guard lock(mutex_);
      urgent_ = true;
    }
    cv_.notify_all();
  }

  /// Requests a stop (unless one was requested already: stop() is not a second request) and waits
  /// until serve() has returned: handlers finished or canceled, threads joined, descriptors
  /// closed. From the server's own threads (a handler, on_error) it only requests: they cannot wait
  /// for themselves.
  void stop() noexcept {
    if (!stop_.stop_requested()) request_stop();
    control_.wait_stopped(this);
  }

  [[nodiscard]] bool stop_requested() const noexcept { return stop_.stop_requested(); }
  /// Requested when the server begins to stop; handlers may watch it to finish early.
  [[nodiscard]] std::stop_token stop_token() const noexcept { return stop_.get_token(); }
  /// Where the server listens (kept after the listener closes).
  [[nodiscard]] const Endpoint& local_endpoint() const noexcept { return local_; }
  /// Worker threads of the pool (1 for sequential; 0 for elastic and thread_per_connection, whose
  /// threads follow the clients).
  [[nodiscard]] std::size_t threads() const noexcept { return threads_; }
  [[nodiscard]] std::size_t max_connections() const noexcept { return max_; }

  [[nodiscard]] ServerStats stats() const {
    ServerStats s;
    s.accepted = accepted_.load();
    s.refused = refused_.load();
    s.handler_errors = handler_errors_.load();
    s.accept_errors = accept_errors_.load();
    s.canceled = canceled_.load();
    s.timed_out = timed_out_.load();
    s.peer_closed = peer_closed_.load();
    s.silent = silent_.load();
    std::lock_guard lock(mutex_);
    s.active = sessions_.size();
    return s;
  }

 private:
  struct Session {
    Connection<P> connection;
    std::stop_source cancel;
    std::thread thread;  // thread_per_connection only
  };
  using SessionList = std::list<Session>;
  // A client accepted under first_byte_timeout that has sent nothing yet.
  struct Waiting {
    Connection<P> connection;
    detail::steady_time until;
  };

  void serve_begun(std::stop_token stop, std::stop_token urgent) noexcept {
    std::stop_callback on_stop(stop, [this]() noexcept { request_stop(); });
    std::stop_callback on_urgent(urgent, [this]() noexcept {
      request_stop();
      request_stop();
    });
    {
      const detail::ServingThread serving(this);  // on_error runs here for accept errors
      run();
    }
    control_.end();
  }

  void run() noexcept {
    try {
      for (std::size_t i = 0; i < threads_; ++i) workers_.emplace_back([this] { work(); });
    } catch (...) {
      report(std::current_exception(), {});
      request_stop();
    }
    accept_loop();
    // Stop accepting at once: clients still in the backlog are refused by the OS.
    std::error_code ignored;
    listener_.close(ignored);
    finish();
  }

  void accept_loop() noexcept {
    const std::stop_token stop = stop_.get_token();
    BackoffSequence pauses(options_.accept_backoff);
    bool reported = false;
    std::vector<Waiting> waiting;  // closed when the loop ends, like clients left in the backlog
    std::vector<detail::poll_entry> polled;
    while (!stop.stop_requested()) {
      join_finished();
      if (options_.overload == Overload::wait) {
        std::unique_lock lock(mutex_);
        if (!cv_.wait(lock, stop, [this] { return sessions_.size() < max_; })) break;
      }
      std::error_code ec;
      auto connection = next_client(stop, waiting, polled, ec);
      if (ec == std::errc::operation_canceled) break;
      if (ec) {
        ++accept_errors_;
        if (!reported) report(std::make_exception_ptr(std::system_error(ec, detail::describe("accept on", local_))), {});
        reported = true;
        // Out of descriptors (EMFILE, ENFILE) or memory: the clients stay in the backlog, which
        // keeps the listener readable, so waiting in poll() would spin. Pause instead, and go on
        // serving the clients we hold; one of them leaving frees a descriptor and ends the pause.
        std::unique_lock lock(mutex_);
        const std::size_t held = sessions_.size();
        (void)cv_.wait_for(lock, stop, pauses.next(), [&] { return sessions_.size() < held; });
        continue;
      }
      pauses.reset();
      reported = false;
      dispatch(std::move(connection));
    }
  }

  // The next client for a handler: the next accepted one, or, under first_byte_timeout, the next
  // one that has sent something. Those wait in one poll() with the listener on this thread, so
  // that idle connects hold a descriptor each for the bound, never a worker.
  Connection<P> next_client(const std::stop_token& stop, std::vector<Waiting>& waiting,
                            std::vector<detail::poll_entry>& polled, std::error_code& ec) noexcept {
    if (!options_.first_byte_timeout) {
      auto connection = listener_.accept(Deadline(stop), ec);
      if (!ec) ++accepted_;
      return connection;
    }
    static const std::stop_token never;
    const short readable = static_cast<short>(detail::Readiness::read);
    try {
      for (;;) {
        const detail::StopWatch watch(stop, never);
        const bool room = waiting.size() < max_waiting_;
        const std::size_t listener_at = waiting.size();
        detail::steady_time next = detail::no_deadline;
        polled.clear();
        for (const auto& w : waiting) {
          polled.push_back({w.connection.native_handle(), readable, 0});
          next = (std::min)(next, w.until);
        }
        if (room) polled.push_back({listener_.native_handle(), readable, 0});
        if (watch.waker() != nullptr) polled.push_back({watch.waker()->read_handle(), readable, 0});
        const int r = detail::poll_handles(polled.data(), static_cast<detail::poll_count>(polled.size()),
                                           watch.timeout_ms(next));
        if (r < 0) {
          ec = detail::last_error();
          if (detail::interrupted(ec)) continue;
          return {};
        }
        if (watch.stopped()) {
          ec = std::make_error_code(std::errc::operation_canceled);
          return {};
        }
        // Data, an end or an error: the handler's first read says which.
        for (std::size_t i = 0; i < waiting.size(); ++i) {
          if (polled[i].revents == 0) continue;
          auto connection = std::move(waiting[i].connection);
          waiting.erase(waiting.begin() + static_cast<std::ptrdiff_t>(i));
          ec.clear();
          return connection;
        }
        const auto now = std::chrono::steady_clock::now();
        const auto silent = std::erase_if(waiting, [now](const Waiting& w) { return w.until <= now; });
        silent_ += silent;
        if (room && polled[listener_at].revents != 0) {
          // A client that reset while in the backlog leaves nothing to accept: poll again.
          auto connection = listener_.accept(Deadline(std::chrono::steady_clock::duration::zero()), ec);
          if (ec == std::errc::timed_out) continue;
          if (ec) return {};
          ++accepted_;
          waiting.push_back({std::move(connection), detail::time_after(*options_.first_byte_timeout)});
        }
      }
    } catch (...) {  // no memory for one more waiting client: as an accept that failed for it
      ec = std::make_error_code(std::errc::not_enough_memory);
      return {};
    }
  }

  void dispatch(Connection<P> connection) noexcept {
    std::unique_lock lock(mutex_);
    if (sessions_.size() >= max_) {  // Overload::refuse
      lock.unlock();
      ++refused_;
      return;  // `connection` closes here
    }
    const auto it = sessions_.emplace(sessions_.end());
    it->connection = std::move(connection);
    it->connection.set_timeout(options_.idle_timeout);
    if constexpr (std::same_as<P, Tcp>) {
      // Best effort, as in StreamOptions: only a broken socket refuses it, and its first read says so.
      if (options_.no_delay) (void)detail::set_int_option(it->connection.native_handle(), detail::option::no_delay, 1);
    }
    it->connection.set_stop_token(it->cancel.get_token());
    {
      // Reads sleep in recv itself: a thread per client needs no poll() per read (best effort:
      // a socket that refuses keeps waiting in poll()).
      std::error_code ignored;
      it->connection.set_kernel_wait(true, ignored);
    }
    if (options_.strategy == Strategy::thread_per_connection) {
      try {
        // Started under the lock, so the thread's end_session sees `thread` already assigned.
        it->thread = std::thread([this, it] {
          enter_thread();
          run_session(*it);
          end_session(it);
        });
      } catch (...) {
        sessions_.erase(it);
        lock.unlock();
        report(std::current_exception(), {});
      }
      return;
    }
    try {
      queue_.push_back(it);
      // Elastic: a new thread unless enough are idle to take every queued client.
      if (options_.strategy == Strategy::elastic && queue_.size() > idle_workers_) start_elastic_worker();
    } catch (...) {
      // No thread (or no memory): this client is closed, the others go on.
      if (!queue_.empty() && queue_.back() == it) queue_.pop_back();
      sessions_.erase(it);
      lock.unlock();
      report(std::current_exception(), {});
      return;
    }
    lock.unlock();
    work_cv_.notify_one();
  }

  // Called under the lock, so the new thread finds its own entry filled in before it looks.
  void start_elastic_worker() {
    const auto self = elastic_.emplace(elastic_.end());
    try {
      *self = std::thread([this, self] { work_elastic(self); });
    } catch (...) {
      elastic_.erase(self);
      throw;
    }
  }

  // Opens this thread's stop wake-up descriptor now, while descriptors are plenty, rather than
  // in a handler's first wait, perhaps in the middle of a flood (without one it still works,
  // looking at the stop token every few milliseconds).
  void enter_thread() noexcept {
    detail::current_server() = this;
    std::error_code ignored;
    (void)detail::thread_waker(ignored);
  }

  void work() noexcept {
    enter_thread();
    for (;;) {
      typename SessionList::iterator it;
      {
        std::unique_lock lock(mutex_);
        work_cv_.wait(lock, [this] { return !queue_.empty() || quit_workers_; });
        if (queue_.empty()) return;
        it = queue_.front();
        queue_.pop_front();
      }
      run_session(*it);
      end_session(it);
    }
  }

  void work_elastic(std::list<std::thread>::iterator self) noexcept {
    enter_thread();
    std::unique_lock lock(mutex_);
    ++idle_workers_;
    for (;;) {
      (void)work_cv_.wait_for(lock, options_.thread_idle, [this] { return !queue_.empty() || quit_workers_; });
      --idle_workers_;
      if (queue_.empty()) {
        if (quit_workers_) return;  // finish() joins this thread
        // Idle for thread_idle: end. The thread that ended before is joined here, and this one by
        // the next (or by finish()): nothing to allocate, so no thread is ever detached.
        std::thread previous = std::exchange(retired_, std::move(*self));
        elastic_.erase(self);
        lock.unlock();
        if (previous.joinable()) previous.join();
        return;
      }
      const auto it = queue_.front();
      queue_.pop_front();
      lock.unlock();
      run_session(*it);
      end_session(it, /*now_idle=*/true);
      lock.lock();
    }
  }

  void run_session(Session& s) noexcept {
    try {
      handler_(s.connection, stop_.get_token());
    } catch (const std::system_error& e) {
      // How a connection normally ends is not a handler failure.
      switch (detail::ending_of(e.code())) {
        case detail::Ending::canceled:
          if (s.cancel.stop_requested()) return;  // counted by finish()
          failed(s);
          return;
        case detail::Ending::timed_out: ++timed_out_; return;
        case detail::Ending::peer_closed: ++peer_closed_; return;
        case detail::Ending::failure: failed(s); return;
      }
    } catch (...) {
      failed(s);
    }
  }

  void failed(Session& s) noexcept {
    ++handler_errors_;
    std::error_code ignored;
    report(std::current_exception(), s.connection.remote_endpoint(ignored));
  }

  // now_idle: an elastic thread counts itself idle as its client leaves, so that the next client,
  // even one that connects the moment the last one saw its close, reuses it.
  void end_session(typename SessionList::iterator it, bool now_idle = false) noexcept {
    SessionList done;
    {
      std::lock_guard lock(mutex_);
      if (now_idle) ++idle_workers_;
      if (it->thread.joinable()) {
        try {
          finished_.push_back(std::move(it->thread));
        } catch (...) {
          it->thread.detach();  // no memory to remember it: it ends right after this anyway
        }
      }
      done.splice(done.end(), sessions_, it);
    }
    cv_.notify_all();
    // `done` closes the connection here, outside the lock.
  }

  void join_finished() noexcept {
    std::vector<std::thread> finished;
    {
      std::lock_guard lock(mutex_);
      finished.swap(finished_);
    }
    for (auto& t : finished) t.join();
  }

  void finish() noexcept {
    SessionList dropped;
    {
      std::lock_guard lock(mutex_);
      // Queued clients never started: they are closed like clients left in the backlog. Elastic
      // ones had a thread on its way (this is a cancel, as thread_per_connection counts it).
      for (const auto it : queue_) dropped.splice(dropped.end(), sessions_, it);
      if (options_.strategy == Strategy::elastic) canceled_ += queue_.size();
      queue_.clear();
      quit_workers_ = true;
    }
    cv_.notify_all();
    work_cv_.notify_all();
    dropped.clear();
    {
      std::unique_lock lock(mutex_);
      // Handlers that watch the stop token get the grace to finish; the others are canceled now.
      const auto grace = finishes_in_grace_ ? options_.grace : std::chrono::steady_clock::duration::zero();
      const auto until = detail::time_after(grace);
      (void)cv_.wait_until(lock, until, [this] { return sessions_.empty() || urgent_; });
      for (auto& s : sessions_) {
        s.cancel.request_stop();
        ++canceled_;
      }
      cv_.wait(lock, [this] { return sessions_.empty(); });
    }
    for (auto& w : workers_) w.join();
    workers_.clear();
    std::list<std::thread> elastic;
    std::thread retired;
    {
      // No thread retires once quit_workers_ is set: these are all that are left.
      std::lock_guard lock(mutex_);
      elastic.swap(elastic_);
      retired = std::exchange(retired_, std::thread());
    }
    for (auto& w : elastic) w.join();
    if (retired.joinable()) retired.join();
    join_finished();
  }

  void report(std::exception_ptr error, const Endpoint& peer) noexcept {
    detail::report_failure(options_.on_error, "server", local_, std::move(error), peer);
  }

  Listener<P> listener_;
  Endpoint local_;
  Handler handler_;
  bool finishes_in_grace_ = false;  // the handler takes the stop token
  ServerOptions options_;
  std::size_t threads_ = 0;
  std::size_t max_ = 0;
  std::size_t max_waiting_ = 0;  // clients waiting for their first byte (first_byte_timeout)
  std::stop_source stop_;

  mutable std::mutex mutex_;         // guards everything below up to the counters
  std::condition_variable_any cv_;  // sessions ended, a second stop request
  std::condition_variable work_cv_;  // work queued, or workers told to quit
  SessionList sessions_;             // clients held: queued or being handled
  std::deque<typename SessionList::iterator> queue_;
  std::vector<std::thread> workers_;
  std::vector<std::thread> finished_;  // thread_per_connection threads that ended, to join
  std::list<std::thread> elastic_;     // elastic threads alive (a retiring one removes itself)
  std::thread retired_;                // the elastic thread that retired last, to join
  std::size_t idle_workers_ = 0;       // elastic threads waiting for a client
  bool quit_workers_ = false;
  bool urgent_ = false;  // a second stop request: no more grace

  detail::ServeControl control_;  // serve() once, start(), stop()'s wait

  std::atomic<std::size_t> accepted_{0};
  std::atomic<std::size_t> refused_{0};
  std::atomic<std::size_t> handler_errors_{0};
  std::atomic<std::size_t> accept_errors_{0};
  std::atomic<std::size_t> canceled_{0};
  std::atomic<std::size_t> timed_out_{0};
  std::atomic<std::size_t> peer_closed_{0};
  std::atomic<std::size_t> silent_{0};
};

template <StreamProtocol P, class H>
Server(Listener<P>, H) -> Server<P>;
template <StreamProtocol P, class H>
Server(Listener<P>, H, ServerOptions) -> Server<P>;

using TcpServer = Server<Tcp>;
using UnixServer = Server<Unix>;

}  // namespace sockpat

#endif  // SOCKPAT_SERVER_HPP

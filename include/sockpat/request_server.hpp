// sockpat: RequestServer<P, F>, the half-sync/half-async server (the NIO connector of servlet
// containers): one poller thread holds every connection between requests and frames what arrives;
// a fixed pool of worker threads runs the handler once per whole request. N workers serve any
// number of keep-alive clients, and a silent or dribbling client holds no worker.
#ifndef SOCKPAT_REQUEST_SERVER_HPP
#define SOCKPAT_REQUEST_SERVER_HPP

#include <algorithm>           // std::max, std::min
#include <atomic>              // std::atomic: a connection's owner (poller or worker), the counters
#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock
#include <concepts>            // std::same_as
#include <condition_variable>  // std::condition_variable: idle workers
#include <cstddef>             // std::size_t
#include <cstdint>             // std::uint64_t: poller tags
#include <deque>               // std::deque: requests waiting for a worker
#include <exception>           // std::exception_ptr
#include "sockpat/detail/function.hpp"  // std::function: RequestServerOptions::on_error
#include <list>                // std::list: connections, stable while workers hold them
#include <mutex>               // std::mutex
#include <optional>            // std::optional
#include <stop_token>          // std::stop_source, std::stop_token, std::stop_callback
#include <string>              // std::string: a connection's reply bytes
#include <string_view>         // std::string_view
#include <system_error>        // std::system_error
#include <thread>              // std::thread: the workers and start()
#include <type_traits>         // std::is_invocable_v
#include <utility>             // std::move
#include <vector>              // std::vector

#include "sockpat/backoff.hpp"  // Backoff, BackoffSequence: pauses after accept errors
#include "sockpat/connection.hpp"
#include "sockpat/detail/batch_thread.hpp"     // BatchThread: the poller does not preempt workers
#include "sockpat/detail/blocking.hpp"         // transient_accept_error
#include "sockpat/detail/poller.hpp"           // Poller: epoll (edge-triggered) or poll
#include "sockpat/detail/report.hpp"           // report_failure: on_error or stderr
#include "sockpat/detail/unique_function.hpp"  // UniqueFunction: a move-only handler
#include "sockpat/framing.hpp"                 // Framing, Decoder
#include "sockpat/listener.hpp"
#include "sockpat/server.hpp"  // Overload, detail::current_server, detail::ServeControl, detail::ServingThread

namespace sockpat {

struct RequestServerOptions {
  /// Worker threads that run the handler; 0 means std::thread::hardware_concurrency().
  std::size_t threads = 0;
  /// Connections held at once (each costs one descriptor and its buffers, no thread). 0: a bound
  /// from the descriptor limit, 64 left for the rest of the process. Past it, `overload` applies.
  std::size_t max_connections = 0;
  Overload overload = Overload::wait;
  /// TCP: TCP_NODELAY on each connection. Ignored for Unix-domain servers.
  bool no_delay = true;
  /// Linux: the poller thread runs as SCHED_BATCH while it serves, so a client's bytes arriving do
  /// not make it preempt a worker in the middle of a request: it runs when a worker waits, on an
  /// idle CPU, or at the end of a time slice, and then takes every ready connection at once. With
  /// the poller and one worker sharing a CPU this is 1.34x the round trips per second (bench/
  /// NOTES.md). serve()'s calling thread gets its policy back when serve() returns; a thread whose
  /// policy is not the default one (real-time, idle) is left alone, and so are the workers.
  /// false: the poller keeps its thread's policy. Other systems: no effect.
  bool batch_poller = true;
  /// How long a connection may take to send a whole request, counted from its accept or the end
  /// of its last reply (so a client dribbling a byte at a time is dropped too), and how long a
  /// reply may wait for a client that does not read it. std::nullopt: no limit.
  std::optional<std::chrono::steady_clock::duration> idle_timeout = std::chrono::seconds(60);
  /// Sent to a client whose bytes break the framing (a request over the framing's maximum size,
  /// a malformed frame) before its connection closes: an HTTP server puts its 431 or 400 here.
  /// Empty: the connection just closes.
  std::string rejection = {};
  /// After accept fails (out of descriptors or memory): the pauses before accepting again.
  Backoff accept_backoff{.initial = std::chrono::milliseconds(20), .max = std::chrono::milliseconds(500), .multiplier = 2.0,
                         .jitter = 0.0};
  /// Called with what a handler threw (with its peer) and with accept errors (no peer; once per
  /// run of failures), from the thread that met it, so it must be thread-safe. Unset: a line on stderr.
  std::function<void(std::exception_ptr error, const Endpoint& peer)> on_error = {};
};

/// Counters of a RequestServer, read at one moment.
struct RequestServerStats {
  std::size_t accepted = 0;        ///< connections accepted
  std::size_t refused = 0;         ///< accepted and closed at once (Overload::refuse)
  std::size_t active = 0;          ///< connections held now
  std::size_t requests = 0;        ///< requests handled
  std::size_t rejected = 0;        ///< connections whose bytes broke the framing (too large, malformed)
  std::size_t handler_errors = 0;  ///< handler calls that threw (reported to on_error)
  std::size_t accept_errors = 0;   ///< accepts that failed (EMFILE, ENFILE, ...)
  std::size_t canceled = 0;        ///< connections closed by the stop
  std::size_t timed_out = 0;       ///< connections dropped by the idle timeout
  std::size_t peer_closed = 0;     ///< connections the peer reset, or closed in the middle of a request
};

/// One request, as the handler sees it: its bytes, and the reply it builds. Valid during the call.
class Request {
 public:
  /// The request: one frame, without its delimiter or length prefix.
  [[nodiscard]] std::string_view data() const noexcept { return data_; }
  /// Appends raw bytes to the reply (sent as they are once the handler returns).
  void reply(std::string_view bytes) { out_->append(bytes); }
  /// Appends `payload` encoded as one frame of the server's framing. Throws std::system_error
  /// (frame_too_large, malformed_frame).
  void reply_frame(std::string_view payload) {
    FrameParts parts;
    if (auto ec = encode_(framing_, payload, parts)) detail::throw_error(ec, "reply_frame");
    out_->append(reinterpret_cast<const char*>(parts.prefix), parts.prefix_size);
    out_->append(payload);
    out_->append(parts.suffix);
  }
  /// Closes the connection once the reply is sent (HTTP's `Connection: close`).
  void close() noexcept { *close_ = true; }
  /// The client's address (a system call; empty if the client is gone already).
  [[nodiscard]] Endpoint peer() const noexcept { return peer_(connection_); }

 private:
  template <StreamProtocol, Framing>
  friend class RequestServer;
  using Encode = std::error_code (*)(const void*, std::string_view, FrameParts&) noexcept;
  using Peer = Endpoint (*)(const void*) noexcept;
  Request(std::string_view data, std::string* out, bool* close, const void* framing, Encode encode,
          const void* connection, Peer peer_lookup) noexcept
      : data_(data), out_(out), close_(close), framing_(framing), encode_(encode), connection_(connection), peer_(peer_lookup) {}

  std::string_view data_;
  std::string* out_;
  bool* close_;
  const void* framing_;
  Encode encode_;
  const void* connection_;
  Peer peer_;
};

/// Accepts clients on a Listener, frames what each sends with `framing` (DelimiterFraming,
/// LengthPrefixFraming or a Framing of your own) and calls `handler(request)` on a worker thread
/// for each whole request; the reply it builds is sent before the connection's next request is
/// handled, so pipelined requests are answered in order. Between requests a connection waits in
/// the poller thread, not in a worker.
///
/// A handler that throws is reported to on_error and its connection closed; the server goes on.
/// A handler should not block for long: while it runs it holds one of the `threads` workers.
/// Stopping (stop(), request_stop(), the token given to serve/start, SignalStop's token): accepting
/// ends, connections waiting for a request close at once, handlers running finish and their
/// replies are sent as far as the socket takes them without waiting; every thread is joined. A
/// handler that never returns keeps stop() waiting.
template <StreamProtocol P, Framing F>
class RequestServer {
 public:
  using protocol_type = P;
  using framing_type = F;
  using Handler = detail::UniqueFunction<void(Request&)>;

  /// Throws std::system_error if the poller cannot be opened.
  template <class H>
    requires std::is_invocable_v<H&, Request&>
  RequestServer(Listener<P> listener, F framing, H handler, RequestServerOptions options = {})
      : listener_(std::move(listener)),
        local_(listener_.local_endpoint()),
        framing_(std::move(framing)),
        handler_(std::move(handler)),
        options_(std::move(options)) {
    threads_ = options_.threads != 0 ? options_.threads : (std::max)(1u, std::thread::hardware_concurrency());
    const std::size_t descriptors = detail::descriptor_limit();
    max_ = options_.max_connections != 0 ? options_.max_connections : descriptors > 96 ? descriptors - 64 : 32;
    if (auto ec = waker_.open()) detail::throw_error(ec, detail::describe("open the wake-up channel of", local_));
    if (auto ec = poller_.open()) detail::throw_error(ec, detail::describe("open the poller of", local_));
    if (options_.idle_timeout) {
      // The idle timeout is checked on a tick of a tenth of it: a connection lives at most 10 % longer.
      tick_ = std::clamp(std::chrono::ceil<std::chrono::milliseconds>(*options_.idle_timeout / 10),
                         std::chrono::milliseconds(5), std::chrono::milliseconds(1000));
    }
  }
  /// Binds `local` (port 0 picks a free port: read it back with local_endpoint()) and serves it.
  template <class H>
    requires std::is_invocable_v<H&, Request&>
  RequestServer(const Endpoint& local, F framing, H handler, RequestServerOptions options = {})
      : RequestServer(Listener<P>::bind(local), std::move(framing), std::move(handler), std::move(options)) {}

  RequestServer(const RequestServer&) = delete;
  RequestServer& operator=(const RequestServer&) = delete;
  /// Stops and joins, as stop() does. Do not destroy a server from one of its own handlers.
  ~RequestServer() { stop(); }

  /// Runs the poller on this thread until a stop is requested (by stop(), request_stop() or
  /// `stop`), then stops and returns when every thread is joined. Returns at once on a server
  /// stopped already. Throws std::logic_error if it runs already.
  void serve(std::stop_token stop = {}) {
    if (!control_.begin("RequestServer")) return;
    serve_begun(std::move(stop));
  }

  /// serve() on a thread of its own; returns at once. stop() or the destructor joins it.
  /// Throws std::logic_error if the server runs already, std::system_error if no thread starts.
  void start(std::stop_token stop = {}) {
    control_.start("RequestServer", [this, stop] { serve_begun(stop); });
  }

  /// Asks the server to stop and returns at once; safe from any thread, a handler included.
  void request_stop() noexcept {
    if (stop_.request_stop()) waker_.notify();
  }

  /// Requests a stop and waits until serve() has returned. From the server's own threads (a
  /// handler, on_error) it only requests.
  void stop() noexcept {
    request_stop();
    control_.wait_stopped(this);
  }

  [[nodiscard]] bool stop_requested() const noexcept { return stop_.stop_requested(); }
  [[nodiscard]] std::stop_token stop_token() const noexcept { return stop_.get_token(); }
  /// Where the server listens (kept after the listener closes).
  [[nodiscard]] const Endpoint& local_endpoint() const noexcept { return local_; }
  [[nodiscard]] std::size_t threads() const noexcept { return threads_; }
  [[nodiscard]] std::size_t max_connections() const noexcept { return max_; }
  [[nodiscard]] const F& framing() const noexcept { return framing_; }

  [[nodiscard]] RequestServerStats stats() const noexcept {
    RequestServerStats s;
    s.accepted = accepted_.load();
    s.refused = refused_.load();
    s.active = active_.load();
    s.requests = requests_.load();
    s.rejected = rejected_.load();
    s.handler_errors = handler_errors_.load();
    s.accept_errors = accept_errors_.load();
    s.canceled = canceled_.load();
    s.timed_out = timed_out_.load();
    s.peer_closed = peer_closed_.load();
    return s;
  }

 private:
  // Who holds a connection. The poller holds it `parked` (reading a request), `writing` (a reply
  // the socket did not take at once) or `draining` (closing after a reply: its output shut down,
  // what the client still sends is read and dropped, so that a reset does not destroy the reply).
  // A worker holds it `busy`; `busy_missed` is busy plus "the poller saw it readable meanwhile".
  enum Owner : int { parked, busy, busy_missed, writing, draining };
  // What a worker gives back to the poller.
  enum class Back : unsigned char { none, park, write, close_after_reply, close_now, reject };

  struct Conn {
    Connection<P> connection;
    Decoder<F> decoder;
    std::atomic<int> owner{parked};
    detail::steady_time deadline = detail::no_deadline;  // parked, writing, draining: when it times out
    std::string out;              // reply bytes not yet sent
    std::size_t sent = 0;         // of `out`
    std::string_view request;     // the next request to handle (a view into `decoder`)
    bool has_request = false;     // `request` is one not handled yet
    bool eof = false;             // the client closed its side
    bool unread = false;          // bytes may wait in the socket past what was read
    bool close_after = false;     // writing: close once the reply is out
    bool registered = false;      // known to the poller
    Back back = Back::none;
    typename std::list<Conn>::iterator self;

    explicit Conn(const F& f) : decoder(f) {}
  };
  using ConnList = std::list<Conn>;

  static constexpr std::uint64_t listener_tag = 0;
  static constexpr std::uint64_t waker_tag = 1;
  static constexpr std::size_t read_chunk = 16 * 1024;
  // A worker answers at most this many pipelined requests of one connection in a row, then lets
  // the other connections' requests go first.
  static constexpr int requests_in_a_row = 32;
  // Replies of pipelined requests gathered up to this size before a send.
  static constexpr std::size_t reply_batch = 64 * 1024;

  void serve_begun(std::stop_token stop) noexcept {
    std::stop_callback on_stop(stop, [this]() noexcept { request_stop(); });
    {
      const detail::ServingThread serving(this);  // on_error runs here for accept and poll errors
      run();
    }
    control_.end();
  }

  void run() noexcept {
    std::error_code ec;
    try {
      ec = poller_.watch(listener_.native_handle(), listener_tag, true, false, listener_registered_);
      if (!ec) ec = poller_.watch(waker_.read_handle(), waker_tag, true, false, waker_registered_);
    } catch (...) {
      ec = detail::make_errc(std::errc::not_enough_memory);
    }
    if (ec) {
      report(std::make_exception_ptr(std::system_error(ec, detail::describe("watch the listener of", local_))), {});
      request_stop();
    }
    try {
      for (std::size_t i = 0; i < threads_; ++i) workers_.emplace_back([this] { work(); });
    } catch (...) {
      report(std::current_exception(), {});
      request_stop();
    }
    {
      // After the workers started: a new thread inherits its creator's policy.
      const detail::BatchThread batch(options_.batch_poller);
      poll_loop();
    }
    finish();
  }

  // --- the poller thread ---

  void poll_loop() noexcept {
    BackoffSequence pauses(options_.accept_backoff);
    // Deadlines are checked on a tick, even without an idle timeout: closing connections have one.
    auto next_tick = detail::time_after(tick_);
    while (!stop_.stop_requested()) {
      auto wake = next_tick;
      if (accept_ready_) {
        wake = (std::min)(wake, (std::max)(std::chrono::steady_clock::now(), accept_paused_until_));
      }
      bool woken = false;
      std::error_code ec;
      try {
        ec = poller_.wait(detail::poll_timeout_ms(wake), [&](std::uint64_t tag, bool readable, bool writable, bool) {
          if (tag == waker_tag) {
            woken = true;
          } else if (tag == listener_tag) {
            accept_ready_ = true;
          } else {
            on_event(*reinterpret_cast<Conn*>(static_cast<std::uintptr_t>(tag)), readable, writable);
          }
        });
      } catch (...) {
        ec = detail::make_errc(std::errc::not_enough_memory);  // the poll backend's set could not grow
      }
      if (ec) {
        report(std::make_exception_ptr(std::system_error(ec, detail::describe("poll on", local_))), {});
        break;
      }
      if (woken) {
        waker_.drain();
        take_back();
      }
      const auto now = std::chrono::steady_clock::now();
      if (accept_ready_ && now >= accept_paused_until_) accept_all(pauses);
      if (now >= next_tick) {
        expire(now);
        next_tick = detail::time_after(tick_);
      }
      free_closed();
    }
  }

  void on_event(Conn& c, bool readable, bool writable) noexcept {
    if (closed(c)) return;  // see close()
    int owner = c.owner.load(std::memory_order_acquire);
    if (owner == busy) {
      if (!readable) return;
      // The worker may park it this very moment: then it is ours, and read below.
      if (c.owner.compare_exchange_strong(owner, busy_missed, std::memory_order_acq_rel)) return;
    }
    switch (owner) {
      case parked:
        if (readable) read_and_dispatch(c);
        break;
      case writing:
        if (writable) flush(c);
        break;
      case draining:
        if (readable) drain(c);
        break;
      default: break;  // busy_missed: the worker reads it before it parks
    }
  }

  void accept_all(BackoffSequence& pauses) noexcept {
    if (listener_unwatched_) {
      listener_unwatched_ = false;
      (void)poller_.watch(listener_.native_handle(), listener_tag, true, false, listener_registered_);
    }
    for (;;) {
      if (active_.load() >= max_ && options_.overload == Overload::wait) {
        // Full: the clients wait in the backlog. A closing connection resumes accepting.
        accept_ready_ = false;
        if (!detail::Poller::edge_triggered) unwatch_listener();
        return;
      }
      detail::RawAddress peer;
      peer.size = sizeof peer.storage;
      std::error_code ec;
      const auto h = detail::accept_handle(listener_.native_handle(), peer.data(), &peer.size, ec);
      if (ec) {
        if (detail::transient_accept_error(ec)) continue;
        if (detail::would_block(ec)) {
          accept_ready_ = false;  // the next client brings an event
          pauses.reset();
          accept_reported_ = false;
          return;
        }
        ++accept_errors_;
        if (!accept_reported_) {
          report(std::make_exception_ptr(std::system_error(ec, detail::describe("accept on", local_))), {});
        }
        accept_reported_ = true;
        // Out of descriptors or memory: the clients stay in the backlog; try again after a pause
        // (a poll() backend would report the listener ready all along, so it stops watching it).
        accept_paused_until_ = detail::time_after(pauses.next());
        if (!detail::Poller::edge_triggered) unwatch_listener();
        return;
      }
      accept_paused_until_ = {};
      Connection<P> connection(Socket<P>(detail::UniqueHandle(h), listener_.family()));
      ++accepted_;
      if (active_.load() >= max_) {  // Overload::refuse
        ++refused_;
        continue;  // `connection` closes here
      }
      adopt(std::move(connection));
    }
  }

  void unwatch_listener() noexcept {
    // Level-triggered only: out of the set until accept_all runs again.
    (void)poller_.watch(listener_.native_handle(), listener_tag, false, false, listener_registered_);
    listener_unwatched_ = true;
  }

  void adopt(Connection<P> connection) noexcept {
    Conn* c = nullptr;
    try {
      c = &conns_.emplace_back(framing_);
      c->self = std::prev(conns_.end());
    } catch (...) {
      report(std::current_exception(), {});
      return;
    }
    ++active_;
    c->connection = std::move(connection);
    if constexpr (std::same_as<P, Tcp>) {
      // Best effort: only a broken socket refuses it, and its first read says so.
      if (options_.no_delay) (void)detail::set_int_option(c->connection.native_handle(), detail::option::no_delay, 1);
    }
    c->deadline = deadline_from_now();
    if (auto ec = poller_.watch(c->connection.native_handle(), tag_of(*c), true, false, c->registered)) {
      report(std::make_exception_ptr(std::system_error(ec, detail::describe("watch a client of", local_))),
             c->connection.remote_endpoint(ec));
      close(*c);
      return;
    }
    // A client that sent its request with the connect: read it now (an edge may have passed).
    read_and_dispatch(*c);
  }

  // Parked: read what is there; hand a whole request to a worker.
  void read_and_dispatch(Conn& c) noexcept {
    if (closed(c)) return;  // a failed set_interest just before closed it
    read_more(c);
    std::error_code ec;
    const auto frame = c.decoder.next(ec);
    if (ec) {
      reject(c);
      return;
    }
    if (frame) {
      dispatch(c, *frame);
      return;
    }
    if (c.eof) {
      if (!c.decoder.buffered().empty()) ++peer_closed_;  // gone in the middle of a request
      close(c);
    }
  }

  /// Reads until the socket is drained, the client closed, or the buffer holds enough for a frame
  /// of the framing's maximum size (then `unread` says more may wait). Poller or worker, whoever
  /// holds the connection. A read error closes nothing here: it sets eof and counts the reset.
  void read_more(Conn& c) noexcept {
    const std::size_t cap = framing_.max_frame_size() + read_chunk;
    c.unread = false;
    while (!c.eof) {
      const std::size_t have = c.decoder.buffered().size();
      if (have >= cap || have > cap - read_chunk) {  // bounded: the next scan finds a frame or an error
        c.unread = true;
        return;
      }
      std::span<char> room;
      try {
        // A frame known to be larger (a length prefix read already) is read in one go.
        room = c.decoder.prepare((std::max)(read_chunk, (std::min)(c.decoder.needed(), cap - have)));
      } catch (...) {
        c.unread = true;  // no memory now; the deadline ends it if it never comes
        return;
      }
      std::error_code ec;
      const std::size_t n = detail::recv_some(c.connection.native_handle(), room.data(), room.size(), 0, ec);
      if (ec) {
        if (detail::would_block(ec)) return;
        ++peer_closed_;
        c.decoder.discard(c.decoder.buffered().size());
        c.eof = true;  // reset: the buffered bytes are dropped, nothing more will be answered
        return;
      }
      if (n == 0) {
        c.eof = true;
        return;
      }
      c.decoder.commit(n);
      if (n < room.size()) return;  // a short read: drained for now, the next bytes bring an event
    }
  }

  void dispatch(Conn& c, std::string_view request) noexcept {
    c.request = request;
    c.has_request = true;
    if constexpr (!detail::Poller::edge_triggered) set_interest(c, false, false);
    c.owner.store(c.unread ? busy_missed : busy, std::memory_order_relaxed);  // published by the mutex
    {
      std::lock_guard lock(mutex_);
      try {
        queue_.push_back(&c);
      } catch (...) {
        c.owner.store(parked, std::memory_order_relaxed);
        close(c);
        return;
      }
    }
    work_cv_.notify_one();
  }

  // A worker gave connections back (the poll backend's parking, a reply to finish, a close).
  void take_back() noexcept {
    std::vector<Conn*> back;
    {
      std::lock_guard lock(mutex_);
      back.swap(returned_);
    }
    for (Conn* c : back) {
      const Back what = c->back;
      c->back = Back::none;
      switch (what) {
        case Back::park:
          c->owner.store(parked, std::memory_order_relaxed);
          set_interest(*c, true, false);
          if constexpr (detail::Poller::edge_triggered) read_and_dispatch(*c);
          break;
        case Back::write:
          c->owner.store(writing, std::memory_order_relaxed);
          c->deadline = deadline_from_now();
          set_interest(*c, false, true);
          flush(*c);
          break;
        case Back::close_after_reply: start_draining(*c); break;
        case Back::reject: reject(*c); break;
        case Back::close_now:
        case Back::none: close(*c); break;
      }
    }
  }

  // Writing: send what the socket takes; once all is out, the next request or park.
  void flush(Conn& c) noexcept {
    if (closed(c)) return;  // a failed set_interest just before closed it
    while (c.sent < c.out.size()) {
      std::error_code ec;
      const std::size_t n = detail::send_some(c.connection.native_handle(), c.out.data() + c.sent, c.out.size() - c.sent, ec);
      if (ec) {
        if (detail::would_block(ec)) return;
        ++peer_closed_;
        close(c);
        return;
      }
      c.sent += n;
    }
    c.out.clear();
    c.sent = 0;
    if (c.close_after) {
      start_draining(c);
      return;
    }
    c.owner.store(parked, std::memory_order_relaxed);
    c.deadline = deadline_from_now();
    set_interest(c, true, false);
    // A request may be buffered already (pipelined), or have arrived while it was writing.
    read_and_dispatch(c);
  }

  // Closing after a reply (Connection: close, a rejection): shut our side, and read and drop what
  // the client still sends until it closes too or a short while passes, so that a reset caused by
  // unread bytes does not destroy the reply before the client reads it (a lingering close).
  void start_draining(Conn& c) noexcept {
    (void)detail::shutdown_handle(c.connection.native_handle(), detail::shut_send);
    c.owner.store(draining, std::memory_order_relaxed);
    c.decoder.discard(c.decoder.buffered().size());
    c.deadline = detail::time_after(std::chrono::seconds(2));
    if (options_.idle_timeout && *options_.idle_timeout < std::chrono::seconds(2)) c.deadline = deadline_from_now();
    set_interest(c, true, false);
    drain(c);
  }

  void drain(Conn& c) noexcept {
    if (closed(c)) return;
    char sink[4096];
    for (int i = 0; i < 64; ++i) {  // bounded per event: a flood of garbage cannot hold the poller
      std::error_code ec;
      const std::size_t n = detail::recv_some(c.connection.native_handle(), sink, sizeof sink, 0, ec);
      if (ec && detail::would_block(ec)) return;
      if (ec || n == 0) {
        close(c);
        return;
      }
    }
  }

  void reject(Conn& c) noexcept {
    ++rejected_;
    if (options_.rejection.empty()) {
      close(c);
      return;
    }
    try {
      c.out.assign(options_.rejection);
    } catch (...) {
      close(c);
      return;
    }
    c.sent = 0;
    c.close_after = true;
    c.owner.store(writing, std::memory_order_relaxed);
    c.deadline = deadline_from_now();
    set_interest(c, false, true);
    flush(c);
  }

  void set_interest(Conn& c, bool read, bool write) noexcept {
    if (c.connection.native_handle() == detail::invalid_handle) return;
    std::error_code ec;
    try {
      ec = poller_.watch(c.connection.native_handle(), tag_of(c), read, write, c.registered);
    } catch (...) {
      ec = detail::make_errc(std::errc::not_enough_memory);
    }
    if (ec) {
      report(std::make_exception_ptr(std::system_error(ec, detail::describe("watch a client of", local_))), {});
      close(c);
    }
  }

  // Drops connections past their deadline (parked, writing or draining; never one a worker holds).
  void expire(std::chrono::steady_clock::time_point now) noexcept {
    for (auto& c : conns_) {
      if (c.connection.native_handle() == detail::invalid_handle) continue;
      const int owner = c.owner.load(std::memory_order_acquire);
      if (owner == busy || owner == busy_missed) continue;
      if (now < c.deadline) continue;
      if (owner != draining) ++timed_out_;
      close(c);
    }
  }

  // Closes now; the entry is freed after this round of events. Nothing reads or writes a closed
  // entry: a recv or send on its invalid handle would fail and count the failure as the peer's
  // (peer_closed). The guards matter where a set_interest that failed (no memory) closed the
  // connection in the middle of a step.
  void close(Conn& c) noexcept {
    if (closed(c)) return;
    // Out of the set before the close, although closing usually takes it out: while a forked
    // child holds a copy of the descriptor the socket lives on, and so would its registration,
    // whose next event would name this entry after it is freed.
    poller_.forget(c.connection.native_handle(), /*released=*/true, c.registered);
    std::error_code ignored;
    c.connection.close(ignored);
    try {
      closed_.push_back(c.self);
    } catch (...) {
      // Freed at stop instead.
    }
    // A slot, and a descriptor, free: accept again now, even in the middle of a pause after an
    // accept error (out of descriptors).
    if (active_.fetch_sub(1) == max_ || accept_paused_until_ != detail::steady_time{}) {
      accept_paused_until_ = {};
      accept_ready_ = true;  // an edge may have come and gone meanwhile
    }
  }

  static bool closed(const Conn& c) noexcept { return c.connection.native_handle() == detail::invalid_handle; }

  void free_closed() noexcept {
    for (const auto it : closed_) conns_.erase(it);
    closed_.clear();
  }

  // --- the workers ---

  void work() noexcept {
    detail::current_server() = this;
    for (;;) {
      Conn* c = nullptr;
      {
        std::unique_lock lock(mutex_);
        work_cv_.wait(lock, [this] { return !queue_.empty() || quit_; });
        if (queue_.empty()) return;
        c = queue_.front();
        queue_.pop_front();
      }
      serve_requests(*c);
    }
  }

  // Pipelined requests already buffered are answered together: their replies go out in one send.
  void serve_requests(Conn& c) noexcept {
    for (int n = 0; n < requests_in_a_row; ++n) {
      if (!c.has_request && !take_buffered(c)) {
        if (!send_reply(c) || !next_request(c)) return;
      }
      c.has_request = false;
      bool close_after = false;
      const std::size_t before = c.out.size();
      if (!handle(c, c.request, close_after)) {
        // The replies to the requests before it still go out; what the failed call wrote does not.
        c.out.resize(before);
        c.close_after = true;  // also when the poller has to finish the send
        if (send_reply(c)) give_back(c, Back::close_now);
        return;
      }
      if (close_after || stop_.stop_requested()) {
        c.close_after = true;
        if (send_reply(c)) give_back(c, Back::close_after_reply);
        return;
      }
      if (c.out.size() >= reply_batch && !send_reply(c)) return;
    }
    if (send_reply(c)) requeue(c);  // the other connections' requests first
  }

  // The next request if it is buffered whole already (no read, no error handling: next_request
  // sees the same bytes again).
  bool take_buffered(Conn& c) noexcept {
    std::error_code ec;
    const auto frame = c.decoder.next(ec);
    if (!frame) return false;
    c.request = *frame;
    c.has_request = true;
    return true;
  }

  // Runs the handler; false if it threw (reported; the connection is then closed).
  bool handle(Conn& c, std::string_view request, bool& close_after) noexcept {
    try {
      Request r(request, &c.out, &close_after, &framing_, &encode_with, &c.connection, &peer_of);
      handler_(r);
      ++requests_;
      return true;
    } catch (...) {
      ++handler_errors_;
      std::error_code ignored;
      report(std::current_exception(), c.connection.remote_endpoint(ignored));
      return false;
    }
  }

  // Sends the reply without waiting; what the socket does not take goes to the poller. False when
  // the connection went back to the poller.
  bool send_reply(Conn& c) noexcept {
    while (c.sent < c.out.size()) {
      std::error_code ec;
      const std::size_t n = detail::send_some(c.connection.native_handle(), c.out.data() + c.sent, c.out.size() - c.sent, ec);
      if (ec) {
        if (detail::would_block(ec)) {
          give_back(c, Back::write);
          return false;
        }
        ++peer_closed_;
        give_back(c, Back::close_now);
        return false;
      }
      c.sent += n;
    }
    c.out.clear();
    c.sent = 0;
    return true;
  }

  // The connection's next request: buffered already, or read now. True when c.request holds it;
  // false when the connection was parked or given back.
  bool next_request(Conn& c) noexcept {
    for (int round = 0; round < 4; ++round) {
      std::error_code ec;
      if (const auto frame = c.decoder.next(ec)) {
        c.request = *frame;
        c.has_request = true;
        return true;
      }
      if (ec) {
        give_back(c, Back::reject);
        return false;
      }
      if (c.eof) {
        if (!c.decoder.buffered().empty()) ++peer_closed_;  // gone in the middle of a request
        give_back(c, Back::close_now);
        return false;
      }
      if (c.unread) {
        read_more(c);
        continue;
      }
      c.deadline = deadline_from_now();
      if constexpr (detail::Poller::edge_triggered) {
        // Parked without waking the poller: from here on it reads the next edge. If it saw one
        // while we held the connection (busy_missed), the bytes are read here instead.
        int expected = busy;
        if (c.owner.compare_exchange_strong(expected, parked, std::memory_order_acq_rel)) return false;
        c.owner.store(busy, std::memory_order_relaxed);
        c.unread = true;
      } else {
        give_back(c, Back::park);  // poll(): only the poller's thread changes its set
        return false;
      }
    }
    requeue(c);  // still reading: again, behind the others
    return false;
  }

  // Back in the workers' queue (state busy), behind the requests that wait.
  void requeue(Conn& c) noexcept {
    {
      std::lock_guard lock(mutex_);
      if (!quit_) {
        try {
          queue_.push_back(&c);
          work_cv_.notify_one();
          return;
        } catch (...) {
        }
      }
    }
    give_back(c, Back::close_now);
  }

  void give_back(Conn& c, Back what) noexcept {
    c.back = what;
    bool first = false;
    {
      std::lock_guard lock(mutex_);
      try {
        first = returned_.empty();
        returned_.push_back(&c);
      } catch (...) {
        // No memory to hand it back: it stays busy until the stop closes it.
        return;
      }
    }
    if (first) waker_.notify();
  }

  // --- stop ---

  void finish() noexcept {
    std::error_code ignored;
    poller_.forget(listener_.native_handle(), false, listener_registered_);
    listener_.close(ignored);
    {
      std::lock_guard lock(mutex_);
      quit_ = true;
      queue_.clear();  // requests not started: their connections close below
    }
    work_cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
    returned_.clear();
    for (auto& c : conns_) {
      if (c.connection.native_handle() == detail::invalid_handle) continue;
      ++canceled_;
      close(c);
    }
    closed_.clear();
    conns_.clear();
  }

  // --- helpers ---

  [[nodiscard]] detail::steady_time deadline_from_now() const noexcept {
    return options_.idle_timeout ? detail::time_after(*options_.idle_timeout) : detail::no_deadline;
  }
  static std::uint64_t tag_of(Conn& c) noexcept { return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&c)); }
  static std::error_code encode_with(const void* framing, std::string_view payload, FrameParts& parts) noexcept {
    return static_cast<const F*>(framing)->encode(payload, parts);
  }
  static Endpoint peer_of(const void* connection) noexcept {
    std::error_code ignored;
    return static_cast<const Connection<P>*>(connection)->remote_endpoint(ignored);
  }
  void report(std::exception_ptr error, const Endpoint& peer) noexcept {
    detail::report_failure(options_.on_error, "request server", local_, std::move(error), peer);
  }

  Listener<P> listener_;
  Endpoint local_;
  F framing_;
  Handler handler_;
  RequestServerOptions options_;
  std::size_t threads_ = 0;
  std::size_t max_ = 0;
  std::chrono::milliseconds tick_{1000};
  std::stop_source stop_;
  detail::Waker waker_;

  // The poller thread's own.
  detail::Poller poller_;
  ConnList conns_;
  std::vector<typename ConnList::iterator> closed_;
  bool listener_registered_ = false;
  bool waker_registered_ = false;
  bool listener_unwatched_ = false;
  bool accept_ready_ = true;
  bool accept_reported_ = false;
  detail::steady_time accept_paused_until_{};  // after an accept error: no accept before it

  std::mutex mutex_;                   // guards the queues
  std::condition_variable work_cv_;    // a request queued, or workers told to quit
  std::deque<Conn*> queue_;            // connections with a whole request, for the workers
  std::vector<Conn*> returned_;        // given back to the poller
  std::vector<std::thread> workers_;
  bool quit_ = false;

  detail::ServeControl control_;  // serve() once, start(), stop()'s wait

  std::atomic<std::size_t> accepted_{0};
  std::atomic<std::size_t> refused_{0};
  std::atomic<std::size_t> active_{0};
  std::atomic<std::size_t> requests_{0};
  std::atomic<std::size_t> rejected_{0};
  std::atomic<std::size_t> handler_errors_{0};
  std::atomic<std::size_t> accept_errors_{0};
  std::atomic<std::size_t> canceled_{0};
  std::atomic<std::size_t> timed_out_{0};
  std::atomic<std::size_t> peer_closed_{0};
};

template <StreamProtocol P, Framing F, class H>
RequestServer(Listener<P>, F, H) -> RequestServer<P, F>;
template <StreamProtocol P, Framing F, class H>
RequestServer(Listener<P>, F, H, RequestServerOptions) -> RequestServer<P, F>;

}  // namespace sockpat

#endif  // SOCKPAT_REQUEST_SERVER_HPP

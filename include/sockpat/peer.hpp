// sockpat: a peer-to-peer node on the event loop (docs/peer-protocol.md, docs/patterns.md).
// A Peer listens, dials the endpoints it is given and those it learns of, keeps one link per
// pair of nodes, and carries direct messages and broadcasts that reach every node once.
// PeerThread runs one on a thread of its own for blocking programs.
#ifndef SOCKPAT_PEER_HPP
#define SOCKPAT_PEER_HPP

#include <algorithm>           // std::find, std::min
#include <atomic>              // std::atomic: entropy_seed's call count
#include <concepts>            // std::invocable: PeerLeftCallback
#include <condition_variable>  // std::condition_variable: PeerThread's start and waits
#include <cstddef>             // std::size_t
#include <cstdint>             // std::uint8_t, std::uint64_t
#include <deque>               // std::deque: send queues, the seen-set's order
#include <exception>           // std::exception_ptr
#include <functional>          // std::function: callbacks
#include <map>                 // std::map: links by node id
#include <memory>              // std::shared_ptr, std::weak_ptr
#include <mutex>               // std::mutex: PeerThread's snapshot
#include <optional>            // std::optional
#include <stop_token>          // std::stop_source: cancels dials on close
#include <string>              // std::string
#include <thread>              // std::thread: PeerThread
#include <unordered_map>       // std::unordered_map: known nodes
#include <unordered_set>       // std::unordered_set: seen broadcasts, endpoints being dialed
#include <utility>             // std::move, std::exchange
#include <vector>              // std::vector

#include "sockpat/backoff.hpp"  // Backoff, BackoffSequence: redials
#include "sockpat/detail/chrono.hpp"      // std::chrono::milliseconds, steady_clock
#include "sockpat/detail/splitmix64.hpp"  // SplitMix64: node ids, redial jitter seeds
#include "sockpat/event_loop.hpp"
#include "sockpat/framing.hpp"  // LengthPrefixFraming
#include "sockpat/peer_wire.hpp"
#include "sockpat/streams.hpp"  // start_server, make_streams, StreamReader, StreamWriter
#include "sockpat/task.hpp"
#include "sockpat/task_group.hpp"  // TaskSet, TaskHandle: the node's tasks

namespace sockpat {

/// What a Peer is told at construction. Every table it keeps is bounded by these.
struct PeerOptions {
  /// Where it listens (port 0: the OS picks; an empty Endpoint: it does not listen). TCP only.
  Endpoint listen = Endpoint("127.0.0.1", 0);
  /// Endpoints to dial at start (a member of the mesh is enough when `discover` is on).
  std::vector<Endpoint> join = {};
  /// 0: a random id, new at each start (a restarted node is a new node to the others).
  std::uint64_t node_id = 0;
  /// The Hello of the other side must arrive within this; connecting is bounded by it too.
  std::chrono::milliseconds handshake_timeout{5000};
  /// The largest frame body accepted; a longer one closes the link.
  std::size_t max_frame = std::size_t{1} << 20;
  /// The most links a node keeps and the most nodes it remembers; past it, it dials no one
  /// and closes new links after telling them the nodes it knows.
  std::size_t peer_limit = 64;
  /// Bytes a link's send queue may hold (at least max_frame + 4); a peer that lets it fill
  /// up (it stopped reading) is disconnected.
  std::size_t send_queue_limit = std::size_t{4} << 20;
  /// Redialling a lost link or an unreachable endpoint: Backoff's defaults, 100 ms doubled up to
  /// 10 s, each pause shortened by up to a quarter.
  Backoff redial{};
  /// A node that cannot be reached for this long is forgotten (no more redials).
  std::chrono::milliseconds forget_after{60000};
  /// How many times a broadcast may be forwarded (the mesh's diameter must be below it).
  std::uint8_t hop_limit = 32;
  /// How many (origin, message id) pairs a node remembers to deliver each broadcast once.
  std::size_t seen_capacity = 16384;
  /// Exchange the nodes known (Peers messages) and dial the new ones.
  bool discover = true;
  /// A link that has brought nothing for this long is sent a Ping (a Pong, or any frame,
  /// answers it). Kept below liveness_timeout.
  std::chrono::milliseconds ping_interval{1000};
  /// A link that has brought nothing for this long is declared dead (PeerLeftReason::timed_out),
  /// closed and redialled. 0: no pings and no timeout (a silent link then lasts until a reset).
  std::chrono::milliseconds liveness_timeout{5000};
};

/// Why a node is reported left (PeerLeft::reason).
enum class PeerLeftReason : unsigned char {
  closed,          ///< the link ended in order: the other node closed it, or this one did (close())
  reset,           ///< the connection failed: a reset or another network error
  timed_out,       ///< nothing arrived on it for liveness_timeout: closed, then redialled
  rejected,        ///< the other node refused the link (PeerLeft::detail says why); not redialled
  protocol_error,  ///< it sent a frame or message this node does not accept: closed
  queue_full,      ///< it stopped reading and its send queue passed send_queue_limit: closed
};

/// "closed", "reset", "timed out", "rejected", "protocol error", "queue full".
inline const char* to_string(PeerLeftReason r) noexcept {
  switch (r) {
    case PeerLeftReason::closed: return "closed";
    case PeerLeftReason::reset: return "reset";
    case PeerLeftReason::timed_out: return "timed out";
    case PeerLeftReason::rejected: return "rejected";
    case PeerLeftReason::protocol_error: return "protocol error";
    case PeerLeftReason::queue_full: return "queue full";
  }
  return "?";
}

/// A node that left, or that refused a link (then no joined came before it).
struct PeerLeft {
  std::uint64_t id = 0;
  PeerLeftReason reason = PeerLeftReason::closed;
  std::string detail = {};  ///< rejected: the reason the other node gave
};

/// The on_peer_left callback: takes `const PeerLeft&`, or only the node id as before.
class PeerLeftCallback {
 public:
  PeerLeftCallback() = default;
  template <class F>
    requires std::invocable<F&, const PeerLeft&>
  PeerLeftCallback(F f) : f_(std::move(f)) {}  // NOLINT: converting, as std::function's is
  template <class F>
    requires(!std::invocable<F&, const PeerLeft&> && std::invocable<F&, std::uint64_t>)
  PeerLeftCallback(F f) : f_([f = std::move(f)](const PeerLeft& l) mutable { f(l.id); }) {}  // NOLINT
  PeerLeftCallback(std::nullptr_t) noexcept {}  // NOLINT
  explicit operator bool() const noexcept { return static_cast<bool>(f_); }
  void operator()(const PeerLeft& l) const { f_(l); }

 private:
  std::function<void(const PeerLeft&)> f_;
};

/// What a send or broadcast did (PeerSendResult::status).
enum class PeerSendStatus : unsigned char {
  queued,        ///< queued on the links of the nodes in `to`
  unknown_node,  ///< send: this node has never heard of that id
  not_linked,    ///< send: the node is known but its link is not up (not yet, or lost);
                 ///< broadcast: no link is up
  queue_full,    ///< the link's queue passed send_queue_limit: the link is closed (rule 5)
  too_large,     ///< its frame would pass max_frame: sent to no one
  closed,        ///< the node is closing, or closed
};

/// "queued", "unknown node", "not linked", "queue full", "too large", "closed".
inline const char* to_string(PeerSendStatus s) noexcept {
  switch (s) {
    case PeerSendStatus::queued: return "queued";
    case PeerSendStatus::unknown_node: return "unknown node";
    case PeerSendStatus::not_linked: return "not linked";
    case PeerSendStatus::queue_full: return "queue full";
    case PeerSendStatus::too_large: return "too large";
    case PeerSendStatus::closed: return "closed";
  }
  return "?";
}

/// Returned by send and broadcast; true when the message was queued. Queued is not delivered:
/// a link that fails later loses what it held.
struct PeerSendResult {
  PeerSendStatus status = PeerSendStatus::closed;
  std::vector<std::uint64_t> to = {};  ///< the linked nodes it was queued for
  explicit operator bool() const noexcept { return status == PeerSendStatus::queued; }
};

enum class PeerMessageKind : unsigned char { direct, broadcast };

/// A message delivered to the application.
struct PeerMessage {
  std::uint64_t from = 0;  ///< the sender: for a broadcast, the node it started at
  std::string payload = {};
  PeerMessageKind kind = PeerMessageKind::direct;
};

/// One linked node.
struct PeerLinkInfo {
  std::uint64_t id = 0;
  Endpoint listen = {};  ///< where it says it listens (empty: it does not)
  bool dialed = false;  ///< this node dialed the link
  friend bool operator==(const PeerLinkInfo&, const PeerLinkInfo&) = default;
};

/// Counters, for tests and monitoring.
struct PeerStats {
  std::size_t links = 0;             ///< linked nodes
  std::size_t connections = 0;       ///< open connections: linked, in handshake or being retired
  std::size_t known = 0;             ///< nodes remembered (with where they listen), for redials
  std::size_t dialing = 0;           ///< endpoints being dialed or redialled now
  std::size_t queued_bytes = 0;      ///< bytes in every send queue now
  std::size_t max_link_queued = 0;   ///< the most bytes one link's queue ever held
  std::size_t slow_closed = 0;       ///< links closed because their queue passed its bound
  std::size_t bad_closed = 0;        ///< links closed for a bad handshake, frame or message
  std::size_t duplicate_links = 0;   ///< links closed by the one-link-per-pair rule
  std::size_t duplicates_dropped = 0;  ///< broadcasts received again and not delivered
  std::size_t forwarded = 0;         ///< broadcast copies forwarded
  std::size_t pings_sent = 0;        ///< Pings sent on idle links
  std::size_t timed_out = 0;         ///< links declared dead after liveness_timeout
  std::size_t refused = 0;           ///< links this node refused (its peer limit)
  std::size_t rejected = 0;          ///< links other nodes refused
};

namespace detail {

/// A seed that differs between processes started at the same moment (the addresses of a stack
/// variable and of this function's static move with address-space layout randomisation, the
/// clocks with time) and between calls in one process (a counter, the thread). Not a secret.
inline std::uint64_t entropy_seed() noexcept {
  static std::atomic<std::uint64_t> calls{0};
  const int on_stack = 0;
  const std::uint64_t parts[] = {
      static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()),
      static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()),
      static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&on_stack)),
      static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&calls)),
      static_cast<std::uint64_t>(std::hash<std::thread::id>{}(std::this_thread::get_id())),
      calls.fetch_add(1, std::memory_order_relaxed),
  };
  std::uint64_t h = 0;
  for (const std::uint64_t p : parts) h = SplitMix64(h ^ p)();
  return h;
}

/// Resumes every coroutine waiting on it when notified (a condition without a predicate).
/// Loop thread only.
class PeerNotify {
 public:
  class [[nodiscard]] Awaiter final : private ListWaiter {
   public:
    explicit Awaiter(PeerNotify& n) noexcept : ListWaiter(n.waiters_) {}
    using ListWaiter::cancel_before_start;
    bool await_ready() { return begin(); }
    using ListWaiter::await_suspend;
    void await_resume() const { check("peer wait"); }
  };

  PeerNotify() = default;
  PeerNotify(const PeerNotify&) = delete;
  PeerNotify& operator=(const PeerNotify&) = delete;
  ~PeerNotify() { notify_all(); }

  Awaiter wait() noexcept { return Awaiter(*this); }
  void notify_all() noexcept { waiters_.complete_all(); }

 private:
  WaitList waiters_;
};

struct PeerLinkState {
  enum class Phase : unsigned char { handshake, up, retired, closed };
  PeerLinkState(StreamReader r, StreamWriter w, bool d) : reader(std::move(r)), writer(std::move(w)), dialed(d) {}

  StreamReader reader;
  StreamWriter writer;
  bool dialed;
  Phase phase = Phase::handshake;
  std::uint64_t id = 0;
  Endpoint listen;
  std::deque<std::string> queue;  // frames not yet handed to the writer
  std::size_t queued = 0;         // their bytes, and those of the frame being written
  bool finish = false;            // close once the queue is sent
  bool half_close = false;        // retired: send what is queued, then end the stream
  bool bad = false;               // closed by this node for a protocol error or a full queue
  bool dropped = false;           // its queue overflowed: aborted, to be taken out of the tables
  bool writing = false;           // the writer has taken its first frame (the Hello) off the queue
  std::optional<PeerLeftReason> reason;  // why this node ended it, when it did
  std::string detail;                    // a Reject's text
  std::chrono::steady_clock::time_point heard{};  // the last frame that arrived
  std::chrono::steady_clock::time_point pinged{};  // the last Ping sent
  PeerNotify wake;
};

// A template only so that a translation unit that does not use a Peer does not pay for
// compiling its coroutines (the umbrella header includes this one).
template <class Unused = void>
class BasicPeerState final : public std::enable_shared_from_this<BasicPeerState<Unused>> {
 public:
  using Link = std::shared_ptr<PeerLinkState>;
  // How a connection ended: failed (before or in the handshake), self (it reached this
  // node), retired (never linked, or not the kept link), lost (linked, ended by the other side
  // or the network: redial), closed_by_us (linked, closed for a protocol error or on close()),
  // rejected (the other node refused it: no redial).
  // handshake() returns lost for "linked" and session() works out the end.
  enum class Outcome : unsigned char { failed, self, retired, lost, closed_by_us, rejected };

  explicit BasicPeerState(PeerOptions o) : options(std::move(o)), loop(EventLoop::current()) {
    if (loop == nullptr) throw std::logic_error("sockpat: a Peer is made on the thread of a running EventLoop");
    // until_idle() waits on `changed` for every set to empty.
    for (TaskSet* set : {&dials, &tasks, &ticker}) {
      set->on_empty = [](void* state) noexcept { static_cast<BasicPeerState*>(state)->changed.notify_all(); };
      set->context = this;
    }
    if (options.send_queue_limit < options.max_frame + 4) options.send_queue_limit = options.max_frame + 4;
    if (options.peer_limit == 0) options.peer_limit = 1;
    if (options.seen_capacity == 0) options.seen_capacity = 1;
    if (options.liveness_timeout.count() < 0) options.liveness_timeout = std::chrono::milliseconds(0);
    if (options.liveness_timeout.count() > 0 &&
        (options.ping_interval.count() <= 0 || options.ping_interval >= options.liveness_timeout)) {
      options.ping_interval = (std::max)(std::chrono::milliseconds(1), options.liveness_timeout / 2);
    }
    id = options.node_id;
    while (id == 0) id = rng();
  }

  PeerOptions options;
  EventLoop* loop;
  std::uint64_t id = 0;
  Endpoint local;
  StreamServer server;
  SplitMix64 rng{entropy_seed()};
  std::map<std::uint64_t, Link> up;          // one link per linked node
  std::vector<Link> all;                     // every open connection
  std::unordered_map<std::uint64_t, Endpoint> known;
  std::unordered_set<std::string> dialing;   // endpoints a dial task owns
  std::unordered_set<std::string> self_endpoints;
  // Every task of the node: the dials (with the sessions of the links they made; cancelled
  // only by an abort), the sessions of accepted connections and the links' writers, and the
  // liveness ticker (cancelled on any close: it has nothing to finish).
  TaskSet dials{false};
  TaskSet tasks{false};
  TaskSet ticker{false};
  PeerNotify changed;                        // a link came or went, a message arrived, a task ended
  std::stop_source stop;
  bool stopping = false;
  PeerStats counters;
  std::uint64_t next_message = 1;

  struct SeenKey {
    std::uint64_t origin, id;
    friend bool operator==(const SeenKey&, const SeenKey&) = default;
  };
  struct SeenHash {
    std::size_t operator()(const SeenKey& k) const noexcept {
      return std::hash<std::uint64_t>()(k.origin * 0x9e3779b97f4a7c15ULL ^ k.id);
    }
  };
  std::unordered_set<SeenKey, SeenHash> seen;
  std::deque<SeenKey> seen_order;

  std::function<void(const PeerMessage&)> on_message;
  std::function<void(std::uint64_t, const Endpoint&)> on_joined;
  PeerLeftCallback on_left;

  [[nodiscard]] LengthPrefixFraming framing() const { return LengthPrefixFraming(options.max_frame); }
  [[nodiscard]] StreamOptions stream_options() const {
    StreamOptions s;
    s.limit = options.max_frame + 4;
    s.high_water = (std::min)(std::size_t{64} * 1024, options.send_queue_limit);
    s.low_water = s.high_water / 4;
    return s;
  }

  Task<void> start() {
    if (!options.listen.empty()) {
      std::weak_ptr<BasicPeerState> weak = this->shared_from_this();
      StreamServerOptions so;
      so.streams = stream_options();
      so.grace = std::chrono::hours(24);  // close() ends the links itself, gracefully
      auto handler = [weak](StreamReader r, StreamWriter w) -> Task<void> { return accepted(weak, std::move(r), std::move(w)); };
      server = co_await start_server(handler, options.listen.host(), options.listen.port(), so);
      local = server.local_endpoint();
      self_endpoints.insert(local.to_string());
    }
    if (options.liveness_timeout.count() > 0) ticker.start(liveness_task(this->shared_from_this()))->release();
    for (const auto& e : options.join) dial(e, 0, false);
  }

  // One ticker for every link, rather than a timer per link: it pings the idle ones and
  // closes the silent ones, so a link is declared dead within liveness_timeout + one tick.
  static Task<void> liveness_task(std::shared_ptr<BasicPeerState> self) {
    const auto tick = (std::max)(std::chrono::milliseconds(1),
                                 (std::min)(self->options.ping_interval, self->options.liveness_timeout / 4));
    for (;;) {
      bool cancelled = false;
      try {
        co_await sleep(tick);
      } catch (const std::system_error&) {
        cancelled = true;
      }
      if (cancelled || self->stopping) break;
      self->check_liveness(std::chrono::steady_clock::now());
    }
  }

  void check_liveness(std::chrono::steady_clock::time_point now) {
    std::vector<Link> silent;
    for (auto& [node, l] : up) {
      if (now - l->heard >= options.liveness_timeout) {
        silent.push_back(l);
      } else if (now - l->heard >= options.ping_interval && now - l->pinged >= options.ping_interval) {
        l->pinged = now;
        ++counters.pings_sent;
        enqueue(l, wire::Ping{rng()}, true);
      }
    }
    // Aborting ends the link's read, and its session takes it out of `up`: not while iterating.
    for (auto& l : silent) {
      if (l->reason) continue;
      l->reason = PeerLeftReason::timed_out;
      ++counters.timed_out;
      l->writer.abort();
    }
  }

  [[nodiscard]] wire::Hello hello() const { return wire::Hello{wire::protocol_version, id, local}; }

  // The server's handler hands the connection to a task of the node's own, so that close()
  // reaches it with the node's other tasks.
  static Task<void> accepted(std::weak_ptr<BasicPeerState> weak, StreamReader r, StreamWriter w) {
    auto self = weak.lock();
    if (!self || self->stopping) co_return;
    auto link = std::make_shared<PeerLinkState>(std::move(r), std::move(w), false);
    const TaskHandle<void> run(self->tasks.start(accepted_session(self, link)));
    co_await run;
  }
  static Task<void> accepted_session(std::shared_ptr<BasicPeerState> self, Link link) {
    const Outcome out = co_await session(self, link);
    if (out == Outcome::lost) self->redial_lost(link->id);
  }

  /// Starts a dial task for `e` unless one runs already.
  void dial(const Endpoint& e, std::uint64_t expect, bool wait_first) {
    if (stopping || e.empty() || e.is_unix()) return;
    const std::string key = e.to_string();
    if (self_endpoints.count(key) != 0 || dialing.count(key) != 0) return;
    dialing.insert(key);
    dials.start(dial_task(this->shared_from_this(), e, expect, wait_first))->release();  // no handle
  }

  void redial_lost(std::uint64_t node) {
    if (stopping || up.count(node) != 0) return;
    const auto it = known.find(node);
    if (it != known.end()) dial(it->second, node, true);
  }

  static Task<void> dial_task(std::shared_ptr<BasicPeerState> self, Endpoint e, std::uint64_t expect, bool wait_first) {
    const std::string key = e.to_string();
    const auto& o = self->options;
    BackoffSequence delays(o.redial, self->rng());
    auto give_up = std::chrono::steady_clock::now() + o.forget_after;
    bool wait = wait_first;
    for (;;) {
      if (wait) {
        // The pause ends early when the node closes: a graceful close does not cancel the
        // dials, some of which are sessions still sending (begin_close).
        const auto until = std::chrono::steady_clock::now() + delays.next();
        bool cancelled = false;
        for (auto now = std::chrono::steady_clock::now(); !self->stopping && now < until;
             now = std::chrono::steady_clock::now()) {
          try {
            co_await sockpat::wait_for(self->changed.wait(), until - now);
          } catch (const std::system_error& failure) {
            if (failure.code() != std::errc::timed_out) cancelled = true;
          }
          if (cancelled) break;
        }
        if (cancelled) break;
      }
      wait = true;
      if (self->stopping || (expect != 0 && self->up.count(expect) != 0)) break;
      if (std::chrono::steady_clock::now() > give_up) {
        if (expect != 0) self->known.erase(expect);
        break;
      }
      std::optional<TcpConnection> conn;
      try {
        conn.emplace(co_await TcpConnection::async_connect(e, Deadline(o.handshake_timeout, self->stop.get_token())));
      } catch (const std::system_error&) {
        continue;
      }
      if (self->stopping) break;
      auto [r, w] = make_streams(std::move(*conn), self->stream_options());
      auto link = std::make_shared<PeerLinkState>(std::move(r), std::move(w), true);
      const Outcome out = co_await session(self, link);
      if (out == Outcome::failed) continue;
      if (out == Outcome::rejected) break;  // it is full: other nodes, learned from it, may not be
      if (out == Outcome::self) {
        self->self_endpoints.insert(key);
        break;
      }
      if (out != Outcome::lost) break;
      // Linked, then lost: redial the same endpoint; a node there now with another id is a
      // restarted node, and the one before it is forgotten.
      if (expect != 0 && expect != link->id) self->known.erase(expect);
      expect = link->id;
      delays.reset();
      give_up = std::chrono::steady_clock::now() + o.forget_after;
    }
    self->dialing.erase(key);
    self->changed.notify_all();  // until_idle waits for the dials
  }

  /// Runs one connection: Hello both ways, then messages until it ends.
  static Task<Outcome> session(std::shared_ptr<BasicPeerState> self, Link link) {
    self->all.push_back(link);
    self->tasks.start(writer_task(self, link))->release();  // no handle
    // The dialer says Hello at once; the accepting node answers once it has read the dialer's,
    // so that a node it refuses gets a Reject instead (docs/peer-protocol.md, rule 1).
    if (link->dialed) self->enqueue(link, self->hello());
    const auto framing = self->framing();

    std::optional<std::string> first;
    try {
      first = co_await wait_for(link->reader.read_frame(framing), self->options.handshake_timeout);
    } catch (const std::exception&) {
      first.reset();
    }
    Outcome out = Outcome::failed;
    if (first) out = self->handshake(link, *first);
    if (out == Outcome::failed || out == Outcome::self) {
      self->finish(link, out == Outcome::failed);
      co_return out;
    }
    link->heard = std::chrono::steady_clock::now();
    bool error = false;
    for (;;) {
      std::optional<std::string> f;
      try {
        if (link->phase == PeerLinkState::Phase::retired) {
          f = co_await wait_for(link->reader.read_frame(framing), self->options.handshake_timeout);
        } else {
          f = co_await link->reader.read_frame(framing);
        }
      } catch (const std::system_error& e) {
        error = true;
        // A frame too large or malformed is the peer's fault; a reset or a close is the network's.
        if (e.code() == errc::frame_too_large || e.code() == errc::malformed_frame || e.code() == errc::buffer_full) link->bad = true;
      }
      if (error || !f) break;
      link->heard = std::chrono::steady_clock::now();
      if (!self->handle(link, *f)) {
        link->bad = true;
        break;
      }
      if (link->phase == PeerLinkState::Phase::closed || link->reason == PeerLeftReason::rejected) break;
    }
    const auto it = self->up.find(link->id);
    const bool was_up = it != self->up.end() && it->second == link;
    const bool bad = link->bad;
    if (!link->reason) {
      if (bad) {
        link->reason = PeerLeftReason::protocol_error;
      } else if (self->stopping || !error) {
        link->reason = PeerLeftReason::closed;
      } else {
        link->reason = PeerLeftReason::reset;
      }
    }
    self->finish(link, bad);
    if (link->reason == PeerLeftReason::rejected) co_return Outcome::rejected;
    if (!was_up) co_return Outcome::retired;
    co_return (bad || self->stopping) ? Outcome::closed_by_us : Outcome::lost;
  }

  // `self` keeps the node's state (and the set this task is in) alive while it writes.
  static Task<void> writer_task([[maybe_unused]] std::shared_ptr<BasicPeerState> self, Link link) {
    bool failed = false;
    try {
      for (;;) {
        if (link->phase == PeerLinkState::Phase::closed) break;
        if (link->queue.empty()) {
          if (link->finish) {
            link->writer.close();
            break;
          }
          if (link->half_close) {
            link->writer.write_eof();
            break;
          }
          co_await link->wake.wait();
          continue;
        }
        std::string frame = std::move(link->queue.front());
        link->queue.pop_front();
        link->writing = true;
        co_await link->writer.write(frame);
        link->queued -= frame.size();
      }
    } catch (const std::exception&) {
      failed = true;
    }
    if (failed && link->phase != PeerLinkState::Phase::closed) link->writer.abort();  // ends the reader too
  }

  /// Checks the first frame; links the node or retires a duplicate link (rule 2).
  Outcome handshake(const Link& link, const std::string& body) {
    std::error_code ec;
    const auto bytes = std::as_bytes(std::span(body.data(), body.size()));
    if (link->dialed && !body.empty() && body[0] == static_cast<char>(wire::Type::reject)) {
      // Refused before any Hello: read on, for the Peers that may follow, until it closes.
      const auto m = wire::decode(bytes, ec);
      const auto* no = std::get_if<wire::Reject>(&m);
      if (ec || no == nullptr || no->node_id == 0 || no->node_id == id) return Outcome::failed;
      link->id = no->node_id;
      link->phase = PeerLinkState::Phase::retired;
      refused_by(link, *no);
      return Outcome::rejected;
    }
    const auto hello = wire::check_hello(bytes, ec);
    if (ec) return Outcome::failed;
    if (hello.node_id == id) {
      if (link->dialed) return Outcome::self;
      // This node dialed itself: answer, so that its dialing side finds out and stops.
      enqueue(link, this->hello());
      link->phase = PeerLinkState::Phase::retired;
      link->finish = true;
      link->wake.notify_all();
      return Outcome::retired;
    }
    link->id = hello.node_id;
    link->listen = hello.listen;
    if (!link->listen.empty() && !link->listen.is_unix() && (link->listen.host() == "0.0.0.0" || link->listen.host() == "::")) {
      // It listens on every address: it is reachable where this link came from.
      const Endpoint from = link->writer.peer_endpoint();
      if (!from.empty()) link->listen = from.with_port(link->listen.port());
    }
    if (stopping) return Outcome::failed;
    const auto it = up.find(link->id);
    if (it == up.end() && up.size() >= options.peer_limit) {
      // Full: say so (instead of a Hello, or after the one already sent), tell it whom we
      // know, then close; it is not counted as a peer.
      ++counters.refused;
      const wire::Reject no{wire::protocol_version, id, wire::RejectCode::peer_limit,
                            "peer limit of " + std::to_string(options.peer_limit) + " reached"};
      if (!link->dialed) enqueue(link, no);
      if (options.discover) enqueue(link, peers_message(link->id));
      if (link->dialed) enqueue(link, no);
      link->phase = PeerLinkState::Phase::retired;
      link->finish = true;
      link->wake.notify_all();
      return Outcome::retired;
    }
    if (!link->dialed) enqueue(link, this->hello());
    if (it == up.end()) {
      link->phase = PeerLinkState::Phase::up;
      up[link->id] = link;
      remember(link->id, link->listen);
      if (options.discover) {
        enqueue(link, peers_message(link->id));
        if (!link->listen.empty()) {
          const wire::Message news = wire::Peers{{wire::PeerInfo{link->id, link->listen}}};
          for (auto& [other, l] : up) {
            if (l != link) enqueue(l, news);
          }
        }
      }
      call([&] {
        if (on_joined) on_joined(link->id, link->listen);
      });
      changed.notify_all();
      return Outcome::lost;  // "linked"; session() works out how it ended
    }
    // Rule 2: keep the link dialed by the node with the smaller id, on both sides.
    const Link existing = it->second;
    const std::uint64_t smaller = (std::min)(id, link->id);
    const auto dialer = [&](const Link& l) { return l->dialed ? id : l->id; };
    ++counters.duplicate_links;
    if (dialer(link) == smaller && dialer(existing) != smaller) {
      link->phase = PeerLinkState::Phase::up;
      up[link->id] = link;
      // What was queued on the old link goes on the kept one, after its Hello. The old link's
      // own Hello stays on it if it is not out yet (both links shook hands in one turn): the
      // other side needs it there, and a second Hello on the kept link would end that link.
      auto moved = existing->queue.begin();
      if (!existing->writing && moved != existing->queue.end()) ++moved;
      std::size_t moved_bytes = 0;
      for (auto f = moved; f != existing->queue.end(); ++f) {
        moved_bytes += f->size();
        link->queued += f->size();
        link->queue.push_back(std::move(*f));
      }
      existing->queued -= (std::min)(existing->queued, moved_bytes);
      existing->queue.erase(moved, existing->queue.end());
      retire(existing);
      link->wake.notify_all();
    } else {
      link->phase = PeerLinkState::Phase::up;  // up for its lifetime; retire() marks it
      retire(link);
    }
    return Outcome::lost;
  }

  // A duplicate link: nothing more is sent on it; both sides end their half once what is
  // queued is sent, and each reads the other's half to its end, so nothing sent is lost.
  void retire(const Link& l) {
    l->phase = PeerLinkState::Phase::retired;
    l->half_close = true;
    l->wake.notify_all();
  }

  void remember(std::uint64_t node, const Endpoint& e) {
    if (e.empty() || e.is_unix()) return;
    if (known.count(node) != 0 || known.size() < options.peer_limit) known[node] = e;
  }

  wire::Message peers_message(std::uint64_t except) const {
    wire::Peers p;
    for (const auto& [node, l] : up) {
      if (node == except || l->listen.empty()) continue;
      if (p.peers.size() == wire::max_peers_per_message) break;
      p.peers.push_back(wire::PeerInfo{node, l->listen});
    }
    return p;
  }

  /// One message after the handshake; false ends the link (a protocol error).
  bool handle(const Link& link, const std::string& body) {
    std::error_code ec;
    auto m = wire::decode(std::as_bytes(std::span(body.data(), body.size())), ec);
    if (ec) return false;
    if (std::holds_alternative<wire::Hello>(m)) return false;
    if (auto* p = std::get_if<wire::Peers>(&m)) {
      if (options.discover) learn(*p);
    } else if (auto* d = std::get_if<wire::Direct>(&m)) {
      deliver(PeerMessage{link->id, std::move(d->payload), PeerMessageKind::direct});
    } else if (auto* b = std::get_if<wire::Broadcast>(&m)) {
      if (b->origin == id || !first_sight(b->origin, b->message_id)) {
        ++counters.duplicates_dropped;
        return true;
      }
      if (b->hops_left > 0) {
        wire::Broadcast fwd{b->origin, b->message_id, static_cast<std::uint8_t>(b->hops_left - 1), b->payload};
        const std::string f = wire::frame(fwd);
        for (auto& [node, l] : up) {
          if (l == link || node == b->origin) continue;
          ++counters.forwarded;
          enqueue_frame(l, f);
        }
      }
      deliver(PeerMessage{b->origin, std::move(b->payload), PeerMessageKind::broadcast});
    } else if (auto* ping = std::get_if<wire::Ping>(&m)) {
      enqueue(link, wire::Pong{ping->nonce}, true);
    } else if (auto* no = std::get_if<wire::Reject>(&m)) {
      if (no->node_id != link->id) return false;
      refused_by(link, *no);  // session() ends the link
    }
    return true;
  }

  void refused_by(const Link& link, const wire::Reject& no) {
    ++counters.rejected;
    link->reason = PeerLeftReason::rejected;
    link->detail = no.text.empty() ? std::string(no.code == wire::RejectCode::peer_limit ? "peer limit reached" : "refused")
                                   : no.text;
  }

  void learn(const wire::Peers& p) {
    for (const auto& info : p.peers) {
      if (info.node_id == id || info.node_id == 0 || info.listen.empty()) continue;
      remember(info.node_id, info.listen);
      if (up.count(info.node_id) != 0) continue;
      // Only the smaller id dials a node it learns of, so that two nodes learning of each
      // other do not both dial (rule 2 would still settle it).
      if (id < info.node_id && up.size() + dialing.size() < options.peer_limit) dial(info.listen, info.node_id, false);
    }
  }

  bool first_sight(std::uint64_t origin, std::uint64_t message) {
    const SeenKey k{origin, message};
    if (!seen.insert(k).second) return false;
    seen_order.push_back(k);
    while (seen_order.size() > options.seen_capacity) {
      seen.erase(seen_order.front());
      seen_order.pop_front();
    }
    return true;
  }

  // A callback that throws is reported as a failed task would be; the node's tables stay right.
  template <class F>
  void call(F f) noexcept {
    try {
      f();
    } catch (...) {
      loop->report_exception(std::current_exception());
    }
  }

  void deliver(PeerMessage m) {
    call([&] {
      if (on_message) on_message(m);
    });
    changed.notify_all();
  }

  // `urgent`: ahead of what is queued (Ping, Pong), so that a long queue does not delay them;
  // never ahead of the Hello, which must go first.
  bool enqueue(const Link& l, const wire::Message& m, bool urgent = false) { return enqueue_frame(l, wire::frame(m), urgent); }

  bool enqueue_frame(const Link& l, std::string frame, bool urgent = false) {
    if (l->phase == PeerLinkState::Phase::closed || l->finish || l->half_close || l->dropped) return false;
    if (l->queued + frame.size() > options.send_queue_limit) {
      // Rule 5: the peer stopped reading; dropping it keeps this node's memory bounded. The
      // session ends as the abort cancels its read, and takes the link out of the tables.
      ++counters.slow_closed;
      l->bad = true;
      l->dropped = true;
      l->reason = PeerLeftReason::queue_full;
      l->queue.clear();
      l->queued = 0;
      l->writer.abort();
      return false;
    }
    l->queued += frame.size();
    counters.max_link_queued = (std::max)(counters.max_link_queued, l->queued);
    if (urgent && l->writing) {
      l->queue.push_front(std::move(frame));
    } else {
      l->queue.push_back(std::move(frame));
    }
    l->wake.notify_all();
    return true;
  }

  /// Takes a connection out of the tables; a linked node that goes is reported left.
  void finish(const Link& link, bool bad) {
    if (link->phase == PeerLinkState::Phase::closed) return;
    if (bad) ++counters.bad_closed;
    const auto it = up.find(link->id);
    const bool was_up = it != up.end() && it->second == link;
    link->phase = PeerLinkState::Phase::closed;
    link->queue.clear();
    link->queued = 0;
    link->writer.abort();
    link->wake.notify_all();
    all.erase(std::remove(all.begin(), all.end(), link), all.end());
    // A refusal is reported too, unless a link to that node is up (a second link it refused).
    const bool refused = !was_up && link->reason == PeerLeftReason::rejected && up.count(link->id) == 0;
    if (was_up) up.erase(it);
    if (was_up || refused) {
      call([&] {
        if (on_left) on_left(PeerLeft{link->id, link->reason.value_or(PeerLeftReason::closed), link->detail});
      });
    }
    changed.notify_all();
  }

  PeerSendResult send(std::uint64_t to, std::string payload) {
    using S = PeerSendStatus;
    if (stopping) return {S::closed, {}};
    if (payload.size() + 1 > options.max_frame) return {S::too_large, {}};
    const auto it = up.find(to);
    if (it == up.end()) return {known.count(to) != 0 ? S::not_linked : S::unknown_node, {}};
    const Link l = it->second;
    if (!enqueue(l, wire::Direct{std::move(payload)})) return {l->dropped ? S::queue_full : S::not_linked, {}};
    return {S::queued, {to}};
  }

  PeerSendResult broadcast(std::string payload) {
    using S = PeerSendStatus;
    if (stopping) return {S::closed, {}};
    if (payload.size() + wire_broadcast_header > options.max_frame) return {S::too_large, {}};
    if (up.empty()) return {S::not_linked, {}};
    const wire::Broadcast b{id, next_message++, options.hop_limit, std::move(payload)};
    first_sight(b.origin, b.message_id);
    const std::string f = wire::frame(b);
    PeerSendResult r{S::queued, {}};
    for (auto& [node, l] : up) {
      if (enqueue_frame(l, f)) r.to.push_back(node);
    }
    if (r.to.empty()) r.status = S::queue_full;
    return r;
  }
  static constexpr std::size_t wire_broadcast_header = 18;  // type, origin, message id, hops left

  void begin_close(bool graceful) {
    stopping = true;
    stop.request_stop();  // ends the dials' connects; their pauses end on `changed`
    server.close();
    // Not when graceful: a dial task runs its link's session, and cancelling it would drop
    // what the link still has to send (a broadcast made just before close).
    if (!graceful) dials.cancel();
    ticker.cancel();
    for (auto& l : std::vector<Link>(all)) {
      if (graceful && l->phase != PeerLinkState::Phase::handshake) {
        l->finish = true;
        l->wake.notify_all();
      } else {
        l->writer.abort();
      }
    }
    changed.notify_all();
  }

  void abort_all() {
    begin_close(false);
    for (auto& l : std::vector<Link>(all)) l->writer.abort();
    dials.cancel();
    tasks.cancel();
    server.close();  // the second close: the handlers still waiting are cancelled too
  }

  Task<void> until_idle() {
    while (dials.size() != 0 || tasks.size() != 0 || ticker.size() != 0) co_await changed.wait();
  }

  PeerStats stats() const {
    PeerStats s = counters;
    s.links = up.size();
    s.connections = all.size();
    s.known = known.size();
    s.dialing = dialing.size();
    s.queued_bytes = 0;
    for (const auto& l : all) s.queued_bytes += l->queued;
    return s;
  }
};

using PeerState = BasicPeerState<>;

}  // namespace detail

/// A node of a peer-to-peer mesh, bound to the event loop of the thread that makes it
/// (docs/peer-protocol.md). Callbacks run on that loop; every member is for that thread only.
/// Destroying it aborts its links at once, without calling its callbacks any more; close()
/// ends them gracefully.
template <class Unused = void>
class BasicPeer {
 public:
  explicit BasicPeer(PeerOptions options = {}) : s_(std::make_shared<detail::BasicPeerState<Unused>>(std::move(options))) {}
  BasicPeer(BasicPeer&&) noexcept = default;
  BasicPeer& operator=(BasicPeer&&) noexcept = default;
  BasicPeer(const BasicPeer&) = delete;
  BasicPeer& operator=(const BasicPeer&) = delete;
  ~BasicPeer() {
    if (!s_) return;
    // Its tasks unwind after it is gone: they must not call back into its owner.
    s_->on_message = nullptr;
    s_->on_joined = nullptr;
    s_->on_left = nullptr;
    if (!s_->stopping) s_->abort_all();
  }

  /// Listens (throws std::system_error if it cannot) and starts dialing options.join.
  [[nodiscard]] Task<void> start() { return s_->start(); }
  /// Dials `e` (retrying with backoff until a link is up or forget_after passes).
  void join(const Endpoint& e) { s_->dial(e, 0, false); }

  /// Queues `payload` for the linked node `to`, or says why not: nothing waits for a link
  /// (wait_until(linked(to)) first). A node whose queue is full is disconnected (queue_full).
  PeerSendResult send(std::uint64_t to, std::string payload) { return s_->send(to, std::move(payload)); }
  /// Sends `payload` to every node of the mesh, each getting it once; `to` lists the linked
  /// nodes it went out on. With no link up it goes nowhere (not_linked) and is not kept.
  PeerSendResult broadcast(std::string payload) { return s_->broadcast(std::move(payload)); }

  void on_message(std::function<void(const PeerMessage&)> f) { s_->on_message = std::move(f); }
  void on_peer_joined(std::function<void(std::uint64_t, const Endpoint&)> f) { s_->on_joined = std::move(f); }
  /// Called when a linked node leaves, and when a node refuses a link (PeerLeftReason::rejected).
  void on_peer_left(PeerLeftCallback f) { s_->on_left = std::move(f); }

  [[nodiscard]] std::uint64_t node_id() const noexcept { return s_->id; }
  /// Where it listens (the port the OS picked for port 0); empty before start().
  [[nodiscard]] Endpoint local_endpoint() const { return s_->local; }
  [[nodiscard]] std::vector<PeerLinkInfo> peers() const {
    std::vector<PeerLinkInfo> v;
    for (const auto& [node, l] : s_->up) v.push_back(PeerLinkInfo{node, l->listen, l->dialed});
    return v;
  }
  [[nodiscard]] bool linked(std::uint64_t node) const { return s_->up.count(node) != 0; }
  [[nodiscard]] PeerStats stats() const { return s_->stats(); }

  /// Resumes once `done()` holds, checking it after each event (a link, a message, a close).
  /// Bound it with wait_for.
  [[nodiscard]] Task<void> wait_until(std::function<bool()> done) { return wait_until(s_, std::move(done)); }

  /// Stops accepting and dialing, sends what is queued and closes every link; after `grace`
  /// whatever is left is aborted. Returns once every task of the node has ended.
  [[nodiscard]] Task<void> close(std::chrono::milliseconds grace = std::chrono::milliseconds(2000)) {
    return close(s_, grace);
  }
  /// Closes every link at once (a crash, as the other nodes see it).
  void abort() { s_->abort_all(); }

 private:
  static Task<void> wait_until(std::shared_ptr<detail::BasicPeerState<Unused>> s, std::function<bool()> done) {
    while (!done()) co_await s->changed.wait();
  }
  static Task<void> close(std::shared_ptr<detail::BasicPeerState<Unused>> s, std::chrono::milliseconds grace) {
    s->begin_close(true);
    bool late = false;
    try {
      co_await wait_for(s->until_idle(), grace);
    } catch (const std::system_error&) {
      late = true;
    }
    if (late) {
      s->abort_all();
      co_await s->until_idle();
    }
  }
  std::shared_ptr<detail::BasicPeerState<Unused>> s_;
};

/// A template only so that the umbrella header costs nothing to a program without a Peer.
using Peer = BasicPeer<>;

/// Callbacks of a PeerThread. They run on its loop thread, one at a time: they must not
/// block, and may call the PeerThread's send and broadcast.
struct PeerCallbacks {
  std::function<void(const PeerMessage&)> on_message = {};
  std::function<void(std::uint64_t, const Endpoint&)> on_peer_joined = {};
  PeerLeftCallback on_peer_left = {};  ///< takes `const PeerLeft&` or the node id
};

/// A Peer running on an EventLoop of its own thread, for blocking programs. send, broadcast,
/// join, peers and the waits are thread-safe; stop() (or the destructor) closes the node
/// gracefully and joins the thread, so it must not be called from a callback.
template <class Unused = void>
class BasicPeerThread {
 public:
  /// Starts the thread and returns once the node listens; rethrows what start() threw.
  explicit BasicPeerThread(PeerOptions options, PeerCallbacks callbacks = {}) : cb_(std::move(callbacks)) {
    thread_ = std::thread([this, options = std::move(options)]() mutable { run(std::move(options)); });
    std::exception_ptr failed;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return started_ || done_; });
      failed = start_error_;
    }
    if (failed) {
      thread_.join();
      std::rethrow_exception(failed);
    }
  }
  BasicPeerThread(const BasicPeerThread&) = delete;
  BasicPeerThread& operator=(const BasicPeerThread&) = delete;
  ~BasicPeerThread() { stop(); }

  [[nodiscard]] std::uint64_t node_id() const noexcept { return id_; }
  [[nodiscard]] Endpoint local_endpoint() const { return local_; }

  /// Queues `payload` for the linked node `to` and says what happened, as Peer::send: a node
  /// not linked yet is reported (not_linked), not waited for; wait_for_peers first. Blocks
  /// until the node's thread has queued it (from this node's own callbacks it does not wait;
  /// from another PeerThread's callback it does, so two such must not send to each other there).
  PeerSendResult send(std::uint64_t to, std::string payload) {
    return on_loop([to, p = std::move(payload)](BasicPeer<Unused>& peer) mutable { return peer.send(to, std::move(p)); });
  }
  /// As Peer::broadcast; blocks until the node's thread has queued it.
  PeerSendResult broadcast(std::string payload) {
    return on_loop([p = std::move(payload)](BasicPeer<Unused>& peer) mutable { return peer.broadcast(std::move(p)); });
  }
  void join(const Endpoint& e) {
    call_soon_threadsafe([this, e] { peer_->join(e); });
  }

  /// The linked nodes now.
  [[nodiscard]] std::vector<PeerLinkInfo> peers() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return peers_;
  }
  /// Waits until at least `n` nodes are linked; false if `timeout` passes first.
  template <class Rep, class Period>
  bool wait_for_peers(std::size_t n, std::chrono::duration<Rep, Period> timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return peers_.size() >= n || done_; }) && peers_.size() >= n;
  }

  /// Sends what is queued, closes every link (within `grace`) and joins the thread. Idempotent.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(2000)) {
    if (!thread_.joinable()) return;
    call_soon_threadsafe([this, grace] {
      loop_->create_task([](BasicPeerThread* self, std::chrono::milliseconds g) -> Task<void> {
        co_await self->peer_->close(g);
        self->loop_->stop();
      }(this, grace));
    });
    thread_.join();
  }

 private:
  /// The loop's call_soon_threadsafe, or nothing once the thread's loop is gone.
  void call_soon_threadsafe(std::function<void()> f) {
    const std::lock_guard<std::mutex> lock(loop_mutex_);
    if (loop_ != nullptr) loop_->call_soon_threadsafe(std::move(f));
  }

  // Runs `f` on the node's thread and returns its result; at once from a callback (the node's
  // thread itself), where waiting for the loop would never end.
  template <class F>
  PeerSendResult on_loop(F f) {
    if (std::this_thread::get_id() == loop_thread_) return f(*peer_);
    auto result = std::make_shared<std::optional<PeerSendResult>>();
    {
      const std::lock_guard<std::mutex> lock(loop_mutex_);
      if (loop_ == nullptr) return {PeerSendStatus::closed, {}};
      loop_->call_soon_threadsafe([this, result, f = std::move(f)]() mutable {
        PeerSendResult r = f(*peer_);
        {
          const std::lock_guard<std::mutex> held(mutex_);
          *result = std::move(r);
        }
        cv_.notify_all();
      });
    }
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return result->has_value() || done_; });  // done_: the loop ended first
    if (!result->has_value()) return {PeerSendStatus::closed, {}};
    return std::move(**result);
  }

  void run(PeerOptions options) {
    loop_thread_ = std::this_thread::get_id();
    bool is_started = false;
    try {
      EventLoop loop;
      BasicPeer<Unused> peer(std::move(options));
      peer.on_message([this](const PeerMessage& m) {
        if (cb_.on_message) cb_.on_message(m);
      });
      peer.on_peer_joined([this](std::uint64_t node, const Endpoint& e) {
        {
          const std::lock_guard<std::mutex> lock(mutex_);
          peers_ = peer_->peers();
        }
        cv_.notify_all();
        if (cb_.on_peer_joined) cb_.on_peer_joined(node, e);
      });
      peer.on_peer_left([this](const PeerLeft& left) {
        {
          const std::lock_guard<std::mutex> lock(mutex_);
          peers_ = peer_->peers();
        }
        cv_.notify_all();
        if (cb_.on_peer_left) cb_.on_peer_left(left);
      });
      peer_ = &peer;
      loop.run_until_complete(peer.start());
      id_ = peer.node_id();
      local_ = peer.local_endpoint();
      {
        const std::lock_guard<std::mutex> lock(loop_mutex_);
        loop_ = &loop;
      }
      is_started = true;
      {
        const std::lock_guard<std::mutex> lock(mutex_);
        started_ = true;
      }
      cv_.notify_all();
      loop.run();
      {
        const std::lock_guard<std::mutex> lock(loop_mutex_);
        loop_ = nullptr;  // nothing is posted to a loop that has stopped
      }
    } catch (...) {
      {
        const std::lock_guard<std::mutex> lock(loop_mutex_);
        loop_ = nullptr;
      }
      if (!is_started) {
        const std::lock_guard<std::mutex> lock(mutex_);
        start_error_ = std::current_exception();
      }
    }
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
      peers_.clear();
    }
    cv_.notify_all();
  }

  PeerCallbacks cb_;
  std::thread thread_;
  std::mutex loop_mutex_;
  EventLoop* loop_ = nullptr;  // under loop_mutex_; read without it on the loop thread only
  BasicPeer<Unused>* peer_ = nullptr;
  std::thread::id loop_thread_;  // written before the thread starts the node, then only read
  std::uint64_t id_ = 0;
  Endpoint local_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<PeerLinkInfo> peers_;
  bool started_ = false;            // under mutex_: the node listens
  std::exception_ptr start_error_;  // under mutex_: what start() threw
  bool done_ = false;
};

using PeerThread = BasicPeerThread<>;

}  // namespace sockpat

#endif  // SOCKPAT_PEER_HPP

// sockpat: a peer-to-peer node on the event loop (docs/peer-protocol.md, docs/patterns.md).
// A Peer listens, dials the endpoints it is given and those it learns of, keeps one link per
// pair of nodes, and carries direct messages and broadcasts that reach every node once.
// PeerThread runs one on a thread of its own for blocking programs.
#ifndef SOCKPAT_PEER_HPP
#define SOCKPAT_PEER_HPP

#include <algorithm>           // std::find, std::min
#include <atomic>              // std::atomic: entropy_seed's call count
#include "sockpat/detail/chrono.hpp"  // std::chrono::milliseconds, steady_clock
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
  // or the network: redial), closed_by_us (linked, closed for a protocol error or on close()).
  // handshake() returns lost for "linked" and session() works out the end.
  enum class Outcome : unsigned char { failed, self, retired, lost, closed_by_us };

  explicit BasicPeerState(PeerOptions o) : options(std::move(o)), loop(EventLoop::current()) {
    if (loop == nullptr) throw std::logic_error("sockpat: a Peer is made on the thread of a running EventLoop");
    // until_idle() waits on `changed` for both sets to empty.
    for (TaskSet* set : {&dials, &tasks}) {
      set->on_empty = [](void* state) noexcept { static_cast<BasicPeerState*>(state)->changed.notify_all(); };
      set->context = this;
    }
    if (options.send_queue_limit < options.max_frame + 4) options.send_queue_limit = options.max_frame + 4;
    if (options.peer_limit == 0) options.peer_limit = 1;
    if (options.seen_capacity == 0) options.seen_capacity = 1;
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
  // Every task of the node: the dials (cancelled first on close), and the sessions of
  // accepted connections and the links' writers.
  TaskSet dials{false};
  TaskSet tasks{false};
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
  std::function<void(std::uint64_t)> on_left;

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
    for (const auto& e : options.join) dial(e, 0, false);
  }

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
        bool cancelled = false;
        try {
          co_await sleep(delays.next());
        } catch (const std::system_error&) {
          cancelled = true;
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
  }

  /// Runs one connection: Hello both ways, then messages until it ends.
  static Task<Outcome> session(std::shared_ptr<BasicPeerState> self, Link link) {
    self->all.push_back(link);
    self->tasks.start(writer_task(self, link))->release();  // no handle
    self->enqueue(link, wire::Hello{wire::protocol_version, self->id, self->local});
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
    for (;;) {
      std::optional<std::string> f;
      bool error = false;
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
      if (!self->handle(link, *f)) {
        link->bad = true;
        break;
      }
      if (link->phase == PeerLinkState::Phase::closed) break;
    }
    const auto it = self->up.find(link->id);
    const bool was_up = it != self->up.end() && it->second == link;
    const bool bad = link->bad;
    self->finish(link, bad);
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
    const auto hello = wire::check_hello(std::as_bytes(std::span(body.data(), body.size())), ec);
    if (ec) return Outcome::failed;
    if (hello.node_id == id) return Outcome::self;
    link->id = hello.node_id;
    link->listen = hello.listen;
    if (!link->listen.empty() && !link->listen.is_unix() && (link->listen.host() == "0.0.0.0" || link->listen.host() == "::")) {
      // It listens on every address: it is reachable where this link came from.
      const Endpoint from = link->writer.peer_endpoint();
      if (!from.empty()) link->listen = from.with_port(link->listen.port());
    }
    if (stopping) return Outcome::failed;
    const auto it = up.find(link->id);
    if (it == up.end()) {
      if (up.size() >= options.peer_limit) {
        // Full: tell it whom we know, then close; it is not counted as a peer.
        if (options.discover) enqueue(link, peers_message(link->id));
        link->phase = PeerLinkState::Phase::retired;
        link->finish = true;
        link->wake.notify_all();
        return Outcome::retired;
      }
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
      // What was queued on the old link goes on the kept one, after its Hello.
      for (auto& f : existing->queue) {
        link->queued += f.size();
        link->queue.push_back(std::move(f));
      }
      existing->queued -= (std::min)(existing->queued, queued_frames(*existing));
      existing->queue.clear();
      retire(existing);
      link->wake.notify_all();
    } else {
      link->phase = PeerLinkState::Phase::up;  // up for its lifetime; retire() marks it
      retire(link);
    }
    return Outcome::lost;
  }

  static std::size_t queued_frames(const PeerLinkState& l) {
    std::size_t n = 0;
    for (const auto& f : l.queue) n += f.size();
    return n;
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
      enqueue(link, wire::Pong{ping->nonce});
    }
    return true;
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

  bool enqueue(const Link& l, const wire::Message& m) { return enqueue_frame(l, wire::frame(m)); }

  bool enqueue_frame(const Link& l, std::string frame) {
    if (l->phase == PeerLinkState::Phase::closed || l->finish || l->half_close || l->dropped) return false;
    if (l->queued + frame.size() > options.send_queue_limit) {
      // Rule 5: the peer stopped reading; dropping it keeps this node's memory bounded. The
      // session ends as the abort cancels its read, and takes the link out of the tables.
      ++counters.slow_closed;
      l->bad = true;
      l->dropped = true;
      l->queue.clear();
      l->queued = 0;
      l->writer.abort();
      return false;
    }
    l->queued += frame.size();
    counters.max_link_queued = (std::max)(counters.max_link_queued, l->queued);
    l->queue.push_back(std::move(frame));
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
    if (was_up) {
      up.erase(it);
      call([&] {
        if (on_left) on_left(link->id);
      });
    }
    changed.notify_all();
  }

  bool send(std::uint64_t to, std::string payload) {
    const auto it = up.find(to);
    if (it == up.end()) return false;
    return enqueue(it->second, wire::Direct{std::move(payload)});
  }

  std::size_t broadcast(std::string payload) {
    const wire::Broadcast b{id, next_message++, options.hop_limit, std::move(payload)};
    first_sight(b.origin, b.message_id);
    const std::string f = wire::frame(b);
    std::size_t n = 0;
    for (auto& [node, l] : up) n += enqueue_frame(l, f) ? 1 : 0;
    return n;
  }

  void begin_close(bool graceful) {
    stopping = true;
    stop.request_stop();
    server.close();
    dials.cancel();
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
    while (dials.size() != 0 || tasks.size() != 0) co_await changed.wait();
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

  /// Sends `payload` to the linked node `to`; false if it is not linked (or its link just
  /// closed because its queue was full).
  bool send(std::uint64_t to, std::string payload) { return s_->send(to, std::move(payload)); }
  /// Sends `payload` to every node of the mesh, each getting it once; returns the links it
  /// went out on.
  std::size_t broadcast(std::string payload) { return s_->broadcast(std::move(payload)); }

  void on_message(std::function<void(const PeerMessage&)> f) { s_->on_message = std::move(f); }
  void on_peer_joined(std::function<void(std::uint64_t, const Endpoint&)> f) { s_->on_joined = std::move(f); }
  void on_peer_left(std::function<void(std::uint64_t)> f) { s_->on_left = std::move(f); }

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
  std::function<void(std::uint64_t)> on_peer_left = {};
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

  void send(std::uint64_t to, std::string payload) {
    call_soon_threadsafe([this, to, p = std::move(payload)]() mutable { peer_->send(to, std::move(p)); });
  }
  void broadcast(std::string payload) {
    call_soon_threadsafe([this, p = std::move(payload)]() mutable { peer_->broadcast(std::move(p)); });
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

  void run(PeerOptions options) {
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
      peer.on_peer_left([this](std::uint64_t node) {
        {
          const std::lock_guard<std::mutex> lock(mutex_);
          peers_ = peer_->peers();
        }
        cv_.notify_all();
        if (cb_.on_peer_left) cb_.on_peer_left(node);
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

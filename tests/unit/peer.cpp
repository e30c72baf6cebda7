#include "sockpat/peer.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

using namespace std::chrono_literals;

namespace {

template <class F>
void on_loop(F&& body) {
  sockpat::EventLoop loop;
  loop.run_until_complete(body());
}

sockpat::PeerOptions fast_options() {
  sockpat::PeerOptions o;
  o.handshake_timeout = 2s;
  o.redial.initial = 20ms;
  o.redial.max = 200ms;
  return o;
}

/// A Peer and what it saw.
struct Node {
  explicit Node(sockpat::PeerOptions o) : peer(std::move(o)) {
    peer.on_message([this](const sockpat::PeerMessage& m) { got.push_back(m); });
    peer.on_peer_joined([this](std::uint64_t id, const sockpat::Endpoint&) {
      ++joined;
      joined_ids.push_back(id);
    });
    peer.on_peer_left([this](const sockpat::PeerLeft& l) {
      ++left;
      gone.push_back(l);
    });
  }
  [[nodiscard]] std::size_t count(std::uint64_t from, const std::string& payload) const {
    std::size_t n = 0;
    for (const auto& m : got) n += (m.from == from && m.payload == payload) ? 1 : 0;
    return n;
  }
  sockpat::Peer peer;
  std::vector<sockpat::PeerMessage> got;
  int joined = 0;
  std::vector<std::uint64_t> joined_ids;
  int left = 0;
  std::vector<sockpat::PeerLeft> gone;
};

sockpat::Task<void> until(Node& n, std::function<bool()> done, std::chrono::milliseconds timeout = 10s) {
  co_await sockpat::wait_for(n.peer.wait_until(std::move(done)), timeout);
}

/// A raw client: connects, optionally says Hello, and reads what the node sends.
struct Raw {
  sockpat::StreamReader reader;
  sockpat::StreamWriter writer;
};

sockpat::Task<Raw> raw_connect(const sockpat::Endpoint& e) {
  auto [r, w] = co_await sockpat::open_connection("127.0.0.1", e.port(), 5s);
  co_return Raw{std::move(r), std::move(w)};
}

/// Reads until the node closes the stream; true if it did within the timeout.
sockpat::Task<bool> closed_by_node(sockpat::StreamReader& r) {
  std::optional<std::string> f;
  try {
    do {
      f = co_await sockpat::wait_for(r.read_frame(sockpat::LengthPrefixFraming(1 << 20)), 5s);
    } while (f);
  } catch (const std::system_error& e) {
    co_return e.code() != std::errc::timed_out;  // a reset is a close too
  }
  co_return true;
}

}  // namespace

TEST_SUITE("peer" * doctest::timeout(60)) {
TEST_CASE("node-id seeds differ from call to call, and the jitter generator spreads over [0, 1)") {
  std::set<std::uint64_t> seeds;
  for (int i = 0; i < 10000; ++i) seeds.insert(sockpat::detail::entropy_seed());
  CHECK(seeds.size() == 10000);
  sockpat::detail::SplitMix64 a(1);
  sockpat::detail::SplitMix64 b(1);
  CHECK(a() == b());  // deterministic for a seed
  std::array<int, 10> buckets{};
  for (int i = 0; i < 100000; ++i) {
    const double u = a.unit();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    ++buckets[static_cast<std::size_t>(u * 10)];
  }
  for (const int n : buckets) CHECK(n > 9000);  // 10,000 expected in each tenth
  for (const int n : buckets) CHECK(n < 11000);
}

TEST_CASE("two nodes shake hands, link once, and carry direct messages and broadcasts") {
  on_loop([]() -> sockpat::Task<void> {
    Node a(fast_options());
    co_await a.peer.start();
    auto ob = fast_options();
    ob.join = {a.peer.local_endpoint()};
    Node b(ob);
    co_await b.peer.start();
    co_await until(a, [&] { return a.peer.peers().size() == 1; });
    co_await until(b, [&] { return b.peer.peers().size() == 1; });
    CHECK(a.peer.peers()[0].id == b.peer.node_id());
    CHECK(a.peer.peers()[0].listen == b.peer.local_endpoint());
    CHECK_FALSE(a.peer.peers()[0].dialed);
    CHECK(b.peer.peers()[0].dialed);
    CHECK(b.peer.send(a.peer.node_id(), "to a"));
    CHECK(a.peer.send(b.peer.node_id(), std::string("\0to b", 5)));
    CHECK_FALSE(a.peer.send(12345, "nobody"));
    CHECK(a.peer.broadcast("all").to == std::vector<std::uint64_t>{b.peer.node_id()});
    co_await until(a, [&] { return a.got.size() == 1; });
    co_await until(b, [&] { return b.got.size() == 2; });
    CHECK(a.got[0].payload == "to a");
    CHECK(a.got[0].from == b.peer.node_id());
    CHECK(a.got[0].kind == sockpat::PeerMessageKind::direct);
    CHECK(b.got[0].payload == std::string("\0to b", 5));
    CHECK(b.got[1].payload == "all");
    CHECK(b.got[1].kind == sockpat::PeerMessageKind::broadcast);
    CHECK(b.got[1].from == a.peer.node_id());
    co_await b.peer.close();
    co_await until(a, [&] { return a.left == 1; });
    CHECK(a.peer.peers().empty());
    CHECK(b.left == 1);  // closing reports each linked node as gone, on both sides
    CHECK(a.gone.at(0).id == b.peer.node_id());
    CHECK(a.gone.at(0).reason == sockpat::PeerLeftReason::closed);
    CHECK(b.gone.at(0).reason == sockpat::PeerLeftReason::closed);
    co_await a.peer.close();
  });
}

TEST_CASE("a node listening on every address is known where its link came from; a throwing callback is reported") {
  sockpat::EventLoop loop;
  int reported = 0;
  loop.set_exception_handler([&](std::exception_ptr) { ++reported; });
  loop.run_until_complete([&]() -> sockpat::Task<void> {
    auto oa = fast_options();
    oa.listen = sockpat::Endpoint("0.0.0.0", 0);
    Node a(oa);
    a.peer.on_message([](const sockpat::PeerMessage&) { throw std::runtime_error("callback failed"); });
    co_await a.peer.start();
    auto ob = fast_options();
    ob.join = {sockpat::Endpoint("127.0.0.1", a.peer.local_endpoint().port())};
    Node b(ob);
    co_await b.peer.start();
    co_await until(b, [&] { return b.peer.peers().size() == 1; });
    CHECK(b.peer.peers()[0].listen == sockpat::Endpoint("127.0.0.1", a.peer.local_endpoint().port()));
    co_await until(a, [&] { return a.peer.peers().size() == 1; });
    b.peer.send(a.peer.node_id(), "one");
    b.peer.send(a.peer.node_id(), "two");
    co_await until(a, [&] { return reported == 2; });
    CHECK(a.peer.linked(b.peer.node_id()));  // the link goes on
    co_await b.peer.close();
    co_await a.peer.close();
  }());
}

TEST_CASE("eight nodes that each know only node 0 come to know each other; a broadcast reaches each once") {
  on_loop([]() -> sockpat::Task<void> {
    constexpr std::size_t count = 8;
    std::vector<std::unique_ptr<Node>> nodes;
    nodes.push_back(std::make_unique<Node>(fast_options()));
    co_await nodes[0]->peer.start();
    for (std::size_t i = 1; i < count; ++i) {
      auto o = fast_options();
      o.join = {nodes[0]->peer.local_endpoint()};
      nodes.push_back(std::make_unique<Node>(o));
      co_await nodes[i]->peer.start();
    }
    for (auto& n : nodes) co_await until(*n, [&] { return n->peer.peers().size() == count - 1; });
    for (auto& n : nodes) {
      std::set<std::uint64_t> ids;
      for (const auto& p : n->peer.peers()) ids.insert(p.id);
      CHECK(ids.size() == count - 1);
      CHECK(ids.count(n->peer.node_id()) == 0);
    }
    for (std::size_t i = 0; i < count; ++i) nodes[i]->peer.broadcast("from " + std::to_string(i));
    for (auto& n : nodes) co_await until(*n, [&] { return n->got.size() == count - 1; });
    // A second round: anything duplicated from the first would have arrived before it.
    for (std::size_t i = 0; i < count; ++i) nodes[i]->peer.broadcast("again " + std::to_string(i));
    for (auto& n : nodes) co_await until(*n, [&] { return n->got.size() >= 2 * (count - 1); });
    for (std::size_t i = 0; i < count; ++i) {
      for (std::size_t j = 0; j < count; ++j) {
        if (i == j) continue;
        CHECK(nodes[j]->count(nodes[i]->peer.node_id(), "from " + std::to_string(i)) == 1);
        CHECK(nodes[j]->count(nodes[i]->peer.node_id(), "again " + std::to_string(i)) == 1);
      }
      CHECK(nodes[i]->got.size() == 2 * (count - 1));
      CHECK(nodes[i]->left == 0);
    }
    for (auto& n : nodes) co_await n->peer.close();
  });
}

TEST_CASE("in a chain, a broadcast from any node is forwarded to every node exactly once") {
  on_loop([]() -> sockpat::Task<void> {
    constexpr std::size_t count = 6;
    std::vector<std::unique_ptr<Node>> nodes;
    for (std::size_t i = 0; i < count; ++i) {
      auto o = fast_options();
      o.discover = false;
      if (i > 0) o.join = {nodes[i - 1]->peer.local_endpoint()};
      nodes.push_back(std::make_unique<Node>(o));
      co_await nodes[i]->peer.start();
    }
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t expected = (i == 0 || i == count - 1) ? 1 : 2;
      co_await until(*nodes[i], [&] { return nodes[i]->peer.peers().size() == expected; });
    }
    for (std::size_t i = 0; i < count; ++i) nodes[i]->peer.broadcast("line " + std::to_string(i));
    for (auto& n : nodes) co_await until(*n, [&] { return n->got.size() == count - 1; });
    for (std::size_t i = 0; i < count; ++i) nodes[i]->peer.broadcast("end " + std::to_string(i));
    for (auto& n : nodes) co_await until(*n, [&] { return n->got.size() >= 2 * (count - 1); });
    for (std::size_t i = 0; i < count; ++i) {
      for (std::size_t j = 0; j < count; ++j) {
        if (i != j) CHECK(nodes[j]->count(nodes[i]->peer.node_id(), "line " + std::to_string(i)) == 1);
      }
      CHECK(nodes[i]->got.size() == 2 * (count - 1));
      CHECK(nodes[i]->peer.peers().size() == ((i == 0 || i == count - 1) ? 1U : 2U));  // no discovery
    }
    for (auto& n : nodes) co_await n->peer.close();
  });
}

TEST_CASE("a hop limit stops forwarding") {
  on_loop([]() -> sockpat::Task<void> {
    std::vector<std::unique_ptr<Node>> nodes;
    for (std::size_t i = 0; i < 4; ++i) {
      auto o = fast_options();
      o.discover = false;
      o.hop_limit = 1;  // the origin's neighbours, and theirs
      if (i > 0) o.join = {nodes[i - 1]->peer.local_endpoint()};
      nodes.push_back(std::make_unique<Node>(o));
      co_await nodes[i]->peer.start();
    }
    co_await until(*nodes[3], [&] { return nodes[3]->peer.peers().size() == 1; });
    co_await until(*nodes[2], [&] { return nodes[2]->peer.peers().size() == 2; });
    co_await until(*nodes[1], [&] { return nodes[1]->peer.peers().size() == 2; });
    nodes[0]->peer.broadcast("short");
    co_await until(*nodes[2], [&] { return nodes[2]->got.size() == 1; });
    // Node 3 is 3 hops away; a direct message sent after the broadcast on the same links
    // arrives after anything the broadcast could have brought.
    nodes[2]->peer.send(nodes[3]->peer.node_id(), "marker");
    co_await until(*nodes[3], [&] { return !nodes[3]->got.empty(); });
    CHECK(nodes[1]->count(nodes[0]->peer.node_id(), "short") == 1);
    CHECK(nodes[3]->got.size() == 1);
    CHECK(nodes[3]->got[0].payload == "marker");
    for (auto& n : nodes) co_await n->peer.close();
  });
}

TEST_CASE("two nodes dialing each other at once end with exactly one link, the same on both sides") {
  on_loop([]() -> sockpat::Task<void> {
    std::size_t duplicates = 0;
    for (int round = 0; round < 10; ++round) {
      Node a(fast_options());
      Node b(fast_options());
      co_await a.peer.start();
      co_await b.peer.start();
      a.peer.join(b.peer.local_endpoint());
      b.peer.join(a.peer.local_endpoint());
      co_await until(a, [&] { return a.peer.peers().size() == 1 && a.peer.stats().connections == 1; });
      co_await until(b, [&] { return b.peer.peers().size() == 1 && b.peer.stats().connections == 1; });
      const auto la = a.peer.peers().at(0);
      const auto lb = b.peer.peers().at(0);
      CHECK(la.dialed != lb.dialed);  // one connection, seen from both ends
      const bool a_smaller = a.peer.node_id() < b.peer.node_id();
      CHECK(la.dialed == a_smaller);  // the smaller id's dial is kept
      CHECK(a.joined == 1);
      CHECK(b.joined == 1);
      CHECK(a.left == 0);
      CHECK(b.left == 0);
      // The kept link carries messages both ways.
      a.peer.send(b.peer.node_id(), "x");
      b.peer.send(a.peer.node_id(), "y");
      co_await until(a, [&] { return a.got.size() == 1; });
      co_await until(b, [&] { return b.got.size() == 1; });
      CHECK(a.got[0].payload == "y");
      CHECK(b.got[0].payload == "x");
      duplicates += a.peer.stats().duplicate_links + b.peer.stats().duplicate_links;
      co_await a.peer.close();
      co_await b.peer.close();
    }
    CHECK(duplicates > 0);  // the race happened: both dials got through their handshakes
    MESSAGE("links closed by the one-link rule over 10 rounds: " << duplicates);
  });
}

TEST_CASE("a link that sends garbage, another version, an oversized frame or nothing is closed; the node goes on") {
  on_loop([]() -> sockpat::Task<void> {
    auto o = fast_options();
    o.max_frame = 1024;
    o.handshake_timeout = 300ms;
    Node a(o);
    co_await a.peer.start();
    const auto at = a.peer.local_endpoint();

    std::vector<std::string> openings;
    openings.push_back("\x00\x00\x00\x03xyz");                              // no message
    openings.push_back(sockpat::wire::frame(sockpat::wire::Hello{2, 77, {}}));    // another version
    openings.push_back(std::string("\x00\x01\x00\x00", 4));                 // 64 KiB > max_frame
    openings.push_back(sockpat::wire::frame(sockpat::wire::Ping{1}));      // not a Hello first
    openings.push_back("");                                                 // silence: the timeout
    for (const auto& bytes : openings) {
      auto raw = co_await raw_connect(at);
      if (!bytes.empty()) co_await raw.writer.write(bytes);
      CHECK(co_await closed_by_node(raw.reader));
    }
    // Garbage after a good Hello closes that link too, and the node is reported left.
    {
      auto raw = co_await raw_connect(at);
      co_await raw.writer.write(sockpat::wire::frame(sockpat::wire::Hello{1, 4242, {}}));
      co_await until(a, [&] { return a.peer.linked(4242); });
      co_await raw.writer.write(std::string("\x00\x00\x00\x01\x63", 5));
      CHECK(co_await closed_by_node(raw.reader));
      co_await until(a, [&] { return a.left == 1; });
      CHECK(a.gone.at(0).reason == sockpat::PeerLeftReason::protocol_error);
    }
    CHECK(a.peer.stats().bad_closed >= 5);
    // The node still links and talks.
    auto ob = fast_options();
    ob.join = {at};
    Node b(ob);
    co_await b.peer.start();
    co_await until(a, [&] { return a.peer.peers().size() == 1; });
    co_await until(b, [&] { return b.peer.peers().size() == 1; });
    b.peer.broadcast("still here");
    co_await until(a, [&] { return a.got.size() == 1; });
    CHECK(a.got[0].payload == "still here");
    co_await b.peer.close();
    co_await a.peer.close();
  });
}

TEST_CASE("a peer that stops reading is disconnected, and the node's queues stay within their bound") {
  on_loop([]() -> sockpat::Task<void> {
    auto o = fast_options();
    o.max_frame = 64 * 1024;
    o.send_queue_limit = 256 * 1024;
    Node a(o);
    co_await a.peer.start();
    auto ob = fast_options();
    ob.join = {a.peer.local_endpoint()};
    Node b(ob);
    co_await b.peer.start();
    // The slow one: says Hello, then never reads.
    auto raw = co_await raw_connect(a.peer.local_endpoint());
    co_await raw.writer.write(sockpat::wire::frame(sockpat::wire::Hello{1, 999, {}}));
    co_await until(a, [&] { return a.peer.peers().size() == 2; });

    const std::string chunk(16 * 1024, 'z');
    std::size_t sent = 0;
    std::size_t most = 0;
    bool dropped_said = false;  // the broadcast that overflowed the slow one's queue left it out
    // Enough to fill any loopback socket buffer many times over; stops once the slow one is gone.
    for (; sent < 4000 && a.peer.linked(999); ++sent) {
      const auto r = a.peer.broadcast(chunk);
      REQUIRE(r.status == sockpat::PeerSendStatus::queued);  // b took it
      dropped_said = dropped_said || r.to == std::vector<std::uint64_t>{b.peer.node_id()};
      most = (std::max)(most, a.peer.stats().queued_bytes);
      // Let b read, so that only the slow link backs up.
      if (b.peer.stats().connections > 0) co_await until(b, [&] { return b.got.size() + 8 > sent; });
    }
    CHECK_FALSE(a.peer.linked(999));
    CHECK(dropped_said);
    CHECK(a.gone.at(0).reason == sockpat::PeerLeftReason::queue_full);
    CHECK(a.peer.stats().slow_closed == 1);
    CHECK(a.peer.stats().max_link_queued <= o.send_queue_limit);
    CHECK(most <= 2 * o.send_queue_limit);  // b's queue and the slow one's, each within the bound
    MESSAGE("broadcasts before the slow peer was dropped: " << sent << ", most queued: " << most);
    a.peer.broadcast("after");
    co_await until(b, [&] { return !b.got.empty() && b.got.back().payload == "after"; });
    CHECK(b.got.size() == sent + 1);
    CHECK(a.peer.linked(b.peer.node_id()));
    co_await b.peer.close();
    co_await a.peer.close();
  });
}

TEST_CASE("a node killed and restarted on its port is redialled and gets later broadcasts") {
  on_loop([]() -> sockpat::Task<void> {
    Node a(fast_options());
    co_await a.peer.start();
    auto oc = fast_options();
    oc.join = {a.peer.local_endpoint()};
    auto c = std::make_unique<Node>(oc);
    co_await c->peer.start();
    auto ob = fast_options();
    ob.join = {a.peer.local_endpoint()};
    Node b(ob);
    co_await b.peer.start();
    co_await until(a, [&] { return a.peer.peers().size() == 2; });
    co_await until(b, [&] { return b.peer.peers().size() == 2; });
    const auto c_at = c->peer.local_endpoint();
    const auto old_id = c->peer.node_id();

    c->peer.abort();  // killed: its links drop without a word
    c.reset();
    co_await until(a, [&] { return a.peer.peers().size() == 1; });
    co_await until(b, [&] { return b.peer.peers().size() == 1; });
    CHECK(a.left == 1);
    CHECK(a.gone.at(0).reason == sockpat::PeerLeftReason::closed);  // a killed process's sockets end in order

    // Restarted on the same port, knowing nobody: its old neighbours' redials find it.
    auto again = fast_options();
    again.listen = c_at;
    Node c2(again);
    co_await c2.peer.start();
    CHECK(c2.peer.node_id() != old_id);
    co_await until(c2, [&] { return c2.peer.peers().size() == 2; });
    co_await until(a, [&] { return a.peer.linked(c2.peer.node_id()); });
    a.peer.broadcast("welcome back");
    co_await until(c2, [&] { return c2.got.size() == 1; });
    CHECK(c2.got[0].payload == "welcome back");
    CHECK(c2.got[0].from == a.peer.node_id());
    CHECK_FALSE(a.peer.linked(old_id));
    co_await c2.peer.close();
    co_await b.peer.close();
    co_await a.peer.close();
  });
}

TEST_CASE("a node that stays away is redialled with backoff, then forgotten") {
  on_loop([]() -> sockpat::Task<void> {
    auto oa = fast_options();
    oa.forget_after = 300ms;
    Node a(oa);
    co_await a.peer.start();
    auto ob = fast_options();
    ob.join = {a.peer.local_endpoint()};
    auto b = std::make_unique<Node>(ob);
    co_await b->peer.start();
    co_await until(a, [&] { return a.peer.peers().size() == 1; });
    CHECK(a.peer.stats().known == 1);
    const auto started = std::chrono::steady_clock::now();
    b->peer.abort();
    b.reset();
    co_await until(a, [&] { return a.left == 1; });
    CHECK(a.peer.stats().dialing == 1);  // a redials the endpoint b listened on
    co_await until(a, [&] { return a.peer.stats().dialing == 0; }, 5s);
    CHECK(std::chrono::steady_clock::now() - started >= 300ms);
    CHECK(a.peer.stats().known == 0);
    CHECK(a.peer.peers().empty());
    co_await a.peer.close();
  });
}

TEST_CASE("a link that goes silent is declared dead within the liveness timeout and redialled; the others keep working") {
  on_loop([]() -> sockpat::Task<void> {
    auto o = fast_options();
    o.ping_interval = 50ms;
    o.liveness_timeout = 400ms;
    Node a(o);
    co_await a.peer.start();
    auto ob = o;
    ob.join = {a.peer.local_endpoint()};
    Node b(ob);
    co_await b.peer.start();
    co_await until(a, [&] { return a.peer.linked(b.peer.node_id()); });

    // The frozen node: says Hello, then neither reads nor writes, as a host that froze or a
    // link that stopped passing packets (nothing is reset, nothing arrives).
    auto frozen = sockpat::TcpListener::bind(sockpat::Endpoint("127.0.0.1", 0));
    const auto frozen_at = frozen.local_endpoint();
    constexpr std::uint64_t frozen_id = 0xf0f0;
    a.peer.join(frozen_at);
    auto first = sockpat::make_streams(co_await frozen.async_accept(5s));
    co_await first.second.write(sockpat::wire::frame(sockpat::wire::Hello{1, frozen_id, frozen_at}));
    co_await until(a, [&] { return a.peer.linked(frozen_id); });
    const auto linked_at = std::chrono::steady_clock::now();
    co_await until(a, [&] { return !a.peer.linked(frozen_id); }, 5s);
    const auto dead_after = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - linked_at);
    MESSAGE("declared dead after " << dead_after.count() << " ms (liveness_timeout 400 ms, ping_interval 50 ms)");
    CHECK(dead_after >= 350ms);  // the link's last frame came a little before linked_at
    CHECK(dead_after < 400ms + 1s);
    REQUIRE(a.gone.size() == 1);
    CHECK(a.gone[0].id == frozen_id);
    CHECK(a.gone[0].reason == sockpat::PeerLeftReason::timed_out);
    CHECK(a.peer.stats().timed_out == 1);
    // It is redialled where it said it listens (async_accept throws timed_out if not): a's Hello.
    auto second = sockpat::make_streams(co_await frozen.async_accept(5s));
    const auto hello = co_await sockpat::wait_for(second.first.read_frame(sockpat::LengthPrefixFraming(1 << 20)), 5s);
    REQUIRE(hello.has_value());
    std::error_code ec;
    CHECK(sockpat::wire::check_hello(std::as_bytes(std::span(hello->data(), hello->size())), ec).node_id == a.peer.node_id());

    // The link to b, as idle, was kept alive by pings both ways, and still carries messages.
    CHECK(a.peer.linked(b.peer.node_id()));
    CHECK(b.gone.empty());
    CHECK(a.peer.stats().pings_sent > 0);
    CHECK(b.peer.stats().pings_sent > 0);
    CHECK(a.peer.send(b.peer.node_id(), "after"));
    CHECK(b.peer.broadcast("back").to == std::vector<std::uint64_t>{a.peer.node_id()});
    co_await until(b, [&] { return b.count(a.peer.node_id(), "after") == 1; });
    co_await until(a, [&] { return a.count(b.peer.node_id(), "back") == 1; });
    co_await b.peer.close();
    co_await a.peer.close();
  });
}

TEST_CASE("the link kept by the one-link rule never carries the other link's Hello, even when both shake hands in one turn") {
  on_loop([]() -> sockpat::Task<void> {
    namespace wire = sockpat::wire;
    auto o = fast_options();
    o.node_id = 2;  // smaller than the raw node's: the link a dials is the one both keep
    Node a(o);
    co_await a.peer.start();
    const auto framing = sockpat::LengthPrefixFraming(1 << 20);
    auto x_listener = sockpat::TcpListener::bind(sockpat::Endpoint("127.0.0.1", 0));
    const auto x_at = x_listener.local_endpoint();
    constexpr std::uint64_t x = 1000;
    a.peer.join(x_at);
    auto dialed = sockpat::make_streams(co_await x_listener.async_accept(5s));
    REQUIRE(co_await sockpat::wait_for(dialed.first.read_frame(framing), 5s));  // a's Hello first
    auto accepted = co_await raw_connect(a.peer.local_endpoint());
    co_await until(a, [&] { return a.peer.stats().connections == 2; });
    // Both Hellos in one go: a handshakes on both links in one turn of its loop, the accepted
    // one first (its Hello to x is then still queued when the one-link rule applies).
    const std::string hello = wire::frame(wire::Hello{1, x, x_at});
    co_await accepted.writer.write(hello);
    co_await dialed.second.write(hello);
    co_await until(a, [&] { return a.peer.linked(x); });
    CHECK(a.peer.send(x, "marker"));
    std::vector<std::size_t> types;
    for (int i = 0; i < 16; ++i) {  // the kept link: what the rule moved, then the marker
      auto f = co_await sockpat::wait_for(dialed.first.read_frame(framing), 5s);
      REQUIRE(f);
      REQUIRE_FALSE(f->empty());
      types.push_back(static_cast<unsigned char>((*f)[0]));
      if (*f == wire::encode(wire::Direct{"marker"})) break;
    }
    CHECK(types.back() == static_cast<std::size_t>(wire::Type::direct));
    CHECK(std::count(types.begin(), types.end(), static_cast<std::size_t>(wire::Type::hello)) == 0);
    // The retired link still got a's Hello, then its end.
    auto first = co_await sockpat::wait_for(accepted.reader.read_frame(framing), 5s);
    REQUIRE(first);
    std::error_code ec;
    CHECK(wire::check_hello(std::as_bytes(std::span(first->data(), first->size())), ec).node_id == 2);
    CHECK(co_await closed_by_node(accepted.reader));
    CHECK(a.gone.empty());
    co_await a.peer.close();
  });
}

TEST_CASE("a node that dials itself finds out from the Hello and dials that endpoint no more") {
  on_loop([]() -> sockpat::Task<void> {
    auto o = fast_options();
    o.listen = sockpat::Endpoint("0.0.0.0", 0);
    Node a(o);
    co_await a.peer.start();
    // Another spelling of its own endpoint: only the Hello can tell.
    a.peer.join(sockpat::Endpoint("127.0.0.1", a.peer.local_endpoint().port()));
    CHECK(a.peer.stats().dialing == 1);
    co_await until(a, [&] { return a.peer.stats().dialing == 0 && a.peer.stats().connections == 0; });
    CHECK(a.joined == 0);
    CHECK(a.gone.empty());
    CHECK(a.peer.stats().bad_closed == 0);
    a.peer.join(sockpat::Endpoint("127.0.0.1", a.peer.local_endpoint().port()));
    CHECK(a.peer.stats().dialing == 0);  // known as itself now
    co_await a.peer.close();
  });
}

TEST_CASE("a send says what happened: queued and to whom, or not linked, unknown, too large, closed") {
  on_loop([]() -> sockpat::Task<void> {
    using S = sockpat::PeerSendStatus;
    auto o = fast_options();
    o.max_frame = 1024;
    Node a(o);
    co_await a.peer.start();
    // Before any link: said, not lost silently.
    CHECK(a.peer.broadcast("early").status == S::not_linked);
    CHECK(a.peer.send(12345, "early").status == S::unknown_node);
    auto ob = o;
    ob.join = {a.peer.local_endpoint()};
    Node b(ob);
    co_await b.peer.start();
    co_await until(a, [&] { return a.peer.linked(b.peer.node_id()); });
    const auto r = a.peer.send(b.peer.node_id(), std::string(1023, 'x'));  // 1 + 1023: max_frame
    CHECK(r.status == S::queued);
    CHECK(r.to == std::vector<std::uint64_t>{b.peer.node_id()});
    CHECK(a.peer.send(b.peer.node_id(), std::string(1024, 'x')).status == S::too_large);
    CHECK(a.peer.broadcast(std::string(1024 - 18 + 1, 'x')).status == S::too_large);
    CHECK(a.peer.broadcast(std::string(1024 - 18, 'y')).status == S::queued);
    co_await until(b, [&] { return b.got.size() == 2; });
    CHECK(b.got[0].payload.size() == 1023);
    CHECK(b.got[1].payload.size() == 1024 - 18);
    // A node known but whose link is down (b closed; a would redial it) is not linked.
    const auto b_id = b.peer.node_id();
    co_await b.peer.close();
    co_await until(a, [&] { return !a.peer.linked(b_id); });
    CHECK(a.peer.send(b_id, "late").status == S::not_linked);
    co_await a.peer.close();
    CHECK(a.peer.send(b_id, "closed").status == S::closed);
    CHECK(a.peer.broadcast("closed").status == S::closed);
  });
}

TEST_CASE("a node at its peer limit refuses the next one with a reason that both sides report") {
  on_loop([]() -> sockpat::Task<void> {
    auto oa = fast_options();
    oa.peer_limit = 1;
    Node a(oa);
    co_await a.peer.start();
    auto ob = fast_options();
    ob.join = {a.peer.local_endpoint()};
    Node b(ob);
    co_await b.peer.start();
    co_await until(a, [&] { return a.peer.linked(b.peer.node_id()); });

    // c dials the full node: refused before any Hello, so c never sees it join.
    auto oc = fast_options();
    oc.join = {a.peer.local_endpoint()};
    Node c(oc);
    co_await c.peer.start();
    co_await until(c, [&] { return !c.gone.empty(); });
    CHECK(c.gone[0].id == a.peer.node_id());
    CHECK(c.gone[0].reason == sockpat::PeerLeftReason::rejected);
    CHECK(c.gone[0].detail == "peer limit of 1 reached");
    // (c may link b, learned from a, and be refused again if b names a to it.)
    CHECK(std::count(c.joined_ids.begin(), c.joined_ids.end(), a.peer.node_id()) == 0);
    CHECK(c.peer.stats().rejected >= 1);
    CHECK(a.peer.stats().refused >= 1);
    CHECK(a.peer.peers().size() == 1);
    CHECK(a.joined == 1);
    // The Peers that followed the refusal told c of b.
    co_await until(c, [&] { return c.peer.stats().known >= 1; });

    // The full node dials: it has said Hello already, so it refuses after it.
    Node d(fast_options());
    co_await d.peer.start();
    const auto refused_before = a.peer.stats().refused;
    a.peer.join(d.peer.local_endpoint());
    co_await until(d, [&] { return !d.gone.empty(); });
    CHECK(d.gone[0].id == a.peer.node_id());
    CHECK(d.gone[0].reason == sockpat::PeerLeftReason::rejected);
    CHECK(d.gone[0].detail == "peer limit of 1 reached");
    CHECK(a.peer.stats().refused > refused_before);
    CHECK(a.gone.empty());
    CHECK(a.peer.linked(b.peer.node_id()));
    co_await d.peer.close();
    co_await c.peer.close();
    co_await b.peer.close();
    co_await a.peer.close();
  });
}
}

TEST_SUITE("peer thread" * doctest::timeout(60)) {
TEST_CASE("PeerThread runs a node on its own thread: thread-safe send, broadcast and waits") {
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::string> got_a;
  std::vector<std::string> got_b;
  sockpat::PeerCallbacks ca;
  ca.on_message = [&](const sockpat::PeerMessage& msg) {
    const std::lock_guard<std::mutex> lock(m);
    got_a.push_back(msg.payload);
    cv.notify_all();
  };
  sockpat::PeerCallbacks cb;
  cb.on_message = [&](const sockpat::PeerMessage& msg) {
    const std::lock_guard<std::mutex> lock(m);
    got_b.push_back(msg.payload);
    cv.notify_all();
  };
  // b answers "ping" from its callback, on its own thread: send must not wait for itself there.
  std::atomic<sockpat::PeerThread*> b_thread{nullptr};
  std::atomic<int> answered{0};
  cb.on_message = [&, inner = cb.on_message](const sockpat::PeerMessage& msg) {
    if (msg.payload == "ping") {
      answered += b_thread.load()->send(msg.from, "pong") ? 1 : 0;
      return;
    }
    inner(msg);
  };
  sockpat::PeerThread a(fast_options(), ca);
  // A send before any link is up says so, at once (it used to vanish without a word).
  CHECK(a.broadcast("too early").status == sockpat::PeerSendStatus::not_linked);
  CHECK(a.send(12345, "too early").status == sockpat::PeerSendStatus::unknown_node);
  auto ob = fast_options();
  ob.join = {a.local_endpoint()};
  sockpat::PeerThread b(ob, cb);
  b_thread = &b;
  REQUIRE(a.wait_for_peers(1, 10s));
  REQUIRE(b.wait_for_peers(1, 10s));
  CHECK(a.peers().at(0).id == b.node_id());
  CHECK(a.broadcast("hello b").to == std::vector<std::uint64_t>{b.node_id()});
  CHECK(b.send(a.node_id(), "hello a"));
  CHECK(a.send(b.node_id(), "ping"));
  {
    std::unique_lock<std::mutex> lock(m);
    CHECK(cv.wait_for(lock, 10s, [&] { return got_a.size() == 2 && got_b.size() == 1; }));
    CHECK(got_a == std::vector<std::string>{"hello a", "pong"});
    CHECK(got_b == std::vector<std::string>{"hello b"});
  }
  CHECK(answered == 1);
  b.stop();
  CHECK(b.peers().empty());
  CHECK(b.send(a.node_id(), "stopped").status == sockpat::PeerSendStatus::closed);
  a.stop();
  a.stop();  // idempotent
}

TEST_CASE("PeerThread's stop() sends a broadcast and a message made just before it (its dialed link too)") {
  // The README's and the peers guide's node: join, wait for one peer, broadcast, send, stop. The
  // node dialed its member, and a close that cancelled the dial task ended that link's session
  // before its writer had sent the last frames (lost in about 1 round in 12).
  for (int round = 0; round < 50; ++round) {
    std::mutex m;
    std::condition_variable cv;
    std::vector<std::string> got;
    sockpat::PeerCallbacks cm;
    cm.on_message = [&](const sockpat::PeerMessage& msg) {
      const std::lock_guard<std::mutex> lock(m);
      got.push_back(msg.payload);
      cv.notify_all();
    };
    sockpat::PeerThread member(fast_options(), cm);
    {
      auto o = fast_options();
      o.join = {member.local_endpoint()};
      sockpat::PeerThread node(o);
      REQUIRE(node.wait_for_peers(1, 10s));
      node.broadcast("hello, mesh");
      node.send(member.node_id(), "hello, you");
    }  // the destructor's stop()
    std::unique_lock<std::mutex> lock(m);
    CHECK(cv.wait_for(lock, 10s, [&] { return got.size() == 2; }));
    INFO("round " << round);
    REQUIRE(got == std::vector<std::string>({"hello, mesh", "hello, you"}));
  }
}

TEST_CASE("PeerThread's stop() does not wait out a redial's pause") {
  sockpat::Endpoint nobody;
  {
    auto l = sockpat::TcpListener::bind(sockpat::Endpoint("127.0.0.1", 0));
    nobody = l.local_endpoint();  // closed below: a connect there is refused
  }
  auto o = fast_options();
  o.join = {nobody};
  o.redial.initial = 30s;  // refused at once, then a pause far longer than the bound below
  o.redial.max = 30s;
  sockpat::PeerThread node(o);
  const auto started = std::chrono::steady_clock::now();
  node.stop();
  CHECK(std::chrono::steady_clock::now() - started < 2s);
}

TEST_CASE("PeerThread rethrows a failure to listen") {
  sockpat::PeerThread a(fast_options());
  auto o = fast_options();
  o.listen = a.local_endpoint();
  // Another listener on a port in use (SO_REUSEADDR does not allow two listeners on Linux).
  CHECK_THROWS_AS(sockpat::PeerThread{o}, std::system_error);
}
}

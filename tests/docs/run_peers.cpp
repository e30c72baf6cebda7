// Runs the snippets of docs/guides/peers.md marked `<!-- snippet: run NAME -->` against real
// nodes on loopback: the guide's code as a user pastes it, not a copy of it. The header is made
// from the guide at build time (tests/docs/check_snippets.py --emit).
#include "peers.snippets.hpp"

#include <doctest/doctest.h>

#include <chrono>              // std::chrono_literals
#include <condition_variable>  // std::condition_variable
#include <cstdint>             // std::uint64_t
#include <mutex>               // std::mutex
#include <string>              // std::string
#include <utility>             // std::pair
#include <vector>              // std::vector

using namespace std::chrono_literals;

namespace {

// A PeerThread on 127.0.0.1 (a port the OS picks) that keeps what it is sent.
class Member {
 public:
  explicit Member(std::vector<sockpat::Endpoint> join = {}) : node_(options(std::move(join)), callbacks()) {}

  // Waits (bounded) until `n` messages have arrived; returns them as (kind, payload).
  std::vector<std::pair<sockpat::PeerMessageKind, std::string>> wait_messages(std::size_t n) {
    std::unique_lock<std::mutex> lock(mutex_);
    arrived_.wait_for(lock, 10s, [&] { return got_.size() >= n; });
    return got_;
  }
  sockpat::PeerThread& node() { return node_; }

 private:
  static sockpat::PeerOptions options(std::vector<sockpat::Endpoint> join) {
    sockpat::PeerOptions o;
    o.join = std::move(join);
    return o;
  }
  sockpat::PeerCallbacks callbacks() {
    sockpat::PeerCallbacks on;
    on.on_message = [this](const sockpat::PeerMessage& m) {
      std::lock_guard<std::mutex> lock(mutex_);
      got_.emplace_back(m.kind, m.payload);
      arrived_.notify_all();
    };
    return on;
  }

  std::mutex mutex_;
  std::condition_variable arrived_;
  std::vector<std::pair<sockpat::PeerMessageKind, std::string>> got_;
  sockpat::PeerThread node_;  // last: its callbacks use the members above
};

}  // namespace

TEST_SUITE("docs: peers guide") {
TEST_CASE("'A node in a blocking program': it joins the member, whose node gets the broadcast and the direct message" *
          doctest::timeout(60)) {
  Member member;
  snippet_blocking_node::snippet(member.node().local_endpoint());  // its stop() sends what is queued
  const auto got = member.wait_messages(2);
  using Kind = sockpat::PeerMessageKind;
  CHECK(got == std::vector<std::pair<Kind, std::string>>{{Kind::broadcast, "hello, mesh"}, {Kind::direct, "hello, you"}});
}

TEST_CASE("'A node on the event loop': node_task joins one member, discovers the other, and its broadcast reaches both" *
          doctest::timeout(60)) {
  Member a;
  Member b({a.node().local_endpoint()});
  REQUIRE(b.node().wait_for_peers(1, 10s));
  sockpat::PeerOptions options;  // the test's: a free port, one member; the other is discovered
  options.listen = sockpat::Endpoint("127.0.0.1", 0);
  options.join = {a.node().local_endpoint()};
  sockpat::run(snippet_loop_node::node_task(options));  // waits for 2 peers (at most 30 s), broadcasts, closes
  using Kind = sockpat::PeerMessageKind;
  const std::vector<std::pair<Kind, std::string>> expected{{Kind::broadcast, "two peers here"}};
  CHECK(a.wait_messages(1) == expected);
  CHECK(b.wait_messages(1) == expected);
}
}

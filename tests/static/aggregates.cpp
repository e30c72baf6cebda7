// Every public option, callback and result aggregate can be designated-initialised with one
// field and no warning: this file is compiled with -Wextra -Werror=missing-field-initializers
// (tests/CMakeLists.txt, tests/meson.build), under which a member without a default member
// initialiser, left out of a designated initialiser, is an error.
#include "sockpat.hpp"

#include <doctest/doctest.h>

#include <chrono>        // std::chrono_literals
#include <system_error>  // std::error_code

using namespace std::chrono_literals;

TEST_SUITE("aggregates") {
TEST_CASE("each public aggregate takes one designated field and keeps its other defaults") {
  const sockpat::ServerOptions server{.threads = 2};
  CHECK(server.strategy == sockpat::Strategy::elastic);
  CHECK_FALSE(server.on_error);
  const sockpat::ServerStats stats{.accepted = 1};
  CHECK(stats.refused == 0);
  const sockpat::ConnectOptions connect{.reuse_port = true};
  CHECK(connect.local.empty());
  const sockpat::ListenOptions listen{.backlog = 8};
  CHECK_FALSE(listen.v6_only.has_value());
  const sockpat::RetryOptions retry{.on_retry = [](const std::error_code&, int) {}};
  CHECK(retry.on_retry);
  const sockpat::Backoff backoff{.initial = 1ms};
  CHECK(backoff.jitter == doctest::Approx(0.25));
  const sockpat::RendezvousOptions rendezvous{.backoff = backoff};
  CHECK(rendezvous.backoff.initial == 1ms);
  const sockpat::FramingOptions framing{.max_line = 10};
  CHECK(framing.max_line == 10);
  const sockpat::FrameScan scan{.size = 1};
  CHECK_FALSE(scan.error);
  const sockpat::FrameParts parts{.prefix_size = 1};
  CHECK(parts.suffix.empty());
  const sockpat::StreamOptions streams{.limit = 10};
  CHECK(streams.no_delay);
  const sockpat::StreamServerOptions stream_server{.grace = 1ms};
  CHECK(stream_server.listen.reuse_address);
  const sockpat::PeerOptions peer{.node_id = 7};
  CHECK(peer.join.empty());
  const sockpat::PeerMessage message{.from = 1};
  CHECK(message.payload.empty());
  const sockpat::PeerLinkInfo link{.id = 1};
  CHECK(link.listen.empty());
  const sockpat::PeerStats peer_stats{.links = 1};
  CHECK(peer_stats.forwarded == 0);
  const sockpat::PeerCallbacks callbacks{.on_message = [](const sockpat::PeerMessage&) {}};
  CHECK_FALSE(callbacks.on_peer_left);
  const sockpat::wire::Hello hello{.node_id = 1};
  CHECK(hello.listen.empty());
  const sockpat::wire::PeerInfo info{.node_id = 1};
  CHECK(info.listen.empty());
  const sockpat::wire::Broadcast broadcast{.origin = 1};
  CHECK(broadcast.payload.empty());
}
}

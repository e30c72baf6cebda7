#include "sockpat/peer_wire.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "support/printing.hpp"

namespace wire = sockpat::wire;

namespace {

std::span<const std::byte> bytes(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

std::vector<wire::Message> samples() {
  wire::Peers peers;
  peers.peers.push_back({7, sockpat::Endpoint("127.0.0.1", 4000)});
  peers.peers.push_back({8, sockpat::Endpoint("::1", 4001)});
  peers.peers.push_back({9, sockpat::Endpoint::unix_path("/tmp/node.sock")});
  peers.peers.push_back({10, {}});
  return {wire::Hello{wire::protocol_version, 0x0102030405060708ULL, sockpat::Endpoint("127.0.0.1", 4002)},
          wire::Hello{wire::protocol_version, 1, {}},
          peers,
          wire::Peers{},
          wire::Direct{"hello, peer"},
          wire::Direct{std::string("\0\xff binary", 9)},
          wire::Direct{""},
          wire::Broadcast{42, 99, 7, "to everyone"},
          wire::Ping{123},
          wire::Reject{wire::protocol_version, 5, wire::RejectCode::peer_limit, "peer limit of 64 reached"},
          wire::Reject{wire::protocol_version, 6, wire::RejectCode::other, ""},
          wire::Pong{~0ULL}};
}

}  // namespace

TEST_SUITE("peer_wire") {
TEST_CASE("every message decodes back to itself") {
  for (const auto& m : samples()) {
    const auto body = wire::encode(m);
    std::error_code ec;
    const auto back = wire::decode(bytes(body), ec);
    CHECK_FALSE(ec);
    CHECK(back == m);
  }
}

TEST_CASE("a body cut short at any byte is malformed, never a crash or a wrong message") {
  for (const auto& m : samples()) {
    const auto body = wire::encode(m);
    // Direct and Broadcast payloads run to the end of the body, so only their headers can be cut.
    const bool open_ended = std::holds_alternative<wire::Direct>(m) || std::holds_alternative<wire::Broadcast>(m);
    const std::size_t header = std::holds_alternative<wire::Broadcast>(m) ? 18 : 1;
    for (std::size_t cut = 0; cut < body.size(); ++cut) {
      if (open_ended && cut >= header) break;
      CAPTURE(cut);
      std::error_code ec;
      (void)wire::decode(bytes(body.substr(0, cut)), ec);
      CHECK(ec == sockpat::errc::malformed_frame);
    }
  }
}

TEST_CASE("trailing bytes after a fixed-size message are malformed") {
  std::error_code ec;
  (void)wire::decode(bytes(wire::encode(wire::Ping{1}) + "x"), ec);
  CHECK(ec == sockpat::errc::malformed_frame);
  (void)wire::decode(bytes(wire::encode(wire::Hello{}) + "x"), ec);
  CHECK(ec == sockpat::errc::malformed_frame);
}

TEST_CASE("a hello with another magic or version is a protocol error") {
  auto body = wire::encode(wire::Hello{wire::protocol_version, 5, {}});
  body[1] = 'X';
  std::error_code ec;
  (void)wire::decode(bytes(body), ec);
  CHECK(ec == sockpat::errc::protocol_error);
  const auto v2 = wire::encode(wire::Hello{2, 5, {}});
  (void)wire::decode(bytes(v2), ec);
  CHECK(ec == sockpat::errc::protocol_error);
}

TEST_CASE("unknown types, bad endpoint text and oversized peer lists are malformed") {
  std::error_code ec;
  (void)wire::decode(bytes(std::string("\x7f", 1)), ec);
  CHECK(ec == sockpat::errc::malformed_frame);
  (void)wire::decode({}, ec);
  CHECK(ec == sockpat::errc::malformed_frame);
  // A Peers message whose count claims 65535 entries: refused before reading them.
  (void)wire::decode(bytes(std::string("\x02\xff\xff", 3)), ec);
  CHECK(ec == sockpat::errc::malformed_frame);
  // A Hello whose endpoint text does not parse.
  std::string body = wire::encode(wire::Hello{wire::protocol_version, 5, {}});
  body.back() = 5;
  body += "1.2.3";
  (void)wire::decode(bytes(body), ec);
  CHECK(ec == sockpat::errc::malformed_frame);
}

TEST_CASE("frame() prefixes the body with its length, big-endian") {
  const auto f = wire::frame(wire::Ping{1});
  REQUIRE(f.size() == 4 + 9);
  CHECK(f.substr(0, 4) == std::string("\0\0\0\x09", 4));
  CHECK(f.substr(4) == wire::encode(wire::Ping{1}));
}

TEST_CASE("encoding refuses a Peers message longer than a decoder accepts") {
  wire::Peers p;
  p.peers.resize(wire::max_peers_per_message + 1);
  CHECK_THROWS_AS((void)wire::encode(p), std::invalid_argument);
}
TEST_CASE("check_hello accepts only a Hello of this version from a node id other than 0") {
  std::error_code ec;
  const wire::Hello good{wire::protocol_version, 42, sockpat::Endpoint("127.0.0.1", 4000)};
  CHECK(wire::check_hello(bytes(wire::encode(good)), ec) == good);
  CHECK_FALSE(ec);
  (void)wire::check_hello(bytes(wire::encode(wire::Hello{2, 42, {}})), ec);
  CHECK(ec == sockpat::errc::protocol_error);
  (void)wire::check_hello(bytes(wire::encode(wire::Hello{wire::protocol_version, 0, {}})), ec);
  CHECK(ec == sockpat::errc::malformed_frame);
  (void)wire::check_hello(bytes(wire::encode(wire::Ping{7})), ec);
  CHECK(ec == sockpat::errc::malformed_frame);
  (void)wire::check_hello(bytes(std::string("\x01SPA")), ec);
  CHECK(ec == sockpat::errc::malformed_frame);
  CHECK(wire::check_hello(bytes(wire::encode(good)), ec) == good);
  CHECK_FALSE(ec);  // cleared by a good one
}
}

TEST_SUITE("peer_wire") {
TEST_CASE("a Reject is laid out byte by byte as docs/peer-protocol.md says; its text length must match") {
  const auto body = wire::encode(wire::Reject{wire::protocol_version, 0x0102030405060708ULL, wire::RejectCode::peer_limit, "full"});
  CHECK(body == std::string("\x07SPAT\x00\x01\x01\x02\x03\x04\x05\x06\x07\x08\x01\x04" "full", 21));
  std::error_code ec;
  (void)wire::decode(bytes(body + "x"), ec);  // a text longer than its length byte says
  CHECK(ec == sockpat::errc::malformed_frame);
  auto other_magic = body;
  other_magic[1] = 'X';
  (void)wire::decode(bytes(other_magic), ec);
  CHECK(ec == sockpat::errc::protocol_error);
  // A code this node does not know is read as `other`; any version is read (it only ends a link).
  auto unknown_code = body;
  unknown_code[15] = '\x09';
  unknown_code[6] = '\x02';
  const auto m = wire::decode(bytes(unknown_code), ec);
  CHECK_FALSE(ec);
  CHECK(std::get<wire::Reject>(m).code == wire::RejectCode::other);
  CHECK(std::get<wire::Reject>(m).version == 2);
  // Not a Hello: a node that does not know Reject closes the link on it, as refused.
  (void)wire::check_hello(bytes(body), ec);
  CHECK(ec == sockpat::errc::malformed_frame);
  CHECK_THROWS_AS((void)wire::encode(wire::Reject{1, 1, wire::RejectCode::other, std::string(256, 'x')}), std::invalid_argument);
}
}

// sockpat: the peer protocol's messages, encoded and decoded without I/O (docs/peer-protocol.md).
// A frame on the wire is a 4-byte big-endian length and that many bytes of body; this header
// deals with bodies: one byte of type, then the fields of that type, every field checked.
#ifndef SOCKPAT_PEER_WIRE_HPP
#define SOCKPAT_PEER_WIRE_HPP

#include <cstddef>       // std::byte, std::size_t
#include <cstdint>       // std::uint8_t, std::uint16_t, std::uint32_t, std::uint64_t
#include <span>          // std::span
#include <stdexcept>     // std::invalid_argument
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code
#include <type_traits>   // std::is_same_v, std::decay_t
#include <variant>       // std::variant, std::visit
#include <vector>        // std::vector

#include "sockpat/endpoint.hpp"
#include "sockpat/error.hpp"

namespace sockpat::wire {

inline constexpr std::uint32_t magic = 0x53504154;  // "SPAT"
inline constexpr std::uint16_t protocol_version = 1;
/// The most peers one Peers message may list, so that a decoder's allocation is bounded.
inline constexpr std::size_t max_peers_per_message = 256;
/// The longest endpoint text a message may carry ("unix:" and a 107-byte path fit).
inline constexpr std::size_t max_endpoint_text = 128;

/// The longest reason text a Reject may carry.
inline constexpr std::size_t max_reject_text = 255;

enum class Type : std::uint8_t { hello = 1, peers = 2, direct = 3, broadcast = 4, ping = 5, pong = 6, reject = 7 };

/// The first message on every link, both ways: who I am and where I listen.
struct Hello {
  std::uint16_t version = protocol_version;
  std::uint64_t node_id = 0;
  Endpoint listen = {};  ///< empty: this node does not listen
  friend bool operator==(const Hello&, const Hello&) = default;
};

struct PeerInfo {
  std::uint64_t node_id = 0;
  Endpoint listen = {};
  friend bool operator==(const PeerInfo&, const PeerInfo&) = default;
};

/// The nodes this node knows, for discovery.
struct Peers {
  std::vector<PeerInfo> peers = {};
  friend bool operator==(const Peers&, const Peers&) = default;
};

/// Application bytes for the node at the other end of the link only.
struct Direct {
  std::string payload = {};
  friend bool operator==(const Direct&, const Direct&) = default;
};

/// Application bytes for every node: forwarded until hops_left is 0, delivered once per node
/// thanks to (origin, message_id).
struct Broadcast {
  std::uint64_t origin = 0;
  std::uint64_t message_id = 0;
  std::uint8_t hops_left = 0;
  std::string payload = {};
  friend bool operator==(const Broadcast&, const Broadcast&) = default;
};

struct Ping {
  std::uint64_t nonce = 0;
  friend bool operator==(const Ping&, const Ping&) = default;
};
struct Pong {
  std::uint64_t nonce = 0;
  friend bool operator==(const Pong&, const Pong&) = default;
};

/// Why a node refuses a link (Reject::code); a receiver treats a code it does not know as `other`.
enum class RejectCode : std::uint8_t { other = 0, peer_limit = 1 };

/// A refusal: sent instead of a Hello (or after it), then the link is closed.
struct Reject {
  std::uint16_t version = protocol_version;
  std::uint64_t node_id = 0;  ///< the refusing node
  RejectCode code = RejectCode::other;
  std::string text = {};  ///< for people, at most max_reject_text bytes
  friend bool operator==(const Reject&, const Reject&) = default;
};

using Message = std::variant<Hello, Peers, Direct, Broadcast, Ping, Pong, Reject>;

namespace detail {

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u16(std::uint16_t v) { be(v, 2); }
  void u32(std::uint32_t v) { be(v, 4); }
  void u64(std::uint64_t v) { be(v, 8); }
  void endpoint(const Endpoint& e) {
    const std::string text = e.empty() ? std::string() : e.to_string();
    u8(static_cast<std::uint8_t>(text.size()));
    out_ += text;
  }
  void rest(std::string_view bytes) { out_ += bytes; }

 private:
  void be(std::uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string& out_;
};

class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  [[nodiscard]] bool ok() const noexcept { return ok_; }
  [[nodiscard]] bool at_end() const noexcept { return pos_ == in_.size(); }
  std::uint8_t u8() { return static_cast<std::uint8_t>(be(1)); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(be(2)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(be(4)); }
  std::uint64_t u64() { return be(8); }
  Endpoint endpoint() {
    const std::size_t n = u8();
    if (!ok_ || n == 0) return {};
    if (n > max_endpoint_text || !take(n)) return fail_endpoint();
    const std::string_view text(reinterpret_cast<const char*>(in_.data()) + pos_ - n, n);
    try {
      return Endpoint::parse(text);
    } catch (const std::invalid_argument&) {
      return fail_endpoint();
    }
  }
  std::string rest() {
    const auto* p = reinterpret_cast<const char*>(in_.data()) + pos_;
    std::string s(p, in_.size() - pos_);
    pos_ = in_.size();
    return s;
  }

 private:
  bool take(std::size_t n) {
    if (in_.size() - pos_ < n) {
      ok_ = false;
      return false;
    }
    pos_ += n;
    return true;
  }
  std::uint64_t be(std::size_t n) {
    if (!ok_ || !take(n)) return 0;
    std::uint64_t v = 0;
    for (std::size_t i = pos_ - n; i < pos_; ++i) v = (v << 8) | std::to_integer<std::uint8_t>(in_[i]);
    return v;
  }
  Endpoint fail_endpoint() {
    ok_ = false;
    return {};
  }
  std::span<const std::byte> in_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace detail

/// Appends the body of `m` to `out` (without the frame's length prefix).
inline void encode(const Message& m, std::string& out) {
  detail::Writer w(out);
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, Hello>) {
          w.u8(static_cast<std::uint8_t>(Type::hello));
          w.u32(magic);
          w.u16(v.version);
          w.u64(v.node_id);
          w.endpoint(v.listen);
        } else if constexpr (std::is_same_v<T, Peers>) {
          if (v.peers.size() > max_peers_per_message) {
            throw std::invalid_argument("sockpat: a Peers message lists at most 256 peers");
          }
          w.u8(static_cast<std::uint8_t>(Type::peers));
          w.u16(static_cast<std::uint16_t>(v.peers.size()));
          for (const auto& p : v.peers) {
            w.u64(p.node_id);
            w.endpoint(p.listen);
          }
        } else if constexpr (std::is_same_v<T, Direct>) {
          w.u8(static_cast<std::uint8_t>(Type::direct));
          w.rest(v.payload);
        } else if constexpr (std::is_same_v<T, Broadcast>) {
          w.u8(static_cast<std::uint8_t>(Type::broadcast));
          w.u64(v.origin);
          w.u64(v.message_id);
          w.u8(v.hops_left);
          w.rest(v.payload);
        } else if constexpr (std::is_same_v<T, Reject>) {
          if (v.text.size() > max_reject_text) throw std::invalid_argument("sockpat: a Reject's text is at most 255 bytes");
          w.u8(static_cast<std::uint8_t>(Type::reject));
          w.u32(magic);
          w.u16(v.version);
          w.u64(v.node_id);
          w.u8(static_cast<std::uint8_t>(v.code));
          w.u8(static_cast<std::uint8_t>(v.text.size()));
          w.rest(v.text);
        } else if constexpr (std::is_same_v<T, Ping>) {
          w.u8(static_cast<std::uint8_t>(Type::ping));
          w.u64(v.nonce);
        } else {
          w.u8(static_cast<std::uint8_t>(Type::pong));
          w.u64(v.nonce);
        }
      },
      m);
}

[[nodiscard]] inline std::string encode(const Message& m) {
  std::string out;
  encode(m, out);
  return out;
}

/// Decodes one body. Bytes that are no message of this protocol give errc::malformed_frame;
/// a Hello with another magic or version, or a Reject with another magic, gives
/// errc::protocol_error (a Reject of any version is read: it only ends a link). Never throws for bad input.
[[nodiscard]] inline Message decode(std::span<const std::byte> body, std::error_code& ec) {
  ec.clear();
  detail::Reader r(body);
  const auto type = static_cast<Type>(r.u8());
  Message m;
  switch (type) {
    case Type::hello: {
      Hello h;
      const auto mg = r.u32();
      h.version = r.u16();
      h.node_id = r.u64();
      h.listen = r.endpoint();
      if (r.ok() && r.at_end() && (mg != magic || h.version != protocol_version)) {
        ec = make_error_code(errc::protocol_error);
        return h;
      }
      m = std::move(h);
      break;
    }
    case Type::peers: {
      Peers p;
      const std::size_t n = r.u16();
      if (n > max_peers_per_message) {
        ec = make_error_code(errc::malformed_frame);
        return m;
      }
      for (std::size_t i = 0; i < n && r.ok(); ++i) {
        PeerInfo info;
        info.node_id = r.u64();
        info.listen = r.endpoint();
        p.peers.push_back(std::move(info));
      }
      m = std::move(p);
      break;
    }
    case Type::direct: m = Direct{r.rest()}; break;
    case Type::broadcast: {
      Broadcast b;
      b.origin = r.u64();
      b.message_id = r.u64();
      b.hops_left = r.u8();
      b.payload = r.ok() ? r.rest() : std::string();
      m = std::move(b);
      break;
    }
    case Type::reject: {
      Reject j;
      const auto mg = r.u32();
      j.version = r.u16();
      j.node_id = r.u64();
      const auto code = r.u8();
      j.code = code == static_cast<std::uint8_t>(RejectCode::peer_limit) ? RejectCode::peer_limit : RejectCode::other;
      const std::size_t n = r.u8();
      j.text = r.ok() ? r.rest() : std::string();
      if (r.ok() && j.text.size() != n) {
        ec = make_error_code(errc::malformed_frame);
        return m;
      }
      if (r.ok() && mg != magic) {
        ec = make_error_code(errc::protocol_error);
        return m;
      }
      m = std::move(j);
      break;
    }
    case Type::ping: m = Ping{r.u64()}; break;
    case Type::pong: m = Pong{r.u64()}; break;
    default: ec = make_error_code(errc::malformed_frame); return m;
  }
  if (!r.ok() || !r.at_end()) ec = make_error_code(errc::malformed_frame);
  return m;
}

/// Checks the first body a link receives, as link rule 1 asks: a Hello of this protocol's
/// magic and version from a node id other than 0. Another magic or version gives
/// errc::protocol_error; any other body (another message first, garbage, node id 0) gives
/// errc::malformed_frame. The handshake without I/O; never throws for bad input.
[[nodiscard]] inline Hello check_hello(std::span<const std::byte> body, std::error_code& ec) {
  auto m = decode(body, ec);
  if (ec) return {};
  auto* hello = std::get_if<Hello>(&m);
  if (hello == nullptr || hello->node_id == 0) {
    ec = make_error_code(errc::malformed_frame);
    return {};
  }
  return std::move(*hello);
}

/// The frame for a message: the 4-byte big-endian body length, then the body.
[[nodiscard]] inline std::string frame(const Message& m) {
  std::string out(4, '\0');
  encode(m, out);
  const auto n = static_cast<std::uint32_t>(out.size() - 4);
  for (int i = 0; i < 4; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * (3 - i))) & 0xff);
  return out;
}

}  // namespace sockpat::wire

#endif  // SOCKPAT_PEER_WIRE_HPP

// Fuzz target: the peer handshake as a node sees it, on the bytes a new link brings. The first
// byte picks a chunk size; the rest is the stream: a length-prefixed frame (at most max_frame)
// whose body must be a Hello (wire::check_hello). Properties checked:
// - nothing throws or crashes, whatever the bytes;
// - the verdict does not depend on how the bytes were split;
// - a Hello accepted has this protocol's version and a node id other than 0, and its own
//   frame, fed back, is accepted as the same Hello;
// - an oversized length is refused before its body arrives.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "sockpat/framing.hpp"
#include "sockpat/peer_wire.hpp"

namespace {

constexpr std::size_t max_frame = 512;

struct Verdict {
  bool complete = false;      // a whole first frame arrived
  std::error_code frame_error;
  std::error_code hello_error;
  sockpat::wire::Hello hello;
  std::size_t fed = 0;        // bytes fed when the verdict was reached
};

Verdict handshake(std::string_view stream, std::size_t chunk) {
  sockpat::LengthPrefixDecoder d{sockpat::LengthPrefixFraming(max_frame)};
  Verdict v;
  for (std::size_t pos = 0; pos < stream.size(); pos += chunk) {
    const auto piece = stream.substr(pos, chunk);
    d.feed(piece);
    v.fed = pos + piece.size();
    const auto frame = d.next(v.frame_error);
    if (v.frame_error) return v;
    if (frame) {
      v.complete = true;
      v.hello = sockpat::wire::check_hello(std::as_bytes(std::span(frame->data(), frame->size())), v.hello_error);
      return v;
    }
  }
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t chunk = 1 + data[0] % 16;
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  const Verdict split = handshake(stream, chunk);
  const Verdict whole = handshake(stream, stream.size() + 1);
  if (split.complete != whole.complete || split.frame_error != whole.frame_error ||
      split.hello_error != whole.hello_error || !(split.hello == whole.hello)) {
    std::abort();
  }
  if (whole.frame_error) {
    // Only the 4-byte length can be refused, and only once it is complete.
    if (whole.frame_error != sockpat::errc::frame_too_large || stream.size() < 4) std::abort();
    return 0;
  }
  if (!whole.complete || whole.hello_error) return 0;
  const auto& h = whole.hello;
  if (h.node_id == 0 || h.version != sockpat::wire::protocol_version) std::abort();
  const std::string again = sockpat::wire::frame(h);
  std::error_code ec;
  const auto back = sockpat::wire::check_hello(std::as_bytes(std::span(again.data() + 4, again.size() - 4)), ec);
  if (ec || !(back == h)) std::abort();
  return 0;
}

// Fuzz target: the peer protocol's message decoder on arbitrary bodies. It must never crash or
// throw, and whatever it accepts must encode to bytes that decode to the same message.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "sockpat/peer_wire.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> body(reinterpret_cast<const std::byte*>(data), size);
  std::error_code ec;
  const auto m = sockpat::wire::decode(body, ec);
  if (ec) return 0;
  const auto again = sockpat::wire::encode(m);
  std::error_code ec2;
  const auto back = sockpat::wire::decode(std::as_bytes(std::span(again.data(), again.size())), ec2);
  if (ec2 || !(back == m)) std::abort();
  return 0;
}

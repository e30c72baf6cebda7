// Fuzz target: the sans-I/O framing decoders. The first byte picks a framing (a delimiter or a
// prefix width) and a chunk size; the rest is the stream. Properties checked:
// - the frames do not depend on how the bytes were split (chunked feeding = one-shot feeding);
// - no frame is longer than the framing's maximum;
// - nothing is lost: the frames re-encoded, followed by what is still buffered, are the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "sockpat/framing.hpp"

namespace {

constexpr std::size_t max_frame = 64;

struct Outcome {
  std::vector<std::string> frames;
  std::error_code error;
  std::string left;
};

template <class F>
Outcome decode(const F& framing, std::string_view input, std::size_t chunk) {
  sockpat::Decoder<F> d(framing);
  Outcome out;
  for (std::size_t pos = 0; pos < input.size() && !out.error; pos += chunk) {
    d.feed(input.substr(pos, chunk));
    while (auto frame = d.next(out.error)) {
      if (frame->size() > max_frame) std::abort();
      out.frames.emplace_back(*frame);
    }
  }
  out.left = std::string(d.buffered());
  return out;
}

template <class F>
void check(const F& framing, std::string_view input, std::size_t chunk) {
  const auto split = decode(framing, input, chunk);
  const auto whole = decode(framing, input, input.size() + 1);
  if (split.frames != whole.frames || split.error != whole.error) std::abort();
  std::string rebuilt;
  for (const auto& f : whole.frames) rebuilt += sockpat::encode_frame(framing, f);
  rebuilt += whole.left;
  // An error stops the feeding: compare only what was fed.
  if (!whole.error && rebuilt != input) std::abort();
  if (whole.error && input.substr(0, rebuilt.size()) != rebuilt) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t config = data[0];
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::size_t chunk = 1 + (config >> 4);
  switch (config & 0x7) {
    case 0: check(sockpat::DelimiterFraming("\n", max_frame), input, chunk); break;
    case 1: check(sockpat::DelimiterFraming("\r\n", max_frame), input, chunk); break;
    case 2: check(sockpat::DelimiterFraming("ab", max_frame), input, chunk); break;
    case 3: check(sockpat::LengthPrefixFraming(max_frame, 1), input, chunk); break;
    case 4: check(sockpat::LengthPrefixFraming(max_frame, 2), input, chunk); break;
    case 5: check(sockpat::LengthPrefixFraming(max_frame, 4), input, chunk); break;
    case 6: check(sockpat::LengthPrefixFraming(max_frame, 8), input, chunk); break;
    default: check(sockpat::DelimiterFraming(std::string(1, '\0'), max_frame), input, chunk); break;
  }
  return 0;
}

// sockpat: the project's one pseudorandom generator, for spread (node ids, backoff jitter), not secrecy.
#ifndef SOCKPAT_DETAIL_SPLITMIX64_HPP
#define SOCKPAT_DETAIL_SPLITMIX64_HPP

#include <cstdint>  // std::uint64_t

#include "sockpat/detail/config.hpp"

namespace sockpat::detail {

/// splitmix64 (G. Steele, D. Lea, C. Flood, "Fast splittable pseudorandom number generators",
/// OOPSLA 2014): node ids and backoff jitter need spread, not secrecy, and <random> alone cost
/// every includer of the umbrella header about 0.25 s of compile time (bench/NOTES.md).
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) noexcept : state_(seed) {}
  std::uint64_t operator()() noexcept {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1).
  double unit() noexcept { return static_cast<double>((*this)() >> 11) * 0x1.0p-53; }

 private:
  std::uint64_t state_;
};

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_SPLITMIX64_HPP

// sockpat: Backoff, the one description of "wait longer after each failure" (connect retries,
// rendezvous dials, peer redials, a server's accept pauses), and BackoffSequence, its one
// implementation.
#ifndef SOCKPAT_BACKOFF_HPP
#define SOCKPAT_BACKOFF_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock, milliseconds, seconds
#include <cstdint>  // std::uint64_t

#include "sockpat/detail/config.hpp"
#include "sockpat/detail/splitmix64.hpp"

namespace sockpat {

/// Exponential backoff with jitter: the first pause is `initial`, each later one `multiplier`
/// times the one before, up to `max`; each pause is then shortened by a random fraction of up
/// to `jitter` (0: none; 0.5: somewhere in [pause / 2, pause]), so that processes that failed
/// together do not retry together. `max` is never exceeded.
struct Backoff {
  std::chrono::steady_clock::duration initial = std::chrono::milliseconds(100);
  std::chrono::steady_clock::duration max = std::chrono::seconds(10);
  double multiplier = 2.0;  ///< below 1 counts as 1
  double jitter = 0.25;     ///< clamped to [0, 1]
};

namespace detail {
/// A seed for jitter: the clock differs between processes started together, which is all that
/// jitter needs.
inline std::uint64_t clock_seed() noexcept {
  return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}
}  // namespace detail

/// The pauses of one Backoff, one next() per failure; reset() after a success. Allocates nothing
/// and holds no reference to the Backoff it was made from. Not thread-safe.
class BackoffSequence {
 public:
  using duration = std::chrono::steady_clock::duration;

  /// `seed` drives the jitter: the same seed gives the same pauses.
  explicit BackoffSequence(const Backoff& b, std::uint64_t seed = detail::clock_seed()) noexcept
      : backoff_(b), random_(seed) {
    if (backoff_.max < duration::zero()) backoff_.max = duration::zero();
    if (!(backoff_.multiplier >= 1.0)) backoff_.multiplier = 1.0;  // also NaN
    if (!(backoff_.jitter >= 0.0)) backoff_.jitter = 0.0;
    if (backoff_.jitter > 1.0) backoff_.jitter = 1.0;
    reset();
  }

  /// The next pause, in [(1 - jitter) * p, p] where p is the unjittered pause.
  [[nodiscard]] duration next() noexcept {
    const duration p = current_;
    // In double: a multiplier near the representable limit must saturate at max, not overflow.
    const double grown = static_cast<double>(current_.count()) * backoff_.multiplier;
    current_ = grown >= static_cast<double>(backoff_.max.count()) ? backoff_.max
                                                                   : duration(static_cast<duration::rep>(grown));
    if (backoff_.jitter == 0.0) return p;
    const double shortened = static_cast<double>(p.count()) * (1.0 - backoff_.jitter * random_.unit());
    return duration(static_cast<duration::rep>(shortened));
  }

  /// Starts again from `initial` (the jitter source goes on).
  void reset() noexcept {
    current_ = backoff_.initial < duration::zero() ? duration::zero()
               : backoff_.initial > backoff_.max   ? backoff_.max
                                                   : backoff_.initial;
  }

 private:
  Backoff backoff_;
  duration current_{};
  detail::SplitMix64 random_;
};

}  // namespace sockpat

#endif  // SOCKPAT_BACKOFF_HPP

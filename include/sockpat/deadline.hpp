// sockpat: the bound every blocking call takes.
#ifndef SOCKPAT_DEADLINE_HPP
#define SOCKPAT_DEADLINE_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock, std::chrono::duration
#include <stop_token>  // std::stop_token
#include <utility>     // std::move

#include "sockpat/detail/wait.hpp"

namespace sockpat {

/// When a blocking call gives up: a point in time (from a timeout or a steady_clock
/// time point), a stop token, both, or neither (the default: wait as long as it takes).
/// A timeout is turned into a time point when the Deadline is made, so one Deadline
/// bounds a whole composite call (write_all, read_exactly, connect to several addresses).
class Deadline {
 public:
  Deadline() noexcept = default;
  template <class Rep, class Period>
  Deadline(std::chrono::duration<Rep, Period> timeout) noexcept  // NOLINT: implicit by design
      : at_(after(timeout)), timeout_(kept(timeout)) {}
  Deadline(std::chrono::steady_clock::time_point at) noexcept : at_(at) {}  // NOLINT
  Deadline(std::stop_token stop) noexcept : stop_(std::move(stop)) {}      // NOLINT
  template <class Rep, class Period>
  Deadline(std::chrono::duration<Rep, Period> timeout, std::stop_token stop) noexcept
      : at_(after(timeout)), stop_(std::move(stop)), timeout_(kept(timeout)) {}
  Deadline(std::chrono::steady_clock::time_point at, std::stop_token stop) noexcept
      : at_(at), stop_(std::move(stop)) {}

  [[nodiscard]] static Deadline none() noexcept { return {}; }

  [[nodiscard]] std::chrono::steady_clock::time_point time() const noexcept { return at_; }
  [[nodiscard]] bool has_time() const noexcept { return at_ != detail::no_deadline; }
  [[nodiscard]] const std::stop_token& stop_token() const noexcept { return stop_; }
  [[nodiscard]] bool expired() const noexcept { return has_time() && std::chrono::steady_clock::now() >= at_; }
  /// The timeout this deadline was made from; zero when it was made from a time point (or has no
  /// time). Error messages say "after 50 ms" with it.
  [[nodiscard]] std::chrono::steady_clock::duration timeout() const noexcept { return timeout_; }

  /// The earlier of this deadline's time and `other`, keeping this stop token.
  [[nodiscard]] Deadline capped(std::chrono::steady_clock::time_point other) const noexcept {
    Deadline d(other < at_ ? other : at_, stop_);
    if (!(other < at_)) d.timeout_ = timeout_;
    return d;
  }

 private:
  template <class Rep, class Period>
  static std::chrono::steady_clock::time_point after(std::chrono::duration<Rep, Period> timeout) noexcept {
    const auto now = std::chrono::steady_clock::now();
    if (timeout <= timeout.zero()) return now;
    // A huge timeout must not overflow into the past.
    const auto left = std::chrono::duration_cast<std::chrono::duration<double>>(detail::no_deadline - now);
    if (std::chrono::duration_cast<std::chrono::duration<double>>(timeout) >= left) return detail::no_deadline;
    return now + std::chrono::ceil<std::chrono::steady_clock::duration>(timeout);
  }
  template <class Rep, class Period>
  static std::chrono::steady_clock::duration kept(std::chrono::duration<Rep, Period> timeout) noexcept {
    if (timeout <= timeout.zero()) return {};
    // A timeout of a century or more is "no time" (after() maps it to no_deadline).
    if (std::chrono::duration_cast<std::chrono::duration<double>>(timeout).count() >= 3.2e9) return {};
    return std::chrono::ceil<std::chrono::steady_clock::duration>(timeout);
  }

  std::chrono::steady_clock::time_point at_ = detail::no_deadline;
  std::stop_token stop_;
  std::chrono::steady_clock::duration timeout_{};
};

}  // namespace sockpat

#endif  // SOCKPAT_DEADLINE_HPP

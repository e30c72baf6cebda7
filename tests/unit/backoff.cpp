#include "sockpat/backoff.hpp"

#include <doctest/doctest.h>

#include <chrono>   // std::chrono literals, steady_clock
#include <cstdint>  // std::uint64_t
#include <set>      // std::set: distinct jittered pauses
#include <type_traits>  // std::is_nothrow_*
#include <vector>   // std::vector

using namespace std::chrono_literals;

namespace {

std::vector<std::chrono::steady_clock::duration> first(sockpat::BackoffSequence& s, int n) {
  std::vector<std::chrono::steady_clock::duration> out;
  for (int i = 0; i < n; ++i) out.push_back(s.next());
  return out;
}

}  // namespace

static_assert(std::is_nothrow_copy_constructible_v<sockpat::BackoffSequence>);
static_assert(std::is_trivially_destructible_v<sockpat::BackoffSequence>);  // it owns nothing

TEST_SUITE("backoff") {
TEST_CASE("without jitter the pauses double from initial and stop at max") {
  sockpat::BackoffSequence s({.initial = 10ms, .max = 100ms, .jitter = 0.0}, 1);
  const std::vector<std::chrono::steady_clock::duration> expected{10ms, 20ms, 40ms, 80ms, 100ms, 100ms, 100ms};
  CHECK(first(s, 7) == expected);
}

TEST_CASE("the multiplier sets the growth, and one below 1 counts as 1") {
  sockpat::BackoffSequence triple({.initial = 1ms, .max = 1s, .multiplier = 3.0, .jitter = 0.0}, 1);
  const std::vector<std::chrono::steady_clock::duration> tripled{1ms, 3ms, 9ms, 27ms};
  CHECK(first(triple, 4) == tripled);
  sockpat::BackoffSequence flat({.initial = 5ms, .max = 1s, .multiplier = 0.5, .jitter = 0.0}, 1);
  const std::vector<std::chrono::steady_clock::duration> constant{5ms, 5ms, 5ms};
  CHECK(first(flat, 3) == constant);
}

TEST_CASE("an initial pause above max starts at max, and a long sequence saturates without overflow") {
  sockpat::BackoffSequence above({.initial = 5s, .max = 1s, .jitter = 0.0}, 1);
  CHECK(above.next() == 1s);
  sockpat::BackoffSequence huge({.initial = 1ms, .max = std::chrono::hours(24 * 365 * 100), .multiplier = 1e9, .jitter = 0.0}, 1);
  for (int i = 0; i < 200; ++i) REQUIRE(huge.next() >= std::chrono::steady_clock::duration::zero());
  CHECK(huge.next() == std::chrono::hours(24 * 365 * 100));
}

TEST_CASE("jitter shortens each pause by at most its fraction, never lengthens it, and varies") {
  const sockpat::Backoff b{.initial = 100ms, .max = 800ms, .jitter = 0.5};
  sockpat::BackoffSequence jittered(b, 42);
  sockpat::BackoffSequence plain({.initial = 100ms, .max = 800ms, .jitter = 0.0}, 42);
  std::set<std::chrono::steady_clock::duration::rep> seen;
  for (int i = 0; i < 1000; ++i) {
    const auto p = plain.next();
    const auto j = jittered.next();
    REQUIRE(j <= p);
    REQUIRE(j >= p / 2);
    seen.insert(j.count());
  }
  CHECK(seen.size() > 900);  // 800 ms at most of the time, each drawn from [400 ms, 800 ms]
}

TEST_CASE("the same seed gives the same pauses; jitter is clamped to [0, 1]") {
  const sockpat::Backoff b{.initial = 10ms, .max = 1s, .jitter = 0.25};
  sockpat::BackoffSequence a(b, 7);
  sockpat::BackoffSequence c(b, 7);
  CHECK(first(a, 20) == first(c, 20));
  sockpat::BackoffSequence over({.initial = 10ms, .max = 10ms, .jitter = 3.0}, 7);
  sockpat::BackoffSequence under({.initial = 10ms, .max = 10ms, .jitter = -1.0}, 7);
  for (int i = 0; i < 100; ++i) {
    const auto o = over.next();
    REQUIRE(o >= std::chrono::steady_clock::duration::zero());
    REQUIRE(o <= 10ms);
    REQUIRE(under.next() == 10ms);
  }
}

TEST_CASE("reset starts again from initial") {
  sockpat::BackoffSequence s({.initial = 10ms, .max = 100ms, .jitter = 0.0}, 1);
  (void)first(s, 5);
  s.reset();
  const std::vector<std::chrono::steady_clock::duration> again{10ms, 20ms, 40ms};
  CHECK(first(s, 3) == again);
}

TEST_CASE("a default Backoff: 100 ms doubling up to 10 s, jitter a quarter") {
  const sockpat::Backoff b;
  CHECK(b.initial == 100ms);
  CHECK(b.max == 10s);
  CHECK(b.multiplier == 2.0);
  CHECK(b.jitter == 0.25);
  sockpat::BackoffSequence s(b);  // seeded from the clock
  const auto p = s.next();
  CHECK(p <= 100ms);
  CHECK(p >= 75ms);
}
}

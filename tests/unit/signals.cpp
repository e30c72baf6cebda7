#include "sockpat/signals.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <mutex>
#include <stdexcept>

using namespace std::chrono_literals;

namespace {

// Waits (bounded) until the token reports a stop.
bool wait_stopped(const std::stop_token& token, std::chrono::milliseconds bound) {
  std::mutex m;
  std::condition_variable cv;
  bool stopped = false;
  std::stop_callback cb(token, [&] {
    std::lock_guard lock(m);
    stopped = true;
    cv.notify_all();
  });
  std::unique_lock lock(m);
  return cv.wait_for(lock, bound, [&] { return stopped; });
}

}  // namespace

TEST_SUITE("signals") {
TEST_CASE("SIGTERM requests a stop instead of killing the process") {
  sockpat::SignalStop signals;
  CHECK_FALSE(signals.stop_requested());
  std::raise(SIGTERM);
  CHECK(wait_stopped(signals.token(), 10s));
  CHECK(signals.signal() == SIGTERM);
}

TEST_CASE("SIGINT requests a stop too") {
  sockpat::SignalStop signals;
  std::raise(SIGINT);
  CHECK(wait_stopped(signals.token(), 10s));
  CHECK(signals.signal() == SIGINT);
}

TEST_CASE("the previous handler comes back when the SignalStop is destroyed") {
  static volatile std::sig_atomic_t seen = 0;
  const auto old = std::signal(SIGTERM, [](int) { seen = 1; });
  { sockpat::SignalStop signals; }
  std::raise(SIGTERM);
  CHECK(seen == 1);
  std::signal(SIGTERM, old);
}

TEST_CASE("only one SignalStop may be alive at a time") {
  sockpat::SignalStop first;
  CHECK_THROWS_AS((void)sockpat::SignalStop(), std::logic_error);
}
}

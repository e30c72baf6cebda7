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

TEST_SUITE("signals" * doctest::timeout(60)) {
#if defined(_WIN32)
// Windows has no SIGINT/SIGTERM to raise: SignalStop listens for console control events, which
// Windows delivers by calling the handler on a thread of its own. The tests call the installed
// handler the same way (GenerateConsoleCtrlEvent needs a console, which a test run has not).
TEST_CASE("Ctrl-C requests a stop instead of ending the process") {
  sockpat::SignalStop signals;
  CHECK_FALSE(signals.stop_requested());
  CHECK(sockpat::detail::sockpat_on_console_event(CTRL_C_EVENT));
  CHECK(wait_stopped(signals.token(), 10s));
  CHECK(signals.signal() == SIGINT);
}

TEST_CASE("Ctrl-Break and closing the console request a stop too") {
  {
    sockpat::SignalStop signals;
    CHECK(sockpat::detail::sockpat_on_console_event(CTRL_BREAK_EVENT));
    CHECK(wait_stopped(signals.token(), 10s));
    CHECK(signals.signal() == SIGBREAK);
  }
  sockpat::SignalStop signals;
  CHECK(sockpat::detail::sockpat_on_console_event(CTRL_CLOSE_EVENT));
  CHECK(wait_stopped(signals.token(), 10s));
  CHECK(signals.signal() == SIGTERM);
}

TEST_CASE("events are passed on to the next handler when no SignalStop is alive, or not ours") {
  { sockpat::SignalStop signals; }
  CHECK_FALSE(sockpat::detail::sockpat_on_console_event(CTRL_C_EVENT));
  sockpat::SignalStop signals;
  CHECK_FALSE(sockpat::detail::sockpat_on_console_event(CTRL_LOGOFF_EVENT));
  CHECK_FALSE(signals.stop_requested());
}
#else
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

TEST_CASE("a second signal, SIGTERM after SIGINT, requests the urgent stop; the first is kept") {
  sockpat::SignalStop signals;
  std::raise(SIGINT);
  CHECK(wait_stopped(signals.token(), 10s));
  CHECK_FALSE(signals.urgent_token().stop_requested());
  std::raise(SIGTERM);
  CHECK(wait_stopped(signals.urgent_token(), 10s));
  CHECK(signals.signal() == SIGINT);
}

TEST_CASE("a signal the process ignored stays ignored: SIGINT under nohup or in a background job") {
  const auto old = std::signal(SIGINT, SIG_IGN);
  {
    sockpat::SignalStop signals;
    std::raise(SIGINT);   // ignored: neither a stop nor the end of the process
    std::raise(SIGTERM);  // caught; the pipe is read in order, so SIGINT would have come first
    CHECK(wait_stopped(signals.token(), 10s));
    CHECK(signals.signal() == SIGTERM);
  }
  const bool still_ignored = std::signal(SIGINT, old) == SIG_IGN;  // after the SignalStop too
  CHECK(still_ignored);
}

TEST_CASE("the previous handler comes back when the SignalStop is destroyed") {
  static volatile std::sig_atomic_t seen = 0;
  const auto old = std::signal(SIGTERM, [](int) { seen = 1; });
  { sockpat::SignalStop signals; }
  std::raise(SIGTERM);
  CHECK(seen == 1);
  std::signal(SIGTERM, old);
}

#endif

TEST_CASE("only one SignalStop may be alive at a time") {
  sockpat::SignalStop first;
  CHECK_THROWS_AS((void)sockpat::SignalStop(), std::logic_error);
}
}

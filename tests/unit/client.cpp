#include "sockpat/client.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <chrono>
#include <future>
#include <string>

#include "sockpat/listener.hpp"
#include "support/loopback.hpp"

using namespace std::chrono_literals;

namespace {

/// A port that was free a moment ago: bound, read back, released.
sockpat::Endpoint free_endpoint() {
  auto l = test::loopback_listener();
  return l.local_endpoint();
}

}  // namespace

TEST_SUITE("client") {
TEST_CASE("connect_with_retry keeps trying until the server starts listening" * doctest::timeout(60)) {
  const auto where = free_endpoint();
  std::promise<void> refused_once;
  sockpat::RetryOptions retry;
  retry.backoff.initial = 10ms;
  int attempts = 0;
  retry.on_retry = [&](const std::error_code& ec, int attempt) {
    CHECK(ec == std::errc::connection_refused);
    attempts = attempt;
    if (attempt == 1) refused_once.set_value();
  };
  // The server starts only after the client was refused: no sleeping, no guessing.
  auto server = std::async(std::launch::async, [&] {
    refused_once.get_future().wait();
    auto listener = sockpat::TcpListener::bind(where);
    auto c = listener.accept(10s);
    c.write_all("up", 10s);
  });
  auto c = sockpat::connect_with_retry<sockpat::Tcp>(where, 20s, retry);
  std::string got(2, '\0');
  c.read_exactly(got, 10s);
  CHECK(got == "up");
  CHECK(attempts >= 1);
  server.get();
}

TEST_CASE("connect_with_retry gives up at the deadline with the last error, in both forms" * doctest::timeout(60)) {
  const auto nowhere = free_endpoint();
  sockpat::RetryOptions retry;
  retry.backoff.initial = 5ms;
  retry.backoff.max = 20ms;
  int attempts = 0;
  retry.on_retry = [&](const std::error_code&, int attempt) { attempts = attempt; };
  const auto start = std::chrono::steady_clock::now();
  std::error_code ec;
  auto c = sockpat::connect_with_retry<sockpat::Tcp>(nowhere, 200ms, retry, ec);
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(ec == std::errc::connection_refused);
  CHECK_FALSE(c.is_open());
  CHECK(attempts >= 3);
  CHECK(took < 5s);
  CHECK_THROWS_WITH_AS((void)sockpat::connect_with_retry<sockpat::Tcp>(nowhere, 50ms), doctest::Contains("refused"),
                       std::system_error);
}

TEST_CASE("connect_with_retry stops at once on a stop request and does not retry hopeless errors" * doctest::timeout(60)) {
  const auto nowhere = free_endpoint();
  std::stop_source stop;
  sockpat::RetryOptions retry;
  retry.backoff = {.initial = 10s, .max = 10s, .jitter = 0.0};  // only the stop can end this pause
  retry.on_retry = [&](const std::error_code&, int) { stop.request_stop(); };
  std::error_code ec;
  (void)sockpat::connect_with_retry<sockpat::Tcp>(nowhere, sockpat::Deadline(30s, stop.get_token()), retry, ec);
  CHECK(ec == std::errc::operation_canceled);

  test::TempSocketPath path("client");
  int retried = 0;
  sockpat::RetryOptions count;
  count.backoff.initial = 10ms;
  count.on_retry = [&](const std::error_code&, int) { ++retried; };
#if !defined(_WIN32)  // Windows: AF_UNIX is not in Wine 8, so the retry of a missing path is untested there
  // A Unix path not made yet is "not there yet": retried until the deadline.
  (void)sockpat::connect_with_retry<sockpat::Unix>(sockpat::Endpoint::unix_path(path.path()), 200ms, count, ec);
  CHECK(ec == std::errc::no_such_file_or_directory);
  CHECK(retried >= 1);
#endif

  // An error that cannot go away is returned at once.
  retried = 0;
  (void)sockpat::connect_with_retry<sockpat::Tcp>(sockpat::Endpoint::unix_path(path.path()), 10s, count, ec);
  CHECK(ec == std::errc::address_family_not_supported);
  CHECK(retried == 0);
}

TEST_CASE("request exchanges one framed message with a server" * doctest::timeout(60)) {
  auto listener = test::loopback_listener();
  const sockpat::LengthPrefixFraming framing;
  auto server = std::async(std::launch::async, [&] {
    auto c = listener.accept(10s);
    sockpat::FramedConnection f(c);
    auto frame = f.read_frame(framing, 10s);
    f.write_frame(framing, "reply to " + frame.value(), 10s);
  });
  // The framing comes before the payload, as in FramedConnection::request and write_frame.
  CHECK(sockpat::request<sockpat::Tcp>(listener.local_endpoint(), framing, "question", 10s) == "reply to question");
  server.get();
}
}

TEST_CASE("connect_with_retry by name: an IPv6 literal keeps its brackets in the message" * doctest::timeout(60)) {
  std::stop_source stop;
  stop.request_stop();  // no attempt starts: the message is the one for "nothing tried"
  std::string what;
  try {
    (void)sockpat::connect_with_retry<sockpat::Tcp>("::1", 9, sockpat::Deadline(10s, stop.get_token()));
  } catch (const std::system_error& e) {
    what = e.what();
  }
  CHECK(what.find("[::1]:9") != std::string::npos);
}

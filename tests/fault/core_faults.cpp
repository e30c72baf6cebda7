// Fault tests for the blocking core: what real networks and real processes do to a connection.
#include "sockpat.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <future>
#if !defined(_WIN32)
#include <pthread.h>  // pthread_kill: aim signals at the threads blocked in I/O
#endif
#include <thread>
#include <vector>

#include "support/loopback.hpp"
#include "support/printing.hpp"

using namespace std::chrono_literals;

namespace {

std::vector<std::byte> pattern(std::size_t n) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 7919u) >> 3);
  return v;
}

#if !defined(_WIN32)
std::atomic<long> signals_received{0};
static_assert(std::atomic<long>::is_always_lock_free);  // safe to touch from a handler
extern "C" void count_signal(int) { signals_received.fetch_add(1, std::memory_order_relaxed); }
#endif

}  // namespace

TEST_SUITE("faults" * doctest::timeout(120)) {
// Wine 8 closes a socket with SO_LINGER {on, 0} gracefully (FIN, not RST): skipped there only.
TEST_CASE("a client that resets mid-message gives the reader connection_reset and the bytes before it" *
          doctest::skip(test::running_under_wine())) {
  auto [client, server] = test::connected_pair();
  client.write_all("half a mess", 5s);
  std::string first(11, '\0');
  server.read_exactly(first, 5s);  // the first part has surely arrived before the reset
  client.set_linger(std::chrono::seconds(0));
  client.close();  // SO_LINGER 0: close sends RST
  std::array<std::byte, 64> rest{};
  std::error_code ec;
  const auto n = server.read_exactly(rest, 5s, ec);
  CHECK(n == 0);
  CHECK(ec == std::errc::connection_reset);
  CHECK(first == "half a mess");
}

// Windows has no signals that interrupt a thread's calls (no pthread_kill, no EINTR from Winsock).
#if !defined(_WIN32)
TEST_CASE("a storm of signals during blocking reads and writes loses no byte") {
  struct sigaction sa {};
  struct sigaction old {};
  sa.sa_handler = &count_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: every signal interrupts the system call it lands in
  REQUIRE(::sigaction(SIGUSR1, &sa, &old) == 0);

  auto [client, server] = test::connected_pair();
  client.set_send_buffer_size(16 * 1024);
  server.set_receive_buffer_size(16 * 1024);
  const auto data = pattern(16u << 20);
  std::atomic<bool> done{false};
  std::promise<pthread_t> reader_id;
  auto reader = std::async(std::launch::async, [&, &s = server] {
    reader_id.set_value(::pthread_self());
    std::vector<std::byte> got(data.size());
    s.read_exactly(got, 60s);
    return got;
  });
  const pthread_t reader_thread = reader_id.get_future().get();
  const pthread_t writer_thread = ::pthread_self();
  std::atomic<long> sent_signals{0};
  std::thread storm([&] {
    // Bounded: at most 200,000 signals, and it stops as soon as the transfer is over.
    for (int i = 0; i < 100000 && !done.load(); ++i) {
      ::pthread_kill(reader_thread, SIGUSR1);
      ::pthread_kill(writer_thread, SIGUSR1);
      sent_signals += 2;
      std::this_thread::yield();
    }
  });
  std::error_code ec;
  const auto written = client.write_all(data, 60s, ec);
  REQUIRE(reader.wait_for(60s) == std::future_status::ready);
  const auto got = reader.get();
  done = true;
  storm.join();
  ::sigaction(SIGUSR1, &old, nullptr);
  CHECK_FALSE(ec);
  CHECK(written == data.size());
  CHECK(got == data);
  CHECK(sent_signals.load() > 0);
  CHECK(signals_received.load() > 0);
}
#endif

TEST_CASE("a reader that never reads: write_all with a deadline stops with timed_out, having written a bounded amount") {
  auto [client, server] = test::connected_pair();
  const auto data = pattern(256u << 20);
  try {
    client.write_all(data, 300ms);
    FAIL("write_all should not finish against a peer that never reads");
  } catch (const sockpat::TransferError& e) {
    CHECK(e.code() == std::errc::timed_out);
    CHECK(e.bytes_transferred() > 0);
    CHECK(e.bytes_transferred() < data.size());
  }
}

TEST_CASE("writing to a closed peer never raises SIGPIPE, with SIGPIPE at its default action") {
#if defined(SIGPIPE)  // Windows has no SIGPIPE: the test then checks the error alone
  const auto old = std::signal(SIGPIPE, SIG_DFL);
#endif
  for (int round = 0; round < 20; ++round) {
    auto [client, server] = test::connected_pair();
    server.close();
    std::error_code ec;
    for (int i = 0; i < 200 && !ec; ++i) client.write_some("data after close", 5s, ec);
    CHECK(ec);
  }
#if defined(SIGPIPE)
  std::signal(SIGPIPE, old);
#endif
}

TEST_CASE("10,000 connect/close cycles leave the descriptor count unchanged") {
  auto listener = test::loopback_listener();
  const auto local = listener.local_endpoint();
  const int before = test::open_descriptors();
  for (int i = 0; i < 10000; ++i) {
    auto c = sockpat::TcpConnection::connect(local, 5s);
    auto s = listener.accept(5s);
    if (i % 2 == 0) c.set_linger(std::chrono::seconds(0));  // half of them end with a reset
  }
  CHECK(test::open_descriptors() == before);
}
}

#include "sockpat/connection.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <future>
#include <numeric>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#if !defined(_WIN32)
#include <sys/resource.h>  // setrlimit
#include <fcntl.h>         // fcntl: kernel waits make the descriptor blocking
#include <sys/wait.h>      // waitpid
#include <unistd.h>        // fork, _exit, alarm
#endif

#include "sockpat/listener.hpp"
#include "support/loopback.hpp"
#include "support/resolvers.hpp"  // silent_listener

using namespace std::chrono_literals;

TEST_SUITE("connection" * doctest::timeout(60)) {
// Windows has neither fork nor a descriptor limit to lower (docs/platforms.md). First in the file:
// fork() must find no other thread (ThreadSanitizer refuses threads in a child forked from a
// multi-threaded process), and a connect by name below leaves resolver helpers alive for 5 s.
#if !defined(_WIN32)
TEST_CASE("a stop still ends a wait when the process has no descriptor left for the wake-up") {
  // In a child process: lower the limit to the descriptors open now, so the waiting thread
  // cannot open its wake-up descriptor; the stop must still end the read, by polling.
  auto ab = test::local_pair();
  auto& b = ab.second;
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::alarm(30);
    const rlim_t limit = static_cast<rlim_t>(test::open_descriptors());
    const ::rlimit rl{limit, limit};
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) ::_exit(10);
    // The limit caps descriptor numbers, not their count: fill any holes below it.
    for (int i = 0; i < 100000 && ::dup(0) >= 0; ++i) {
    }
    if (::dup(0) >= 0) ::_exit(14);  // there must be no descriptor to spare
    int status = 11;
    try {
      std::stop_source cancel;
      b.set_stop_token(cancel.get_token());
      std::promise<void> started;
      auto reader = std::async(std::launch::async, [&] {
        std::array<char, 8> buf{};
        std::error_code ec;
        started.set_value();
        (void)b.read_some(buf, 20s, ec);
        return ec;
      });
      started.get_future().wait();
      // Still waiting (not failed for want of a descriptor), until the stop.
      if (reader.wait_for(100ms) != std::future_status::timeout) ::_exit(15);
      cancel.request_stop();
      if (reader.wait_for(10s) != std::future_status::ready) ::_exit(16);
      status = reader.get() == std::errc::operation_canceled ? 0 : 12;
    } catch (...) {
      status = 13;
    }
    ::_exit(status);
  }
  int status = -1;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
#endif

TEST_CASE("bytes written on one side arrive on the other, both ways") {
  auto [client, server] = test::connected_pair();
  CHECK(client.write_all("Hello, server!", 5s) == 14);
  std::string got(14, '\0');
  CHECK(server.read_exactly(got, 5s) == 14);
  CHECK(got == "Hello, server!");
  server.write_all("Hello, client!", 5s);
  std::array<char, 64> buf{};
  const auto n = client.read_some(buf, 5s);
  CHECK(std::string(buf.data(), n) == "Hello, client!");
}

TEST_CASE("connect to a closed port gives connection_refused, in both forms") {
  sockpat::Endpoint closed;
  {
    auto l = test::loopback_listener();
    closed = l.local_endpoint();
  }
  CHECK_THROWS_WITH_AS((void)sockpat::TcpConnection::connect(closed, 5s),
                       doctest::Contains(("connect " + closed.to_string()).c_str()), std::system_error);
  std::error_code ec;
  auto c = sockpat::TcpConnection::connect(closed, sockpat::ConnectOptions::with_deadline(5s), ec);
  CHECK(ec == std::errc::connection_refused);
  CHECK_FALSE(c.is_open());
}

TEST_CASE("connect's error_code& twins take a Deadline, as the throwing forms do") {
  auto listener = test::loopback_listener();
  std::error_code ec;
  auto by_endpoint = sockpat::TcpConnection::connect(listener.local_endpoint(), 5s, ec);
  CHECK_FALSE(ec);
  CHECK(by_endpoint.is_open());
  auto by_name = sockpat::TcpConnection::connect("127.0.0.1", listener.local_endpoint().port(), 5s, ec);
  CHECK_FALSE(ec);
  CHECK(by_name.is_open());
  (void)sockpat::TcpConnection::connect("", 1, 5s, ec);
  CHECK(ec == std::errc::invalid_argument);
}

TEST_CASE("connect with a timeout to a listener whose backlog is full returns timed_out within the bound") {
  sockpat::ListenOptions o;
  o.backlog = 0;
  auto listener = sockpat::TcpListener::bind({"127.0.0.1", 0}, o);
  const auto target = listener.local_endpoint();
  // Fill the accept queue: connect without accepting until a connect no longer completes.
  std::vector<sockpat::TcpConnection> fillers;
  std::error_code ec;
  for (int i = 0; i < 64 && !ec; ++i) {
    auto c = sockpat::TcpConnection::connect(target, sockpat::ConnectOptions::with_deadline(200ms), ec);
    if (!ec) fillers.push_back(std::move(c));
  }
  REQUIRE(ec == std::errc::timed_out);
  const auto start = std::chrono::steady_clock::now();
  // The message says what timed out, where, and after how long.
  CHECK_THROWS_WITH_AS((void)sockpat::TcpConnection::connect(target, 300ms),
                       doctest::Contains(("connect " + target.to_string() + " after 300 ms: ").c_str()),
                       std::system_error);
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took >= 300ms);
  CHECK(took < 5s);
}

TEST_CASE("connect by host name tries each resolved address") {
  auto listener = sockpat::TcpListener::bind({"127.0.0.1", 0});
  auto c = sockpat::TcpConnection::connect("localhost", listener.local_endpoint().port(), 5s);
  CHECK(c.remote_endpoint() == listener.local_endpoint());
  // Connecting to a name whose every address refuses names them all.
  sockpat::Endpoint closed;
  {
    auto l = test::loopback_listener();
    closed = l.local_endpoint();
  }
  CHECK_THROWS_WITH_AS((void)sockpat::TcpConnection::connect("localhost", closed.port(), 5s),
                       doctest::Contains(("127.0.0.1:" + std::to_string(closed.port())).c_str()), std::system_error);
}

TEST_CASE("a refused connect by name says so once, and an IPv6 literal keeps its brackets") {
  // Each host is numeric, so one address is tried: its error is the message's own.
  for (const char* host : {"127.0.0.1", "::1"}) {
    sockpat::Endpoint closed;
    {
      auto l = sockpat::TcpListener::bind({host, 0});
      closed = l.local_endpoint();
    }
    std::error_code ec;
    (void)sockpat::TcpConnection::connect(host, closed.port(), 5s, ec);
    REQUIRE(ec == std::errc::connection_refused);
    try {
      (void)sockpat::TcpConnection::connect(host, closed.port(), 5s);
      FAIL("expected connection_refused");
    } catch (const std::system_error& e) {
      CHECK(std::string(e.what()) == "connect " + closed.to_string() + ": " + ec.message());
    }
  }
}

TEST_CASE("ConnectOptions::timeout counts from each connect, so options can be kept and reused") {
  // The first connect waits out its timeout on a listener that never takes it; the same options
  // then give the next connects their whole timeout again (a Deadline made from a duration
  // would have passed).
  auto silent = test::silent_listener();
  auto listener = test::loopback_listener();
  sockpat::ConnectOptions o;
  o.timeout = 200ms;
  const auto start = std::chrono::steady_clock::now();
  // The reason's words are the platform's (MinGW's generic category has no text for timed_out):
  // the operation, the peer and the timeout are ours, the code is checked apart.
  try {
    (void)sockpat::TcpConnection::connect(silent.endpoint(), o);
    FAIL("the connect to a listener that never takes it succeeded");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::timed_out);
    CHECK(std::string(e.what()).rfind("connect " + silent.endpoint().to_string() + " after 200 ms: ", 0) == 0);
  }
  CHECK(std::chrono::steady_clock::now() - start >= 200ms);
  std::error_code ec;
  auto c = sockpat::TcpConnection::connect(listener.local_endpoint(), o, ec);
  CHECK_FALSE(ec);
  auto by_name = sockpat::TcpConnection::connect("127.0.0.1", listener.local_endpoint().port(), o);
  CHECK(by_name.is_open());
  // With a deadline too, the earlier end wins.
  o.timeout = 10s;
  o.deadline = std::chrono::steady_clock::now() + 100ms;
  (void)sockpat::TcpConnection::connect(silent.endpoint(), o, ec);
  CHECK(ec == std::errc::timed_out);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  o.deadline = {};
  o.timeout = 100ms;
  const auto before = std::chrono::steady_clock::now();
  const auto bound = o.bound().time();
  CHECK(bound >= before + 100ms);
  CHECK(bound <= std::chrono::steady_clock::now() + 100ms);
  (void)sockpat::TcpConnection::connect("127.0.0.1", silent.endpoint().port(), o, ec);
  CHECK(ec == std::errc::timed_out);
}

TEST_CASE("connect can bind a local endpoint first, as the seed's peer does") {
  auto listener = test::loopback_listener();
  auto probe = test::loopback_listener();  // reserve a free port to bind from, then release it
  const auto local = probe.local_endpoint();
  probe.close();
  sockpat::ConnectOptions o;
  o.local = local;
  o.deadline = 5s;
  auto c = sockpat::TcpConnection::connect(listener.local_endpoint(), o);
  CHECK(c.local_endpoint() == local);
  auto s = listener.accept(5s);
  CHECK(s.remote_endpoint() == local);
}

TEST_CASE("a read with a timeout returns timed_out and the connection still works") {
  auto [client, server] = test::connected_pair();
  std::array<std::byte, 16> buf{};
  const auto start = std::chrono::steady_clock::now();
  const std::string what = "read from " + client.local_endpoint().to_string() + " after 50 ms: ";
  CHECK_THROWS_WITH_AS((void)server.read_some(buf, 50ms), doctest::Contains(what.c_str()), std::system_error);
  CHECK(std::chrono::steady_clock::now() - start >= 50ms);
  // The connection's own timeout is named the same way, when it is the shorter bound.
  server.set_timeout(30ms);
  CHECK_THROWS_WITH_AS((void)server.read_some(buf), doctest::Contains(" after 30 ms: "), std::system_error);
  CHECK_THROWS_WITH_AS((void)server.read_some(buf, 5s), doctest::Contains(" after 30 ms: "), std::system_error);
  server.set_timeout(std::nullopt);
  std::error_code ec;
  CHECK(server.read_some(buf, 10ms, ec) == 0);
  CHECK(ec == std::errc::timed_out);
  client.write_all("x", 5s);
  CHECK(server.read_some(buf, 5s) == 1);
}

TEST_CASE("a read blocked in another thread is stopped through a stop token") {
  auto [client, server] = test::connected_pair();
  std::stop_source stop;
  auto blocked = std::async(std::launch::async, [&, &s = server] {
    std::array<std::byte, 16> buf{};
    std::error_code ec;
    (void)s.read_some(buf, sockpat::Deadline(stop.get_token()), ec);
    return ec;
  });
  CHECK(blocked.wait_for(50ms) == std::future_status::timeout);
  stop.request_stop();
  REQUIRE(blocked.wait_for(10s) == std::future_status::ready);
  CHECK(blocked.get() == std::errc::operation_canceled);
  // A stop does not hurt the connection: bytes still flow.
  client.write_all("still here", 5s);
  std::string got(10, '\0');
  server.read_exactly(got, 5s);
  CHECK(got == "still here");
}

TEST_CASE("write_all of 64 MiB to a slow reader arrives whole and in order") {
  auto [client, server] = test::connected_pair();
  constexpr std::size_t size = 64u << 20;
  std::vector<std::byte> data(size);
  for (std::size_t i = 0; i < size; ++i) data[i] = static_cast<std::byte>((i * 2654435761u) >> 24);
  // The reader takes small bites, so the writer meets a full socket buffer many times over.
  auto reader = std::async(std::launch::async, [&, &s = server] {
    std::vector<std::byte> got;
    got.reserve(size);
    std::array<std::byte, 1500> buf{};
    while (got.size() < size) {
      const auto n = s.read_some(buf, 60s);
      if (n == 0) break;
      got.insert(got.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
    }
    return got;
  });
  CHECK(client.write_all(data, 60s) == size);
  REQUIRE(reader.wait_for(90s) == std::future_status::ready);
  const auto got = reader.get();
  REQUIRE(got.size() == size);
  CHECK(std::equal(got.begin(), got.end(), data.begin()));
}

TEST_CASE("writing to a peer that has closed raises an error and does not kill the process") {
#if defined(SIGPIPE)
  // The default action of SIGPIPE kills; sockpat must never raise it. (Windows has no SIGPIPE.)
  const auto old = std::signal(SIGPIPE, SIG_DFL);
#endif
  auto [client, server] = test::connected_pair();
  server.close();
  std::vector<std::byte> chunk(64 * 1024);
  std::error_code ec;
  for (int i = 0; i < 1000 && !ec; ++i) client.write_all(chunk, 5s, ec);
  CHECK(ec);
  CHECK((ec == std::errc::broken_pipe || ec == std::errc::connection_reset));
  CHECK_THROWS_AS(client.write_all(chunk, 5s), sockpat::TransferError);
#if defined(SIGPIPE)
  std::signal(SIGPIPE, old);
#endif
}

TEST_CASE("read_exactly that meets end of stream reports it with the bytes that arrived") {
  auto [client, server] = test::connected_pair();
  client.write_all("abc", 5s);
  client.shutdown(sockpat::Shutdown::send);
  std::string buf(10, '\0');
  try {
    server.read_exactly(buf, 5s);
    FAIL("read_exactly should have thrown");
  } catch (const sockpat::TransferError& e) {
    CHECK(e.code() == sockpat::errc::end_of_stream);
    CHECK(e.bytes_transferred() == 3);
    CHECK(buf.substr(0, 3) == "abc");
  }
  std::error_code ec;
  std::array<std::byte, 4> more{};
  CHECK(server.read_exactly(more, 5s, ec) == 0);
  CHECK(ec == sockpat::errc::end_of_stream);
}

TEST_CASE("read_some returns 0 at end of stream, and a half-closed peer can still read the answer") {
  auto [client, server] = test::connected_pair();
  client.write_all("question", 5s);
  client.shutdown(sockpat::Shutdown::send);
  std::string q(8, '\0');
  server.read_exactly(q, 5s);
  std::array<std::byte, 8> buf{};
  CHECK(server.read_some(buf, 5s) == 0);
  server.write_all("answer", 5s);
  server.close();
  std::string a(6, '\0');
  client.read_exactly(a, 5s);
  CHECK(a == "answer");
}

TEST_CASE("socket options set on a connection read back") {
  auto [client, server] = test::connected_pair();
  client.set_no_delay(true);
  CHECK(client.no_delay());
  client.set_keep_alive(true);
  CHECK(client.keep_alive());
  client.set_send_buffer_size(64 * 1024);
  CHECK(client.send_buffer_size() >= 64 * 1024);
  client.set_linger(std::chrono::seconds(0));
  client.set_linger(std::nullopt);
}

#if defined(_WIN32)
TEST_CASE("a Unix socket pair is refused clearly on Windows, which has no socketpair") {
  CHECK_THROWS_WITH_AS((void)sockpat::UnixConnection::pair(), doctest::Contains("socketpair"), std::system_error);
}
#else
TEST_CASE("a Unix socket pair carries bytes both ways") {
  auto [a, b] = sockpat::UnixConnection::pair();
  a.write_all("ping", 5s);
  std::string got(4, '\0');
  b.read_exactly(got, 5s);
  CHECK(got == "ping");
  b.write_all("pong", 5s);
  a.read_exactly(got, 5s);
  CHECK(got == "pong");
}

TEST_CASE("a socket pair end has no name: its messages say unix:(unnamed)") {
  auto [a, b] = sockpat::UnixConnection::pair();
  CHECK(a.local_endpoint().to_string() == "unix:(unnamed)");
  std::array<char, 4> buf{};
  CHECK_THROWS_WITH_AS((void)a.read_some(buf, 10ms), doctest::Contains("read from unix:(unnamed) after 10 ms: "),
                       std::system_error);
}
#endif

#if !defined(_WIN32)  // Wine closes a socket that lingers 0 s with a FIN (docs/platforms.md)
TEST_CASE("a read on a connection its peer reset names the peer, as a timeout does") {
  auto [client, server] = test::connected_pair();
  const auto peer = client.remote_endpoint();
  std::array<char, 4> buf{};
  CHECK_THROWS_WITH_AS((void)client.read_some(buf, 10ms),
                       doctest::Contains(("read from " + peer.to_string() + " after 10 ms: ").c_str()),
                       std::system_error);
  server.set_linger(std::chrono::seconds(0));
  server.close();  // a reset
  try {
    (void)client.read_some(buf, 5s);
    FAIL("expected connection_reset");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::connection_reset);
#if defined(__linux__)  // elsewhere the OS may forget the peer's address: "read on LOCAL"
    CHECK(std::string(e.what()) == "read from " + peer.to_string() + ": " + e.code().message());
#endif
  }
}
#endif

TEST_CASE("operations on a closed or moved-from connection report not_connected") {
  auto [client, server] = test::connected_pair();
  auto moved = std::move(client);
  CHECK(moved.is_open());
  CHECK_FALSE(client.is_open());  // NOLINT: testing the moved-from state on purpose
  std::error_code ec;
  std::array<std::byte, 1> buf{};
  (void)client.read_some(buf, 10ms, ec);  // NOLINT
  CHECK(ec == sockpat::errc::not_connected);
  CHECK_THROWS_AS((void)client.write_some("x"), std::system_error);  // NOLINT
}

TEST_CASE("close reports success once and the destructor of a closed connection is quiet") {
  auto [client, server] = test::connected_pair();
  std::error_code ec;
  client.close(ec);
  CHECK_FALSE(ec);
  CHECK_FALSE(client.is_open());
  client.close(ec);  // closing twice is not an error
  CHECK_FALSE(ec);
}

TEST_CASE("release hands the descriptor over, and nothing closes it behind the caller's back") {
  auto [client, server] = test::connected_pair();
  const auto h = client.release();
  CHECK_FALSE(client.is_open());
  sockpat::TcpConnection adopted(sockpat::TcpSocket(sockpat::detail::UniqueHandle(h), sockpat::Family::ipv4));
  adopted.write_all("ok", 5s);
  std::string got(2, '\0');
  server.read_exactly(got, 5s);
  CHECK(got == "ok");
}

TEST_CASE("the connection's own timeout bounds every call, and the earlier bound wins") {
  auto ab = test::local_pair();  // clang 14 cannot capture structured bindings
  auto& a = ab.first;
  auto& b = ab.second;
  CHECK_FALSE(b.timeout().has_value());
  b.set_timeout(30ms);
  CHECK(b.timeout() == std::chrono::steady_clock::duration(30ms));
  std::array<char, 8> buf{};
  std::error_code ec;
  const auto start = std::chrono::steady_clock::now();
  (void)b.read_some(buf, sockpat::Deadline{}, ec);
  CHECK(ec == std::errc::timed_out);
  (void)b.read_some(buf, 10s, ec);  // a longer deadline does not lift the connection's timeout
  CHECK(ec == std::errc::timed_out);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  b.set_timeout(std::nullopt);
  a.write_all("x", 5s);
  CHECK(b.read_some(buf, 5s) == 1);
}

TEST_CASE("the connection's stop token cancels a read blocked in another thread") {
  auto ab = test::local_pair();  // clang 14 cannot capture structured bindings
  auto& b = ab.second;
  std::stop_source cancel;
  b.set_stop_token(cancel.get_token());
  std::promise<void> started;
  auto blocked = std::async(std::launch::async, [&] {
    std::array<char, 8> buf{};
    std::error_code ec;
    started.set_value();
    // Its own deadline carries another stop token: both are watched.
    std::stop_source own;
    (void)b.read_some(buf, sockpat::Deadline(30s, own.get_token()), ec);
    return ec;
  });
  started.get_future().wait();
  CHECK(blocked.wait_for(50ms) == std::future_status::timeout);
  cancel.request_stop();
  REQUIRE(blocked.wait_for(10s) == std::future_status::ready);
  CHECK(blocked.get() == std::errc::operation_canceled);
  std::error_code ec;
  b.write_all("late", 1s, ec);  // later calls are canceled at once
  CHECK(ec == std::errc::operation_canceled);
}

// Kernel waits: reads sleep in recv itself (Server's clients). Windows keeps poll(): nothing to test there.
#if !defined(_WIN32)
TEST_CASE("with kernel waits a read gets the bytes, the timeout ends a silent read, and a deadline still applies") {
  auto ab = test::local_pair();  // clang 14 cannot capture structured bindings
  auto& a = ab.first;
  auto& b = ab.second;
  b.set_timeout(100ms);
  b.set_kernel_wait(true);
  CHECK(b.kernel_wait());
  a.write_all("ping", 5s);
  std::array<char, 8> buf{};
  CHECK(b.read_some(buf) == 4);
  CHECK(std::string(buf.data(), 4) == "ping");

  auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS((void)b.read_some(buf), doctest::Contains("timed out"), std::system_error);
  auto waited = std::chrono::steady_clock::now() - start;
  CHECK(waited >= 90ms);  // SO_RCVTIMEO, not an early return
  CHECK(waited < 5s);
  std::error_code ec;
  start = std::chrono::steady_clock::now();
  (void)b.read_some(buf, 20ms, ec);  // a call's own deadline waits in poll(), on a blocking socket
  CHECK(ec == std::errc::timed_out);
  CHECK(std::chrono::steady_clock::now() - start < 90ms + 5s);

  b.set_timeout(std::nullopt);  // SO_RCVTIMEO follows the connection's timeout
  a.write_all("x", 5s);
  CHECK(b.read_some(buf) == 1);
}

TEST_CASE("with kernel waits the stop token ends a read sleeping in the kernel, in both forms") {
  for (const bool throwing : {false, true}) {
    CAPTURE(throwing);
    auto ab = test::local_pair();
    auto& b = ab.second;
    std::stop_source cancel;
    b.set_kernel_wait(true);  // before the token: set_stop_token arms the shutdown too
    b.set_stop_token(cancel.get_token());
    std::promise<void> started;
    auto blocked = std::async(std::launch::async, [&]() -> std::error_code {
      std::array<char, 8> buf{};
      started.set_value();
      if (!throwing) {
        std::error_code ec;
        (void)b.read_some(buf, sockpat::Deadline{}, ec);
        return ec;
      }
      try {
        (void)b.read_some(buf);
      } catch (const std::system_error& e) {
        return e.code();
      }
      return {};
    });
    started.get_future().wait();
    CHECK(blocked.wait_for(50ms) == std::future_status::timeout);
    cancel.request_stop();
    REQUIRE(blocked.wait_for(10s) == std::future_status::ready);
    CHECK(blocked.get() == std::errc::operation_canceled);
    std::error_code ec;
    b.write_all("late", 1s, ec);
    CHECK(ec == std::errc::operation_canceled);
  }
}

TEST_CASE("with kernel waits read_exactly is bounded as a whole and writes never block past their bound") {
  auto ab = test::local_pair();
  auto& a = ab.first;
  auto& b = ab.second;
  b.set_timeout(100ms);
  b.set_kernel_wait(true);
  a.write_all("h", 5s);  // one byte of two, then silence: the rest waits within the timeout
  std::array<char, 2> two{};
  const auto start = std::chrono::steady_clock::now();
  try {
    (void)b.read_exactly(two);
    FAIL("read_exactly returned");
  } catch (const sockpat::TransferError& e) {
    CHECK(e.code() == std::errc::timed_out);
    CHECK(e.bytes_transferred() == 1);
  }
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  // The peer reads nothing: a write that cannot finish fails at the timeout, not in send().
  const std::vector<char> big(std::size_t{64} << 20, 'x');
  std::error_code ec;
  const auto n = b.write_all(std::string_view(big.data(), big.size()), sockpat::Deadline{}, ec);
  CHECK(ec == std::errc::timed_out);
  CHECK(n < big.size());
}

TEST_CASE("kernel waits end when turned off or the descriptor is released: it is non-blocking again") {
  auto ab = test::local_pair();
  auto& b = ab.second;
  b.set_kernel_wait(true);
  CHECK((::fcntl(b.native_handle(), F_GETFL) & O_NONBLOCK) == 0);
  b.set_kernel_wait(false);
  CHECK_FALSE(b.kernel_wait());
  CHECK((::fcntl(b.native_handle(), F_GETFL) & O_NONBLOCK) != 0);
  b.set_kernel_wait(true);
  const int fd = b.release();
  CHECK((::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
  ::close(fd);
  std::error_code ec;
  b.set_kernel_wait(true, ec);  // nothing left to change
  CHECK(ec == sockpat::errc::not_connected);
}
#endif
}

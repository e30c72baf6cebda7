#include "sockpat/server.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <algorithm>  // std::max
#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <memory>  // std::unique_ptr: a move-only handler
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#if !defined(_WIN32)
#include <sys/resource.h>  // setrlimit: the descriptor-flood test's child
#include <sys/wait.h>      // waitpid
#include <unistd.h>        // fork, pipe, _exit
#endif

#include "sockpat/client.hpp"
#include "sockpat/framing.hpp"
#include "support/loopback.hpp"
#if defined(_WIN32)
#include <tlhelp32.h>  // CreateToolhelp32Snapshot: the threads of this process (after <windows.h>)
#endif

using namespace std::chrono_literals;
using sockpat::ServerOptions;
using sockpat::Strategy;

namespace {

/// Echoes every byte until the client closes.
void echo(sockpat::TcpConnection& c) {
  std::array<char, 4096> buf{};
  while (const auto n = c.read_some(buf)) c.write_all(std::string_view(buf.data(), n));
}

/// Sends `message`, half-closes, and returns everything the server sends back until it closes.
std::string echo_exchange(const sockpat::Endpoint& server, const std::string& message) {
  auto c = sockpat::TcpConnection::connect(server, 30s);
  const sockpat::Deadline d = 30s;
  c.write_all(message, d);
  c.shutdown(sockpat::Shutdown::send);
  std::string got;
  std::array<char, 4096> buf{};
  while (const auto n = c.read_some(buf, d)) got.append(buf.data(), n);
  return got;
}

/// Waits (bounded) until `ready` holds, checking without sleeping.
template <class F>
bool eventually(F ready, std::chrono::seconds limit = 10s) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!ready()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::yield();
  }
  return true;
}

#if defined(_WIN32)
int thread_count() {
  const DWORD pid = ::GetCurrentProcessId();
  const HANDLE snap = ::CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
  if (snap == INVALID_HANDLE_VALUE) throw std::runtime_error("CreateToolhelp32Snapshot failed");
  THREADENTRY32 entry{};
  entry.dwSize = sizeof entry;
  int n = 0;
  for (BOOL ok = ::Thread32First(snap, &entry); ok; ok = ::Thread32Next(snap, &entry)) {
    if (entry.th32OwnerProcessID == pid) ++n;
  }
  ::CloseHandle(snap);
  return n;
}
#else
int thread_count() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}
#endif

/// A client that reads one line back: end of stream (or a reset) gives std::nullopt.
std::optional<std::string> read_reply(sockpat::FramedConnection<sockpat::Tcp>& f, sockpat::Deadline d) {
  std::error_code ec;
  auto line = f.read_frame(sockpat::DelimiterFraming::lines(), std::move(d), ec);
  if (ec || !line) return std::nullopt;
  return std::string(*line);
}

/// Lines in, "echo: " + line out; "throw" throws.
void line_echo(sockpat::TcpConnection& c) {
  sockpat::FramedConnection f(c);
  while (auto line = f.read_frame(sockpat::DelimiterFraming::lines())) {
    if (*line == "throw") throw std::runtime_error("boom from the handler");
    f.write_line("echo: " + *line);
  }
}

}  // namespace

TEST_SUITE("server") {
TEST_CASE("200 concurrent clients against a 4-thread pool each get their own bytes back" * doctest::timeout(60)) {
  ServerOptions o;
  o.strategy = Strategy::thread_pool;
  o.threads = 4;
  sockpat::TcpServer server(test::loopback_listener(), echo, o);
  CHECK(server.threads() == 4);
  CHECK(server.max_connections() == 8);
  server.start();
  std::vector<std::future<bool>> clients;
  for (int i = 0; i < 200; ++i) {
    clients.push_back(std::async(std::launch::async, [&, i] {
      std::string mine;
      while (mine.size() < 3000) mine += "client " + std::to_string(i) + ';';
      return echo_exchange(server.local_endpoint(), mine) == mine;
    }));
  }
  int right = 0;
  for (auto& c : clients) {
    REQUIRE(c.wait_for(60s) == std::future_status::ready);
    right += c.get() ? 1 : 0;
  }
  CHECK(right == 200);
  server.stop();
  CHECK(server.stats().accepted == 200);
  CHECK(server.stats().handler_errors == 0);
}

TEST_CASE("a handler that throws is reported, its client is closed, and the server goes on" * doctest::timeout(60)) {
  for (const auto strategy : {Strategy::sequential, Strategy::thread_per_connection, Strategy::thread_pool}) {
    CAPTURE(static_cast<int>(strategy));
    std::mutex m;
    std::vector<std::string> reports;
    std::vector<sockpat::Endpoint> peers;
    ServerOptions o;
    o.strategy = strategy;
    o.threads = 2;
    o.on_error = [&](std::exception_ptr e, const sockpat::Endpoint& peer) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        std::lock_guard lock(m);
        reports.emplace_back(x.what());
        peers.push_back(peer);
      }
    };
    sockpat::TcpServer server(test::loopback_listener(), line_echo, o);
    server.start();
    for (int round = 0; round < 3; ++round) {
      auto bad = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
      sockpat::FramedConnection fb(bad);
      fb.write_line("throw", 10s);
      CHECK(read_reply(fb, 10s) == std::nullopt);  // closed by the server
      auto good = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
      sockpat::FramedConnection fg(good);
      CHECK(fg.request(sockpat::DelimiterFraming::lines(), "still there?", 10s) == "echo: still there?");
    }
    server.stop();
    CHECK(server.stats().handler_errors == 3);
    std::lock_guard lock(m);
    REQUIRE(reports.size() == 3);
    CHECK(reports[0] == "boom from the handler");
    CHECK(peers[0].port() != 0);
  }
}

TEST_CASE("an idle client is dropped after the idle timeout while others keep working" * doctest::timeout(60)) {
  ServerOptions o;
  o.threads = 4;
  o.idle_timeout = 200ms;
  std::atomic<int> timeouts{0};
  o.on_error = [&](std::exception_ptr e, const sockpat::Endpoint&) {
    try {
      std::rethrow_exception(e);
    } catch (const std::system_error& x) {
      if (x.code() == std::errc::timed_out) ++timeouts;
    } catch (...) {
    }
  };
  sockpat::TcpServer server(test::loopback_listener(), line_echo, o);
  server.start();

  auto idle = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
  const auto start = std::chrono::steady_clock::now();
  auto dropped = std::async(std::launch::async, [&] {
    std::array<char, 16> buf{};
    std::error_code ec;
    const auto n = idle.read_some(buf, 10s, ec);  // the server's close: 0, or a reset
    return std::pair(n == 0 && (!ec || ec == std::errc::connection_reset), std::chrono::steady_clock::now() - start);
  });

  auto busy = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
  sockpat::FramedConnection fb(busy);
  int exchanges = 0;
  // Talk without pause until the idle client is gone (bounded in count and time).
  while (dropped.wait_for(0s) != std::future_status::ready && exchanges < 1000000) {
    REQUIRE(fb.request(sockpat::DelimiterFraming::lines(), "tick", 10s) == "echo: tick");
    ++exchanges;
  }
  REQUIRE(dropped.wait_for(10s) == std::future_status::ready);
  const auto [closed, after] = dropped.get();
  CHECK(closed);
  CHECK(after >= 200ms);
  CHECK(after < 5s);
  CHECK(exchanges > 0);
  CHECK(fb.request(sockpat::DelimiterFraming::lines(), "after", 10s) == "echo: after");
  server.stop();
  CHECK(server.stats().timed_out >= 1);  // counted as a normal ending,
  CHECK(timeouts == 0);                  // not reported as a failure
  CHECK(server.stats().handler_errors == 0);
}

TEST_CASE("a client dribbling a line one byte at a time is dropped at the idle timeout" * doctest::timeout(60)) {
  ServerOptions o;
  o.threads = 2;
  o.idle_timeout = 300ms;
  o.on_error = [](std::exception_ptr, const sockpat::Endpoint&) {};
  sockpat::TcpServer server(test::loopback_listener(), line_echo, o);
  server.start();
  auto slow = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
  const auto start = std::chrono::steady_clock::now();
  std::error_code ec;
  int sent = 0;
  // One byte each 20 ms, never a newline: every single read is quick, the line never ends.
  for (; sent < 500 && !ec; ++sent) {
    slow.write_all("x", 1s, ec);
    std::array<char, 8> buf{};
    const auto n = slow.read_some(buf, 20ms, ec);
    if (ec == std::errc::timed_out) {
      ec.clear();
      continue;
    }
    if (n == 0 && !ec) break;  // closed by the server
  }
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took >= 300ms);
  CHECK(took < 5s);
  CHECK(sent < 500);
  server.stop();
}

TEST_CASE("stop() with 50 clients connected returns within the grace period and leaves nothing behind" * doctest::timeout(60)) {
  for (const auto strategy : {Strategy::elastic, Strategy::thread_per_connection, Strategy::thread_pool}) {
    CAPTURE(static_cast<int>(strategy));
    const int fds_before = test::open_descriptors();
    const int threads_before = thread_count();
    {
      ServerOptions o;
      o.strategy = strategy;
      o.threads = 4;
      o.max_connections = 64;
      o.grace = 10s;  // not waited for: line_echo does not take the stop token
      o.on_error = [](std::exception_ptr, const sockpat::Endpoint&) {};
      sockpat::TcpServer server(test::loopback_listener(), line_echo, o);
      server.start();
      std::vector<sockpat::TcpConnection> clients;
      for (int i = 0; i < 50; ++i) clients.push_back(sockpat::TcpConnection::connect(server.local_endpoint(), 10s));
      // Each of the first four is being handled (it answers); the rest are held by the server.
      for (int i = 0; i < 4; ++i) {
        sockpat::FramedConnection f(clients[i]);
        CHECK(f.request(sockpat::DelimiterFraming::lines(), "hi", 10s) == "echo: hi");
      }
      REQUIRE(eventually([&] { return server.stats().active == 50; }));
      CHECK(thread_count() > threads_before);

      const auto start = std::chrono::steady_clock::now();
      server.stop();
      const auto took = std::chrono::steady_clock::now() - start;
      // Every handler still reading is canceled at once (none takes the stop token): stop()
      // does not wait out the 10 s grace.
      CHECK(took < 5s);
      if (strategy != Strategy::thread_pool) CHECK(server.stats().canceled == 50);
      CHECK(server.stats().handler_errors == 0);  // a cancel at stop is not a failure
      CHECK(server.stats().active == 0);
      // Every client sees its connection end.
      for (auto& c : clients) {
        std::array<char, 8> buf{};
        std::error_code ec;
        CHECK(c.read_some(buf, 5s, ec) == 0);
        CHECK((!ec || ec == std::errc::connection_reset));
      }
      // A joined thread may linger in /proc for a moment after join() returns.
      CHECK(eventually([&] { return thread_count() == threads_before; }));
    }
    CHECK(test::open_descriptors() == fds_before);
  }
}

TEST_CASE("with 300 silent clients connected, a new client of a default server gets its echo at once" *
          doctest::timeout(60)) {
  ServerOptions defaults;
  CHECK(defaults.strategy == Strategy::elastic);
  sockpat::TcpServer server(test::loopback_listener(), echo);
  CHECK(server.max_connections() >= 301);  // from the descriptor limit, not the core count
  server.start();
  std::vector<sockpat::TcpConnection> silent;
  for (int i = 0; i < 300; ++i) silent.push_back(sockpat::TcpConnection::connect(server.local_endpoint(), 10s));
  REQUIRE(eventually([&] { return server.stats().active == 300; }));

  const auto start = std::chrono::steady_clock::now();
  auto c = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
  c.write_all("hello", 10s);
  std::array<char, 5> reply{};
  c.read_exactly(reply, 10s);
  const auto took = std::chrono::steady_clock::now() - start;
  MESSAGE("the echo came back after " << std::chrono::duration_cast<std::chrono::microseconds>(took).count()
                                      << " us, with 300 silent clients connected");
  CHECK(std::string_view(reply.data(), reply.size()) == "hello");
  CHECK(took < 5s);  // the issue asks for 1 s; a loaded test machine gets room

  const int threads_serving = thread_count();
  const auto stop_start = std::chrono::steady_clock::now();
  server.stop();
  const auto stop_took = std::chrono::steady_clock::now() - stop_start;
  MESSAGE("stop() with 301 clients took " << std::chrono::duration_cast<std::chrono::microseconds>(stop_took).count()
                                          << " us");
  CHECK(stop_took < 5s);  // every handler was reading: canceled at once, not after the grace
  CHECK(server.stats().canceled == 301);
  CHECK(server.stats().handler_errors == 0);
  CHECK(threads_serving > 300);
  // Every thread was joined: none is left (a joined thread may linger in /proc for a moment).
  CHECK(eventually([&] { return thread_count() <= threads_serving - 301; }));
}

TEST_CASE("elastic threads are reused by later clients and end after thread_idle" * doctest::timeout(60)) {
  const int threads_before = thread_count();
  {
    // Reuse: a long thread_idle, so that only reuse, not retirement, keeps the count down.
    ServerOptions o;
    o.strategy = Strategy::elastic;
    o.thread_idle = 30s;
    sockpat::TcpServer server(test::loopback_listener(), echo, o);
    CHECK(server.threads() == 0);
    server.start();  // the accept loop's thread
    REQUIRE(eventually([&] { return thread_count() == threads_before + 1; }));
    // Sequential clients, each gone before the next: one thread serves them all.
    int most = 0;
    for (int i = 0; i < 20; ++i) {
      CHECK(echo_exchange(server.local_endpoint(), "client " + std::to_string(i)) == "client " + std::to_string(i));
      most = std::max(most, thread_count() - threads_before);
    }
    MESSAGE("threads for 20 sequential clients, the accept loop's included: " << most);
    CHECK(most == 2);  // the accept loop and one handler thread
    server.stop();
    CHECK(server.stats().accepted == 20);
  }
  CHECK(eventually([&] { return thread_count() == threads_before; }));
  {
    // Retirement: three clients at once hold three threads; idle for thread_idle, they end.
    ServerOptions o;
    o.strategy = Strategy::elastic;
    o.thread_idle = 200ms;
    sockpat::TcpServer server(test::loopback_listener(), echo, o);
    server.start();
    std::vector<sockpat::TcpConnection> three;
    for (int i = 0; i < 3; ++i) {
      three.push_back(sockpat::TcpConnection::connect(server.local_endpoint(), 10s));
      three.back().write_all("x", 10s);
      std::array<char, 1> b{};
      three.back().read_exactly(b, 10s);
    }
    CHECK(thread_count() == threads_before + 4);
    three.clear();
    REQUIRE(eventually([&] { return server.stats().active == 0; }));
    CHECK(eventually([&] { return thread_count() == threads_before + 1; }, 20s));  // only the accept loop
    // A client after that starts a thread again.
    CHECK(echo_exchange(server.local_endpoint(), "again") == "again");
    server.stop();
    CHECK(server.stats().accepted == 4);
    CHECK(server.stats().handler_errors == 0);
  }
  CHECK(eventually([&] { return thread_count() == threads_before; }));
}

TEST_CASE("handlers finish their work within the grace period, and may watch the stop token" * doctest::timeout(60)) {
  std::promise<void> waiting;
  auto handler = [&](sockpat::TcpConnection& c, std::stop_token stop) {
    sockpat::FramedConnection f(c);
    if (f.read_line(10s) != "work\n") return;
    waiting.set_value();
    // Finish the job only once the server is stopping: the grace period lets it complete.
    std::error_code ec;
    (void)f.read_line(stop, ec);
    f.write_line("finished", 5s);
  };
  ServerOptions o;
  o.threads = 1;
  o.grace = 10s;
  sockpat::TcpServer server(test::loopback_listener(), handler, o);
  server.start();
  auto c = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
  sockpat::FramedConnection f(c);
  f.write_line("work", 10s);
  REQUIRE(waiting.get_future().wait_for(10s) == std::future_status::ready);
  const auto start = std::chrono::steady_clock::now();
  server.stop();
  CHECK(std::chrono::steady_clock::now() - start < 5s);  // the handler returned well before the grace ran out
  CHECK(f.read_line(5s) == "finished\n");
  CHECK(server.stats().canceled == 0);
  // New clients are refused at once.
  std::error_code ec;
  (void)sockpat::TcpConnection::connect(server.local_endpoint(), sockpat::ConnectOptions::with_deadline(5s), ec);
  CHECK(ec == std::errc::connection_refused);
}

TEST_CASE("1000 connect/close cycles leave the descriptor count where it was" * doctest::timeout(60)) {
  for (const auto strategy : {Strategy::thread_pool, Strategy::elastic}) {
    CAPTURE(static_cast<int>(strategy));
    const int fds_before = test::open_descriptors();
    {
      ServerOptions o;
      o.strategy = strategy;
      o.threads = 1;
      sockpat::TcpServer server(test::loopback_listener(), echo, o);
      server.start();
      const auto cycle = [&] {
        auto c = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
        c.write_all("x", 10s);
        std::array<char, 1> b{};
        c.read_exactly(b, 10s);
      };
      for (int i = 0; i < 20; ++i) cycle();  // the threads' stop wake-ups are opened once, here
      REQUIRE(eventually([&] { return server.stats().active == 0; }));
      const int fds_serving = test::open_descriptors();
      for (int i = 0; i < 1000; ++i) cycle();
      REQUIRE(eventually([&] { return server.stats().active == 0; }));
      // Elastic threads come and go with the clients, each with its wake-up descriptor: only the
      // count after the stop says whether anything leaked.
      if (strategy == Strategy::thread_pool) CHECK(test::open_descriptors() == fds_serving);
      CHECK(server.stats().accepted == 1020);
    }
    CHECK(test::open_descriptors() == fds_before);
  }
}

TEST_CASE("sequential serves one client at a time, in order" * doctest::timeout(60)) {
  ServerOptions o;
  o.strategy = Strategy::sequential;
  sockpat::TcpServer server(test::loopback_listener(), line_echo, o);
  server.start();
  auto first = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
  sockpat::FramedConnection f1(first);
  CHECK(f1.request(sockpat::DelimiterFraming::lines(), "one", 10s) == "echo: one");
  auto second = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
  sockpat::FramedConnection f2(second);
  f2.write_line("two", 10s);
  std::error_code ec;
  CHECK_FALSE(f2.read_line(100ms, ec));  // waits while the first client is served
  CHECK(ec == std::errc::timed_out);
  first.close();
  CHECK(f2.read_line(10s) == "echo: two\n");
}

TEST_CASE("past max_connections, Overload::refuse closes new clients at once" * doctest::timeout(60)) {
  ServerOptions o;
  o.strategy = Strategy::thread_per_connection;
  o.max_connections = 1;
  o.overload = sockpat::Overload::refuse;
  sockpat::TcpServer server(test::loopback_listener(), line_echo, o);
  server.start();
  auto held = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
  sockpat::FramedConnection fh(held);
  CHECK(fh.request(sockpat::DelimiterFraming::lines(), "mine", 10s) == "echo: mine");
  auto extra = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
  std::array<char, 8> buf{};
  std::error_code ec;
  CHECK(extra.read_some(buf, 10s, ec) == 0);
  CHECK((!ec || ec == std::errc::connection_reset));
  CHECK(server.stats().refused == 1);
  CHECK(fh.request(sockpat::DelimiterFraming::lines(), "still mine", 10s) == "echo: still mine");
}

TEST_CASE("serve() runs on the calling thread until its stop token, or a handler, stops it" * doctest::timeout(60)) {
  std::stop_source outside;
  sockpat::TcpServer server(test::loopback_listener(), line_echo);
  auto serving = std::async(std::launch::async, [&] { server.serve(outside.get_token()); });
  CHECK(sockpat::request<sockpat::Tcp>(server.local_endpoint(), sockpat::DelimiterFraming::lines(), "x", 10s) ==
        "echo: x");
  outside.request_stop();
  REQUIRE(serving.wait_for(10s) == std::future_status::ready);
  serving.get();
  CHECK(server.stop_requested());
  server.serve();  // a stopped server returns at once

  sockpat::TcpServer twice(test::loopback_listener(), line_echo);
  twice.start();
  CHECK_THROWS_AS(twice.start(), std::logic_error);
  CHECK_THROWS_AS(twice.serve(), std::logic_error);
  twice.stop();

  sockpat::TcpServer* self = nullptr;
  sockpat::TcpServer quitting(test::loopback_listener(), [&](sockpat::TcpConnection&) { self->stop(); });
  self = &quitting;
  auto serving2 = std::async(std::launch::async, [&] { quitting.serve(); });
  auto c = sockpat::TcpConnection::connect(quitting.local_endpoint(), 10s);
  REQUIRE(serving2.wait_for(10s) == std::future_status::ready);  // stop() from a handler does not deadlock
  serving2.get();
}

TEST_CASE("a TCP server turns Nagle's algorithm off on its clients' connections unless told not to" *
          doctest::timeout(60)) {
  for (const bool no_delay : {true, false}) {
    CAPTURE(no_delay);
    ServerOptions o;
    o.strategy = Strategy::thread_pool;
    o.threads = 1;
    o.no_delay = no_delay;
    std::atomic<int> seen{-1};
    sockpat::TcpServer server(test::loopback_listener(),
                              [&seen](sockpat::TcpConnection& c) {
                                seen = c.no_delay() ? 1 : 0;
                                echo(c);
                              },
                              o);
    server.start();
    CHECK(echo_exchange(server.local_endpoint(), "hello") == "hello");
    server.stop();
    CHECK(seen.load() == (no_delay ? 1 : 0));
  }
}

// Windows: AF_UNIX exists from Windows 10 1803 but not in Wine 8, and there is no fork or
// descriptor limit for the flood test (docs/platforms.md).
#if !defined(_WIN32)
TEST_CASE("a server binds a host and port, as Listener::bind(host, port) does" * doctest::timeout(60)) {
  sockpat::TcpServer server("localhost", 0, echo);
  CHECK(server.local_endpoint().port() != 0);
  server.start();
  CHECK(echo_exchange(server.local_endpoint(), "by name") == "by name");
  server.stop();
  CHECK_THROWS_AS(sockpat::TcpServer("", 0, echo), std::invalid_argument);
}

TEST_CASE("a move-only handler serves clients, in both handler forms" * doctest::timeout(60)) {
  auto prefix = std::make_unique<std::string>("one: ");
  sockpat::TcpServer one(test::loopback_listener(), [p = std::move(prefix)](sockpat::TcpConnection& c) {
    std::array<char, 64> buf{};
    const auto n = c.read_some(buf, 10s);
    c.write_all(*p + std::string(buf.data(), n), 10s);
  });
  one.start();
  CHECK(echo_exchange(one.local_endpoint(), "hi") == "one: hi");
  one.stop();

  auto owned = std::make_unique<int>(2);
  sockpat::TcpServer two({"127.0.0.1", 0},
                         [p = std::move(owned)](sockpat::TcpConnection& c, std::stop_token) {
                           c.write_all(std::to_string(*p), 10s);
                         });
  two.start();
  CHECK(echo_exchange(two.local_endpoint(), "") == "2");
}

TEST_CASE("a Unix-domain server serves clients on a path" * doctest::timeout(60)) {
  test::TempSocketPath path("server");
  sockpat::UnixServer server(sockpat::UnixListener::bind(sockpat::Endpoint::unix_path(path.path())),
                             [](sockpat::UnixConnection& c) {
                               sockpat::FramedConnection f(c);
                               const sockpat::LengthPrefixFraming frames;
                               while (auto frame = f.read_frame(frames)) f.write_frame(frames, "got " + *frame);
                             });
  server.start();
  for (int i = 0; i < 3; ++i) {
    auto c = sockpat::UnixConnection::connect(server.local_endpoint(), 10s);
    sockpat::FramedConnection f(c);
    CHECK(f.request(sockpat::LengthPrefixFraming{}, "frame " + std::to_string(i), 10s) == "got frame " + std::to_string(i));
  }
  server.stop();
  CHECK(server.stats().accepted == 3);
}

TEST_CASE("a server with a low descriptor limit survives a connection flood and accepts again afterwards" * doctest::timeout(60)) {
  int port_pipe[2];
  REQUIRE(::pipe(port_pipe) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The child: the server, with room for few descriptors. Never returns into doctest.
    ::alarm(60);  // a watchdog: a hang here ends the child, and the parent's checks fail
    ::close(port_pipe[0]);
    const rlim_t limit = static_cast<rlim_t>(test::open_descriptors() + 24);
    const ::rlimit rl{limit, limit};
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) ::_exit(10);
    int status = 11;
    try {
      std::atomic<sockpat::TcpServer*> self{nullptr};
      ServerOptions o;
      o.threads = 4;
      o.max_connections = 1000;  // the descriptor limit, not this, is what runs out
      o.idle_timeout = 20s;
      o.on_error = [](std::exception_ptr, const sockpat::Endpoint&) {};  // flood clients reset: expected
      sockpat::TcpServer server(
          test::loopback_listener(),
          [&](sockpat::TcpConnection& c) {
            sockpat::FramedConnection f(c);
            while (auto line = f.read_frame(sockpat::DelimiterFraming::lines())) {
              if (*line == "errors") f.write_line(std::to_string(self.load()->stats().accept_errors));
              else if (*line == "quit") self.load()->request_stop();
              else f.write_line(*line);
            }
          },
          o);
      self = &server;
      const int port = server.local_endpoint().port();
      if (::write(port_pipe[1], &port, sizeof port) != sizeof port) ::_exit(12);
      server.serve();
      status = server.stats().accept_errors > 0 ? 0 : 13;
    } catch (...) {
      status = 14;
    }
    ::_exit(status);
  }
  ::close(port_pipe[1]);
  int port = 0;
  {
    auto pipe_end = sockpat::detail::UniqueHandle(port_pipe[0]);
    REQUIRE(sockpat::detail::wait_ready(port_pipe[0], sockpat::detail::Readiness::read,
                                        std::chrono::steady_clock::now() + 10s, {}) == std::error_code{});
    REQUIRE(::read(port_pipe[0], &port, sizeof port) == sizeof port);
  }
  const sockpat::Endpoint server("127.0.0.1", port);
  const auto lines = sockpat::DelimiterFraming::lines();

  auto first = sockpat::TcpConnection::connect(server, 10s);
  sockpat::FramedConnection f(first);
  CHECK(f.request(lines, "before", 10s) == "before");

  // The flood: far more clients than the child has descriptors. The kernel completes their
  // handshakes; the child accepts until EMFILE, then must back off, not spin or die.
  std::vector<sockpat::TcpConnection> flood;
  for (int i = 0; i < 150; ++i) flood.push_back(sockpat::TcpConnection::connect(server, 10s));
  for (auto& c : flood) c.write_all("flood\n", 10s);
  // The child keeps serving the client it has, and it did run out of descriptors.
  int errors = 0;
  for (int i = 0; i < 1000 && errors == 0; ++i) {
    CHECK(f.request(lines, "during", 10s) == "during");
    errors = std::stoi(f.request(lines, "errors", 10s));
  }
  CHECK(errors > 0);

  // The flood leaves; the child accepts (and serves) new clients again.
  flood.clear();
  auto later = sockpat::TcpConnection::connect(server, 10s);
  sockpat::FramedConnection fl(later);
  CHECK(fl.request(lines, "after the flood", 20s) == "after the flood");
  CHECK(f.request(lines, "first is fine", 10s) == "first is fine");

  f.write_line("quit", 10s);
  first.close();  // the handlers see the end of their clients and return at once
  later.close();
  int status = -1;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
TEST_CASE("stop() from on_error on the thread in serve() returns at once, and serve() returns promptly" *
          doctest::timeout(60)) {
  int port_pipe[2];
  REQUIRE(::pipe(port_pipe) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The child: a server with no descriptor to spare, whose on_error stops it. A stop() that
    // waits for serve() to return, on the thread in serve(), hangs until the watchdog ends it.
    ::alarm(20);
    ::close(port_pipe[0]);
    int status = 11;
    try {
      using Clock = std::chrono::steady_clock;
      std::atomic<sockpat::TcpServer*> self{nullptr};
      std::atomic<bool> stop_returned{false};
      std::atomic<bool> on_serve_thread{false};
      std::atomic<Clock::rep> error_at{0};
      const auto serve_thread = std::this_thread::get_id();
      ServerOptions o;
      o.strategy = Strategy::thread_pool;
      o.threads = 1;
      o.max_connections = 1000;  // the descriptor limit, not this, is what runs out
      o.on_error = [&](std::exception_ptr, const sockpat::Endpoint&) {
        if (error_at.load() == 0) error_at = Clock::now().time_since_epoch().count();
        on_serve_thread = std::this_thread::get_id() == serve_thread;
        self.load()->stop();
        stop_returned = true;
      };
      sockpat::TcpServer server(test::loopback_listener(), echo, o);
      self = &server;
      const int port = server.local_endpoint().port();
      const rlim_t limit = static_cast<rlim_t>(test::open_descriptors() + 2);
      const ::rlimit rl{limit, limit};
      if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) ::_exit(10);
      if (::write(port_pipe[1], &port, sizeof port) != sizeof port) ::_exit(12);
      server.serve();
      const auto took = Clock::now() - Clock::time_point(Clock::duration(error_at.load()));
      status = !stop_returned                    ? 13
               : !on_serve_thread                ? 15
               : server.stats().accept_errors == 0 ? 16
               : took > 2s                       ? 17
                                                 : 0;
    } catch (...) {
      status = 14;
    }
    ::_exit(status);
  }
  ::close(port_pipe[1]);
  int port = 0;
  {
    auto pipe_end = sockpat::detail::UniqueHandle(port_pipe[0]);
    REQUIRE(sockpat::detail::wait_ready(port_pipe[0], sockpat::detail::Readiness::read,
                                        std::chrono::steady_clock::now() + 10s, {}) == std::error_code{});
    REQUIRE(::read(port_pipe[0], &port, sizeof port) == sizeof port);
  }
  // More clients than the child has descriptors: its accept fails with EMFILE, on the serve thread.
  std::vector<sockpat::TcpConnection> clients;
  for (int i = 0; i < 20; ++i) {
    std::error_code ec;
    auto c = sockpat::TcpConnection::connect(sockpat::Endpoint("127.0.0.1", port), 10s, ec);
    if (ec) break;  // the child stopped and closed its listener
    clients.push_back(std::move(c));
  }
  int status = -1;
  REQUIRE(::waitpid(child, &status, 0) == child);  // bounded by the child's watchdog
  CHECK(WIFEXITED(status));                        // not ended by the watchdog: no deadlock
  CHECK(WEXITSTATUS(status) == 0);
}
#endif

TEST_CASE("a handler blocked in read_some with no deadline is canceled by stop() at once" * doctest::timeout(60)) {
  for (const auto strategy : {Strategy::elastic, Strategy::sequential, Strategy::thread_per_connection,
                              Strategy::thread_pool}) {
    CAPTURE(static_cast<int>(strategy));
    std::promise<void> reading;
    std::atomic<bool> canceled{false};
    ServerOptions o;
    o.strategy = strategy;
    o.threads = 1;
    o.idle_timeout = std::nullopt;  // no deadline anywhere: only the stop can end the read
    o.grace = 10s;                  // not waited for: this handler does not take the stop token
    int errors = 0;
    o.on_error = [&](std::exception_ptr, const sockpat::Endpoint&) { ++errors; };
    sockpat::TcpServer server(
        test::loopback_listener(),
        [&](sockpat::TcpConnection& c) {
          std::array<char, 16> buf{};
          reading.set_value();
          try {
            (void)c.read_some(buf);
          } catch (const std::system_error& e) {
            canceled = e.code() == std::errc::operation_canceled;
            throw;
          }
        },
        o);
    server.start();
    auto client = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
    REQUIRE(reading.get_future().wait_for(10s) == std::future_status::ready);
    const auto start = std::chrono::steady_clock::now();
    server.stop();
    const auto took = std::chrono::steady_clock::now() - start;
    MESSAGE("stop() took " << std::chrono::duration_cast<std::chrono::microseconds>(took).count() << " us");
#if defined(_WIN32)
    CHECK(took < 1s);  // under Wine, on one CPU, thread wake-ups are slower
#else
    CHECK(took < 100ms);
#endif
    CHECK(canceled);
    CHECK(server.stats().canceled == 1);
    CHECK(server.stats().handler_errors == 0);
    CHECK(errors == 0);
  }
}

TEST_CASE("a second stop request ends the grace of handlers that watch the stop token" * doctest::timeout(60)) {
  std::promise<void> reading;
  ServerOptions o;
  o.threads = 1;
  o.idle_timeout = std::nullopt;
  o.grace = 30s;
  sockpat::TcpServer server(
      test::loopback_listener(),
      [&](sockpat::TcpConnection& c, std::stop_token) {  // takes the token, then ignores it
        std::array<char, 16> buf{};
        reading.set_value();
        (void)c.read_some(buf);
      },
      o);
  server.start();
  auto client = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
  REQUIRE(reading.get_future().wait_for(10s) == std::future_status::ready);
  const auto start = std::chrono::steady_clock::now();
  server.request_stop();  // graceful: the handler has 30 s
  std::thread second([&] {
    // The grace is under way while this thread waits for the stop to have begun.
    while (!server.stop_requested()) std::this_thread::yield();
    server.request_stop();  // the second request: cancel now
  });
  server.stop();
  second.join();
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  CHECK(server.stats().canceled == 1);
  CHECK(server.stats().handler_errors == 0);
}

TEST_CASE("a client that resets, and one that times out, are not handler failures" * doctest::timeout(60)) {
  std::atomic<int> errors{0};
  ServerOptions o;
  o.threads = 2;
  o.idle_timeout = 200ms;
  o.on_error = [&](std::exception_ptr, const sockpat::Endpoint&) { ++errors; };
  sockpat::TcpServer server(test::loopback_listener(), line_echo, o);
  server.start();
#if !defined(_WIN32)  // under Wine the close below sends FIN, not RST: no reset to count
  {
    // Reset: a connection closed with unread data in its receive queue sends RST, not FIN.
    auto c = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
    c.write_all("one\n", 10s);
    std::array<char, 10> reply{};
    c.read_exactly(reply, 10s);
    CHECK(std::string_view(reply.data(), reply.size()) == "echo: one\n");
    c.write_all("two\n", 10s);
    std::array<char, 1> first{};
    c.read_exactly(first, 10s);  // the reply has arrived; the rest of it stays unread
  }  // closed with "echo: two" unread: RST
#endif
  {
    auto idle = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
    std::array<char, 8> buf{};
    std::error_code ec;
    CHECK(idle.read_some(buf, 10s, ec) == 0);  // dropped at the idle timeout
  }
#if defined(_WIN32)
  const std::size_t endings = 1;
#else
  const std::size_t endings = 2;
#endif
  REQUIRE(eventually([&] { return server.stats().timed_out + server.stats().peer_closed >= endings; }));
  server.stop();
  CHECK(server.stats().timed_out >= 1);
#if !defined(_WIN32)
  CHECK(server.stats().peer_closed >= 1);
#endif
  CHECK(server.stats().handler_errors == 0);
  CHECK(errors == 0);
}
}

#include "sockpat/request_server.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <algorithm>  // std::max
#include <array>
#include <atomic>
#include <chrono>
#include <exception>
#include <filesystem>
#include <memory>  // std::unique_ptr: a move-only handler
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#if !defined(_WIN32)
#include <sys/resource.h>  // setrlimit: the stop-from-on_error test's child
#include <sys/wait.h>      // waitpid
#include <unistd.h>        // fork, pipe, _exit
#endif
#if defined(__linux__)
#include <pthread.h>  // pthread_getschedparam: the poller's scheduling policy
#include <sched.h>    // SCHED_BATCH
#endif

#include "sockpat/framing.hpp"
#include "support/loopback.hpp"

using namespace std::chrono_literals;
using sockpat::DelimiterFraming;
using sockpat::LengthPrefixFraming;
using sockpat::Request;
using sockpat::RequestServerOptions;
using Clock = std::chrono::steady_clock;

namespace {

/// Waits (bounded) until `ready` holds, checking without sleeping.
template <class F>
bool eventually(F ready, std::chrono::seconds limit = 10s) {
  const auto until = Clock::now() + limit;
  while (!ready()) {
    if (Clock::now() > until) return false;
    std::this_thread::yield();
  }
  return true;
}

RequestServerOptions with_threads(std::size_t n) {
  RequestServerOptions o;
  o.threads = n;
  return o;
}

/// Lines in, "echo: " + line out; "throw" throws; "bye" replies and closes.
void line_echo(Request& r) {
  if (r.data() == "throw") throw std::runtime_error("boom from the handler");
  r.reply_frame("echo: " + std::string(r.data()));
  if (r.data() == "bye") r.close();
}

struct LineClient {
  sockpat::TcpConnection conn;
  sockpat::FramedConnection<sockpat::Tcp> framed;

  explicit LineClient(const sockpat::Endpoint& server)
      : conn(sockpat::TcpConnection::connect(server, 10s)), framed(conn) {}
  // `framed` points at `conn`: a LineClient stays where it was made.
  LineClient(const LineClient&) = delete;
  LineClient& operator=(const LineClient&) = delete;

  std::string ask(std::string_view line, sockpat::Deadline d = 10s) {
    framed.write_line(line, d);
    auto reply = framed.read_frame(DelimiterFraming::lines(), d);
    if (!reply) throw std::runtime_error("the server closed the connection");
    return *reply;
  }
  /// True when the server closes (end of stream or a reset) before `d`; false on a timeout.
  bool sees_close(sockpat::Deadline d) {
    std::error_code ec;
    auto line = framed.read_frame(DelimiterFraming::lines(), std::move(d), ec);
    if (ec == std::errc::timed_out) return false;
    return !line;
  }
};

}  // namespace

TEST_SUITE("request_server") {

TEST_CASE("4 worker threads answer 200 keep-alive clients of 20 requests each, none waiting 1 s for a reply" *
          doctest::timeout(60)) {
  sockpat::RequestServer server(test::loopback_listener(), DelimiterFraming::lines(), line_echo, with_threads(4));
  server.start();
  CHECK(server.threads() == 4);
  constexpr int clients = 200;
  constexpr int requests = 20;
  // Every client connects first and only then do they all start asking: 200 connections held
  // open at once by 4 workers.
  std::atomic<int> connected{0};
  std::atomic<int> failures{0};
  std::atomic<long long> worst_us{0};
  std::mutex first_error_mutex;
  std::string first_error;
  std::vector<std::thread> threads;
  threads.reserve(clients);
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      try {
        LineClient c(server.local_endpoint());
        ++connected;
        if (!eventually([&] { return connected.load() == clients; }, 30s)) throw std::runtime_error("not all connected");
        for (int j = 0; j < requests; ++j) {
          const std::string line = "client " + std::to_string(i) + " request " + std::to_string(j);
          const auto t0 = Clock::now();
          const auto reply = c.ask(line);
          const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
          long long seen = worst_us.load();
          while (us > seen && !worst_us.compare_exchange_weak(seen, us)) {
          }
          if (reply != "echo: " + line) throw std::runtime_error("wrong reply: " + reply);
        }
      } catch (const std::exception& e) {
        ++failures;
        std::lock_guard lock(first_error_mutex);
        if (first_error.empty()) first_error = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  INFO("first error: " << first_error);
  CHECK(failures.load() == 0);
  INFO("slowest reply: " << worst_us.load() << " us");
#if defined(_WIN32)
  // Under Wine (docs/platforms.md) 200 client threads and the server share Wine's socket emulation,
  // and poll() parks each connection through the poller's wake-up: the bound there is 3 s.
  CHECK(worst_us.load() < 3'000'000);
#else
  CHECK(worst_us.load() < 1'000'000);
#endif
  CHECK(server.stats().requests == std::size_t{clients} * requests);
  CHECK(server.stats().accepted == std::size_t{clients});
  CHECK(server.stats().handler_errors == 0);
}

TEST_CASE("pipelined requests on one connection are answered in order" * doctest::timeout(60)) {
  sockpat::RequestServer server(test::loopback_listener(), DelimiterFraming::lines(), line_echo, with_threads(3));
  server.start();
  LineClient c(server.local_endpoint());
  std::string burst;
  constexpr int n = 500;
  for (int i = 0; i < n; ++i) burst += "request " + std::to_string(i) + "\n";
  c.conn.write_all(burst, 10s);  // all at once: they arrive in a few segments
  for (int i = 0; i < n; ++i) {
    auto reply = c.framed.read_frame(DelimiterFraming::lines(), 10s);
    REQUIRE(reply);
    CHECK(*reply == "echo: request " + std::to_string(i));
  }
  CHECK(c.ask("after the burst") == "echo: after the burst");
  CHECK(server.stats().requests == n + 1);
}

TEST_CASE("a request over the size limit gets the rejection and a close, and the server goes on" *
          doctest::timeout(60)) {
  RequestServerOptions options = with_threads(2);
  options.rejection = "error: request too large\n";
  sockpat::RequestServer server(test::loopback_listener(), DelimiterFraming::lines(100), line_echo, options);
  server.start();
  LineClient good(server.local_endpoint());
  CHECK(good.ask("before") == "echo: before");

  LineClient big(server.local_endpoint());
  big.conn.write_all(std::string(1000, 'x'), 10s);  // no newline, ten times the limit
  auto reply = big.framed.read_frame(DelimiterFraming::lines(), 10s);
  REQUIRE(reply);
  CHECK(*reply == "error: request too large");
  CHECK(big.sees_close(10s));

  CHECK(good.ask("after") == "echo: after");
  CHECK(eventually([&] { return server.stats().rejected == 1; }));
  CHECK(server.stats().handler_errors == 0);
}

TEST_CASE("a length prefix over the limit is rejected before its bytes arrive" * doctest::timeout(60)) {
  const LengthPrefixFraming framing(1024);
  sockpat::RequestServer server(
      test::loopback_listener(), framing, [](Request& r) { r.reply_frame(r.data()); }, with_threads(1));
  server.start();
  auto c = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
  sockpat::FramedConnection f(c);
  f.write_frame(framing, "small", 10s);
  CHECK(f.read_frame(framing, 10s) == std::optional<std::string>("small"));
  const char huge[4] = {0, 0x10, 0, 0};  // 1 MiB announced
  c.write_all(std::string_view(huge, 4), 10s);
  std::error_code ec;
  const auto after = f.read_frame(framing, 10s, ec);  // the connection closes: no rejection set
  CHECK(!after);
  CHECK(ec != std::errc::timed_out);
  CHECK(eventually([&] { return server.stats().rejected == 1; }));
}

TEST_CASE("a half request holds no worker: with 1 thread another client is served, the half one dropped at the idle timeout" *
          doctest::timeout(60)) {
  RequestServerOptions options = with_threads(1);
  options.idle_timeout = 600ms;
  sockpat::RequestServer server(test::loopback_listener(), DelimiterFraming::lines(), line_echo, options);
  server.start();
  LineClient half(server.local_endpoint());
  const auto half_since = Clock::now();
  half.conn.write_all(std::string_view("GET / HTTP/1.1 but no end of line"), 10s);
  // The poller has read those bytes, and the one worker is free: another client is served now.
  LineClient other(server.local_endpoint());
  const auto t0 = Clock::now();
  CHECK(other.ask("hello", 5s) == "echo: hello");
  CHECK(Clock::now() - t0 < 300ms);
  // The half request is dropped at the idle timeout (checked on a tick of a tenth of it).
  CHECK(half.sees_close(10s));
  const auto lived = Clock::now() - half_since;
  CHECK(lived >= 550ms);
  CHECK(lived < 3s);
  // (`other`, parked since its reply with the same idle timeout, may be gone by now too.)
  CHECK(eventually([&] { return server.stats().timed_out >= 1; }));
  LineClient later(server.local_endpoint());
  CHECK(later.ask("later", 5s) == "echo: later");
}

TEST_CASE("a client dribbling a request one byte at a time is dropped at the idle timeout" * doctest::timeout(60)) {
  RequestServerOptions options = with_threads(1);
  options.idle_timeout = 500ms;
  sockpat::RequestServer server(test::loopback_listener(), DelimiterFraming::lines(), line_echo, options);
  server.start();
  LineClient slow(server.local_endpoint());
  const auto since = Clock::now();
  std::error_code ec;
  // A byte every 50 ms never finishes a line: the timeout counts from the connect, not the last byte.
  for (int i = 0; i < 200 && !ec; ++i) {
    slow.conn.write_all(std::string_view("x"), 1s, ec);
    if (!ec && slow.sees_close(50ms)) break;
  }
  CHECK(Clock::now() - since < 3s);
  CHECK(eventually([&] { return server.stats().timed_out == 1; }));
}

TEST_CASE("a client that never reads its replies holds no worker" * doctest::timeout(60)) {
  RequestServerOptions options = with_threads(1);
  options.idle_timeout = 30s;
  const std::string big(256 * 1024, 'r');
  sockpat::RequestServer server(
      test::loopback_listener(), DelimiterFraming::lines(),
      [&](Request& r) {
        if (r.data() == "big") {
          r.reply(big);
        } else {
          r.reply_frame("echo: " + std::string(r.data()));
        }
      },
      options);
  server.start();
  LineClient hog(server.local_endpoint());
  hog.conn.set_receive_buffer_size(4096);
  std::string many;
  for (int i = 0; i < 64; ++i) many += "big\n";
  hog.conn.write_all(many, 10s);  // 16 MiB of replies it never reads
  CHECK(eventually([&] { return server.stats().requests >= 1; }));
  LineClient other(server.local_endpoint());
  for (int i = 0; i < 10; ++i) CHECK(other.ask("ping", 5s) == "echo: ping");
}

TEST_CASE("a handler that throws is reported, its connection closed, and the server goes on" * doctest::timeout(60)) {
  RequestServerOptions options = with_threads(2);
  std::mutex m;
  std::vector<std::string> reports;
  options.on_error = [&](std::exception_ptr e, const sockpat::Endpoint& peer) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      std::lock_guard lock(m);
      reports.push_back(std::string(x.what()) + " from " + peer.to_string());
    }
  };
  sockpat::RequestServer server(test::loopback_listener(), DelimiterFraming::lines(), line_echo, options);
  server.start();
  LineClient bad(server.local_endpoint());
  bad.framed.write_line("throw", 10s);
  CHECK(bad.sees_close(10s));
  LineClient good(server.local_endpoint());
  CHECK(good.ask("fine") == "echo: fine");
  CHECK(server.stats().handler_errors == 1);
  std::lock_guard lock(m);
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].find("boom from the handler from 127.0.0.1:") == 0);
}

TEST_CASE("reply_frame rejects a payload its framing cannot carry; the handler's throw closes only that client" *
          doctest::timeout(60)) {
  RequestServerOptions options = with_threads(1);
  std::atomic<int> reported{0};
  std::string caught;
  options.on_error = [&](std::exception_ptr e, const sockpat::Endpoint&) {
    try {
      std::rethrow_exception(e);
    } catch (const std::system_error& x) {
      if (x.code() == sockpat::errc::malformed_frame) ++reported;
    }
  };
  sockpat::RequestServer server(
      test::loopback_listener(), DelimiterFraming::lines(),
      [](Request& r) {
        if (r.data() == "two lines") r.reply_frame("one\ntwo");  // a delimiter in a frame: malformed
        r.reply_frame("ok");
      },
      options);
  server.start();
  LineClient c(server.local_endpoint());
  CHECK(c.ask("one line") == "ok");
  c.framed.write_line("two lines", 10s);
  CHECK(c.sees_close(10s));
  CHECK(eventually([&] { return reported.load() == 1; }));
}

TEST_CASE("Request::close() sends the reply, then closes the connection" * doctest::timeout(60)) {
  sockpat::RequestServer server(test::loopback_listener(), DelimiterFraming::lines(), line_echo, with_threads(2));
  server.start();
  LineClient c(server.local_endpoint());
  CHECK(c.ask("hi") == "echo: hi");
  // "bye" and more pipelined behind it: the reply to "bye" arrives, nothing after it, then the close.
  c.conn.write_all(std::string_view("bye\nnever answered\n"), 10s);
  auto reply = c.framed.read_frame(DelimiterFraming::lines(), 10s);
  REQUIRE(reply);
  CHECK(*reply == "echo: bye");
  CHECK(c.sees_close(10s));
  CHECK(server.stats().requests == 2);
}

TEST_CASE("a close after a reply too large for the socket: the poller finishes the reply, then closes" *
          doctest::timeout(60)) {
  const std::string big(8 * 1024 * 1024, 'b');
  sockpat::RequestServer server(
      test::loopback_listener(), DelimiterFraming::lines(),
      [&](Request& r) {
        r.reply(big);
        r.close();
      },
      with_threads(1));
  server.start();
  auto c = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
  c.write_all(std::string_view("give me a lot\n"), 10s);
  std::string got;
  std::array<char, 65536> buf{};
  const sockpat::Deadline d = 20s;
  while (const auto n = c.read_some(buf, d)) got.append(buf.data(), n);  // to the close
  CHECK(got.size() == big.size());
  CHECK(got == big);
}

TEST_CASE("a handler that throws on a pipelined request: the replies before it arrive, then the close" *
          doctest::timeout(60)) {
  RequestServerOptions options = with_threads(1);
  options.on_error = [](std::exception_ptr, const sockpat::Endpoint&) {};
  sockpat::RequestServer server(test::loopback_listener(), DelimiterFraming::lines(), line_echo, options);
  server.start();
  LineClient c(server.local_endpoint());
  c.conn.write_all(std::string_view("one\ntwo\nthrow\nnever\n"), 10s);
  for (const char* want : {"echo: one", "echo: two"}) {
    auto reply = c.framed.read_frame(DelimiterFraming::lines(), 10s);
    REQUIRE(reply);
    CHECK(*reply == want);
  }
  CHECK(c.sees_close(10s));
  CHECK(server.stats().handler_errors == 1);
}

TEST_CASE("stop() with clients parked and mid-request closes them all and joins every thread" * doctest::timeout(60)) {
#if defined(__linux__)
  const auto threads_before = std::distance(std::filesystem::directory_iterator("/proc/self/task"), {});
#endif
  auto server = std::make_unique<sockpat::RequestServer<sockpat::Tcp, DelimiterFraming>>(
      test::loopback_listener(), DelimiterFraming::lines(), line_echo, with_threads(4));
  server->start();
  std::vector<std::unique_ptr<LineClient>> clients;
  for (int i = 0; i < 30; ++i) {
    clients.push_back(std::make_unique<LineClient>(server->local_endpoint()));
    if (i % 2 == 0) {
      CHECK(clients.back()->ask("parked after this") == "echo: parked after this");
    } else {
      clients.back()->conn.write_all(std::string_view("half a req"), 10s);
    }
  }
  CHECK(eventually([&] { return server->stats().active == 30; }));
  const auto t0 = Clock::now();
  server->stop();
  CHECK(Clock::now() - t0 < 2s);
  CHECK(server->stats().canceled == 30);
  CHECK(server->stats().active == 0);
  for (auto& c : clients) CHECK(c->sees_close(5s));
  server.reset();
#if defined(__linux__)
  CHECK(std::distance(std::filesystem::directory_iterator("/proc/self/task"), {}) == threads_before);
#endif
}

TEST_CASE("serve() runs on the calling thread until its stop token; request_stop() from a handler stops it" *
          doctest::timeout(60)) {
  {
    sockpat::RequestServer server(test::loopback_listener(), DelimiterFraming::lines(), line_echo, with_threads(1));
    std::stop_source stop;
    std::thread serving([&] { server.serve(stop.get_token()); });
    LineClient c(server.local_endpoint());
    CHECK(c.ask("one") == "echo: one");
    stop.request_stop();
    serving.join();
    CHECK(c.sees_close(5s));
    server.serve();  // stopped already: returns at once
  }
  {
    sockpat::RequestServer<sockpat::Tcp, DelimiterFraming>* self = nullptr;
    sockpat::RequestServer server(
        test::loopback_listener(), DelimiterFraming::lines(),
        [&](Request& r) {
          r.reply_frame("stopping");
          self->stop();  // from a handler: only requests
        },
        with_threads(2));
    self = &server;
    std::thread serving([&] { server.serve(); });
    LineClient c(server.local_endpoint());
    CHECK(c.ask("stop") == "stopping");
    serving.join();
    CHECK(server.stop_requested());
  }
}

TEST_CASE("past max_connections, Overload::refuse closes new clients and Overload::wait holds them in the backlog" *
          doctest::timeout(60)) {
  RequestServerOptions options = with_threads(1);
  options.max_connections = 2;
  options.overload = sockpat::Overload::refuse;
  {
    sockpat::RequestServer server(test::loopback_listener(), DelimiterFraming::lines(), line_echo, options);
    server.start();
    LineClient a(server.local_endpoint());
    LineClient b(server.local_endpoint());
    CHECK(a.ask("a") == "echo: a");
    CHECK(b.ask("b") == "echo: b");
    LineClient c(server.local_endpoint());
    CHECK(c.sees_close(5s));
    CHECK(server.stats().refused == 1);
  }
  options.overload = sockpat::Overload::wait;
  {
    sockpat::RequestServer server(test::loopback_listener(), DelimiterFraming::lines(), line_echo, options);
    server.start();
    auto a = std::make_unique<LineClient>(server.local_endpoint());
    LineClient b(server.local_endpoint());
    CHECK(a->ask("a") == "echo: a");
    CHECK(b.ask("b") == "echo: b");
    LineClient c(server.local_endpoint());
    c.framed.write_line("c", 5s);
    CHECK(!c.sees_close(300ms));  // waits in the backlog: no reply, no close
    a.reset();                    // a slot frees: c is accepted and answered
    auto reply = c.framed.read_frame(DelimiterFraming::lines(), 5s);
    REQUIRE(reply);
    CHECK(*reply == "echo: c");
  }
}

TEST_CASE("a move-only handler and a framing of one's own serve requests" * doctest::timeout(60)) {
  // Fixed-size frames of 8 bytes: the whole rule is a few lines.
  struct Fixed8 {
    [[nodiscard]] sockpat::FrameScan scan(std::string_view data, std::size_t = 0) const noexcept {
      sockpat::FrameScan s;
      if (data.size() < 8) {
        s.need = 8 - data.size();
        return s;
      }
      s.status = sockpat::FrameScan::Status::complete;
      s.size = s.consumed = 8;
      return s;
    }
    [[nodiscard]] std::error_code encode(std::string_view p, sockpat::FrameParts& parts) const noexcept {
      parts.prefix_size = 0;
      return p.size() == 8 ? std::error_code{} : make_error_code(sockpat::errc::malformed_frame);
    }
    [[nodiscard]] std::size_t max_frame_size() const noexcept { return 8; }
  };
  static_assert(sockpat::Framing<Fixed8>);
  auto prefix = std::make_unique<std::string>("R:");
  sockpat::RequestServer server(
      test::loopback_listener(), Fixed8{},
      [p = std::move(prefix)](Request& r) {
        r.reply(*p);
        r.reply_frame(r.data());
      },
      with_threads(2));
  server.start();
  auto c = sockpat::TcpConnection::connect(server.local_endpoint(), 10s);
  c.write_all(std::string_view("12345678abcdefgh"), 10s);
  std::string got(20, '\0');
  c.read_exactly(std::span<char>(got), 10s);
  CHECK(got == "R:12345678R:abcdefgh");
}

// The poller's scheduling (RequestServerOptions::batch_poller): Linux only.
#if defined(__linux__)
namespace {
int policy_of(pthread_t thread) {
  int policy = -1;
  sched_param param{};
  if (::pthread_getschedparam(thread, &policy, &param) != 0) return -1;
  return policy;
}
}  // namespace

TEST_CASE("the poller thread runs as SCHED_BATCH while it serves and gets its policy back; workers keep theirs" *
          doctest::timeout(60)) {
  for (const bool batch : {true, false}) {
    CAPTURE(batch);
    std::atomic<int> worker_policy{-1};
    RequestServerOptions options = with_threads(2);
    options.batch_poller = batch;
    sockpat::RequestServer server(
        test::loopback_listener(), DelimiterFraming::lines(),
        [&](Request& r) {
          worker_policy = policy_of(::pthread_self());
          r.reply_frame(r.data());
        },
        options);
    std::stop_source stop;
    std::atomic<int> policy_after{-1};
    std::thread serving([&] {
      server.serve(stop.get_token());
      policy_after = policy_of(::pthread_self());
    });
    LineClient c(server.local_endpoint());
    CHECK(c.ask("x") == "x");  // answered: the poller is in its loop
    CHECK(policy_of(serving.native_handle()) == (batch ? SCHED_BATCH : SCHED_OTHER));
    CHECK(worker_policy.load() == SCHED_OTHER);
    stop.request_stop();
    serving.join();
    CHECK(policy_after.load() == SCHED_OTHER);  // serve() gave the calling thread its policy back
  }
}
#endif

// Windows: AF_UNIX is not in Wine 8 (docs/platforms.md).
#if !defined(_WIN32)
TEST_CASE("a Unix-domain request server answers length-prefixed requests" * doctest::timeout(60)) {
  test::TempSocketPath path("request-server");
  const LengthPrefixFraming framing(4096, 2);
  sockpat::RequestServer server(
      sockpat::UnixListener::bind(sockpat::Endpoint::unix_path(path.path())), framing,
      [](Request& r) { r.reply_frame("got " + std::string(r.data())); }, with_threads(2));
  server.start();
  auto c = sockpat::UnixConnection::connect(server.local_endpoint(), 10s);
  sockpat::FramedConnection f(c);
  for (int i = 0; i < 20; ++i) {
    // Not "n" + std::to_string(i): inlined at -O3, GCC 12 warns of an overlapping memcpy in it
    // (a false -Wrestrict, GCC bug 105329), which -Werror makes an error in the Meson release build.
    const std::string n = std::string("n") + std::to_string(i);
    CHECK(f.request(framing, n, 10s) == "got " + n);
  }
  CHECK(server.stats().requests == 20);
}

TEST_CASE("bytes arriving for a connection the server closed while a forked child holds its descriptor are not read" *
          doctest::timeout(60)) {
  RequestServerOptions options = with_threads(1);
  options.idle_timeout = 100ms;
  sockpat::RequestServer server(test::loopback_listener(), DelimiterFraming::lines(), line_echo, options);
  server.start();
  LineClient a(server.local_endpoint());
  CHECK(a.ask("before") == "echo: before");
  // A child holds a copy of every descriptor (as between a handler's fork and its exec): the
  // server's close of A's socket then leaves the socket open, and its epoll registration with it.
  int hold[2];
  REQUIRE(::pipe(hold) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::alarm(20);
    ::close(hold[1]);  // or the read below never sees the parent's close: the watchdog would end it
    char c;
    (void)::read(hold[0], &c, 1);  // until the parent closes its end
    ::_exit(0);
  }
  ::close(hold[0]);
  CHECK(eventually([&] { return server.stats().timed_out == 1; }));  // A closed by the idle timeout
  // A's bytes reach the socket the child still holds: the server must not see them, since its
  // entry for A is gone (reading it would read freed memory, or count a peer_closed for fd -1).
  a.framed.write_line("after", 5s);
  for (int i = 0; i < 3; ++i) {
    LineClient b(server.local_endpoint());  // rounds of the poller after A's bytes arrived
    CHECK(b.ask("b") == "echo: b");
  }
  CHECK(server.stats().peer_closed == 0);
  CHECK(server.stats().handler_errors == 0);
  ::close(hold[1]);
  int status = -1;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));  // ended by the parent's close, not by its 20 s watchdog
  server.stop();
  CHECK(server.stats().requests == 4);
}

TEST_CASE("stop() from on_error on the thread in serve() returns at once, and serve() returns promptly" *
          doctest::timeout(60)) {
  int port_pipe[2];
  REQUIRE(::pipe(port_pipe) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The child: a server with no descriptor to spare, whose on_error stops it. A stop() that
    // waits for serve() to return, on the thread in serve() (the poller), hangs until the watchdog.
    ::alarm(20);
    ::close(port_pipe[0]);
    int status = 11;
    try {
      std::atomic<sockpat::RequestServer<sockpat::Tcp, DelimiterFraming>*> self{nullptr};
      std::atomic<bool> stop_returned{false};
      std::atomic<bool> on_serve_thread{false};
      std::atomic<Clock::rep> error_at{0};
      const auto serve_thread = std::this_thread::get_id();
      RequestServerOptions o = with_threads(1);
      o.max_connections = 1000;  // the descriptor limit, not this, is what runs out
      o.on_error = [&](std::exception_ptr, const sockpat::Endpoint&) {
        if (error_at.load() == 0) error_at = Clock::now().time_since_epoch().count();
        on_serve_thread = std::this_thread::get_id() == serve_thread;
        self.load()->stop();
        stop_returned = true;
      };
      sockpat::RequestServer server(test::loopback_listener(), DelimiterFraming::lines(), line_echo, o);
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
    REQUIRE(sockpat::detail::wait_ready(port_pipe[0], sockpat::detail::Readiness::read, Clock::now() + 10s, {}) ==
            std::error_code{});
    REQUIRE(::read(port_pipe[0], &port, sizeof port) == sizeof port);
  }
  // More clients than the child has descriptors: its accept fails with EMFILE, on the poller.
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

}  // TEST_SUITE

// The async_ members of Connection, Listener and Socket, on the running EventLoop.
#include "sockpat/connection.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "sockpat/event_loop.hpp"
#include "sockpat/listener.hpp"
#include "support/loopback.hpp"
#include "support/resolvers.hpp"  // silent_listener
#include "support/turns.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

template <class F>
auto run_on_loop(F&& body) {
  sockpat::EventLoop loop;
  return loop.run_until_complete(body());
}

}  // namespace

TEST_SUITE("async_connection") {
TEST_CASE("connect, accept, write and read on one loop" * doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  const auto got = run_on_loop([&]() -> sockpat::Task<std::string> {
    auto client = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
    auto server = co_await listener.async_accept(5s);
    co_await client.async_write_all("hello async");
    std::string buf(11, '\0');
    co_await server.async_read_exactly(std::span<char>(buf), 5s);
    client.shutdown();
    std::array<char, 8> more{};
    CHECK(co_await server.async_read_some(more, 5s) == 0);  // end of stream
    co_return buf;
  });
  CHECK(got == "hello async");
}

TEST_CASE("a short read with the peer's end of stream behind it still sees the end at once" * doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  run_on_loop([&]() -> sockpat::Task<void> {
    auto client = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
    auto server = co_await listener.async_accept(5s);
    std::size_t first = 99;
    std::size_t second = 99;
    std::error_code second_error;
    bool done = false;
    auto reader = [&]() -> sockpat::Task<void> {
      std::array<char, 64> buf{};
      first = co_await client.async_read_some(buf, 5s);  // waits: nothing sent yet
      second = co_await client.async_read_some(std::as_writable_bytes(std::span(buf)), 2s, second_error);
      done = true;
    };
    sockpat::create_task(reader());
    CHECK_FALSE(done);
    // Data and FIN leave together, so one readiness event reports both.
    co_await server.async_write_all("abc");
    server.shutdown();
    for (int i = 0; i < 5000 && !done; ++i) co_await sockpat::sleep(1ms);
    CHECK(done);
    CHECK(first == 3);
    CHECK(second == 0);
    CHECK_FALSE(second_error);  // not timed_out: no event was needed for the end of stream
  });
}

TEST_CASE("many small reads and writes in both directions keep flowing" * doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  run_on_loop([&]() -> sockpat::Task<void> {
    auto client = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
    auto server = co_await listener.async_accept(5s);
    // Small writes answered by small writes: without TCP_NODELAY, Nagle's algorithm and
    // delayed ACKs would make each round wait tens of milliseconds.
    client.set_no_delay(true);
    server.set_no_delay(true);
    std::size_t echoed = 0;
    auto echo = [&]() -> sockpat::Task<void> {
      std::array<std::byte, 7> buf{};  // small on purpose: many short and full reads
      for (;;) {
        const auto n = co_await server.async_read_some(buf, 10s);
        if (n == 0) break;
        co_await server.async_write_all(std::span<const std::byte>(buf.data(), n), 10s);
        echoed += n;
      }
      server.shutdown();
    };
    sockpat::create_task(echo());
    std::string sent;
    std::string got;
    std::array<char, 5> in{};
    for (int i = 0; i < 1000; ++i) {
      const std::string m = std::to_string(i * 7919);
      sent += m;
      co_await client.async_write_all(m, 10s);
      while (got.size() < sent.size()) {
        const auto n = co_await client.async_read_some(in, 10s);
        REQUIRE(n > 0);
        got.append(in.data(), n);
      }
    }
    client.shutdown();
    CHECK(co_await client.async_read_some(in, 10s) == 0);
    CHECK(got == sent);
    CHECK(echoed == sent.size());
  });
}

TEST_CASE("connect by host name tries each resolved address" * doctest::timeout(30)) {
  auto listener = sockpat::TcpListener::bind("localhost", 0);
  const int port = listener.local_endpoint().port();
  run_on_loop([&]() -> sockpat::Task<void> {
    auto c = co_await sockpat::TcpConnection::async_connect("localhost", port, 5s);
    CHECK(c.is_open());
  });
}

TEST_CASE("ConnectOptions::timeout counts from each awaited connect, so options can be reused" * doctest::timeout(30)) {
  auto silent = test::silent_listener();
  auto listener = test::loopback_listener();
  sockpat::ConnectOptions o;
  o.timeout = 200ms;
  run_on_loop([&]() -> sockpat::Task<void> {
    const auto start = Clock::now();
    try {
      (void)co_await sockpat::TcpConnection::async_connect("127.0.0.1", silent.endpoint().port(), o);
      FAIL("expected timed_out");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::timed_out);
    }
    CHECK(Clock::now() - start >= 200ms);
    // The same options, later: the whole timeout again.
    auto c = co_await sockpat::TcpConnection::async_connect("127.0.0.1", listener.local_endpoint().port(), o);
    CHECK(c.is_open());
  });
}

TEST_CASE("connect to a closed port fails with the error and the address" * doctest::timeout(30)) {
  sockpat::Endpoint dead;
  {
    auto l = test::loopback_listener();
    dead = l.local_endpoint();
  }
  auto body = [&]() -> sockpat::Task<void> { (void)co_await sockpat::TcpConnection::async_connect(dead, 5s); };
  try {
    run_on_loop(body);
    FAIL("expected connection_refused");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::connection_refused);
    CHECK(std::string(e.what()).find(dead.to_string()) != std::string::npos);
  }
}

TEST_CASE("a read with a timeout fails with timed_out, in both forms" * doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  run_on_loop([&]() -> sockpat::Task<void> {
    auto client = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
    std::array<std::byte, 16> buf{};
    const auto start = Clock::now();
    std::error_code ec;
    const auto n = co_await client.async_read_some(buf, 30ms, ec);
    CHECK(n == 0);
    CHECK(ec == std::errc::timed_out);
    CHECK(Clock::now() - start >= 30ms);
    try {
      co_await client.async_read_some(buf, 10ms);
      FAIL("expected timed_out");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::timed_out);
      // The message names the call, the peer and the timeout.
      const std::string where = "async_read_some from " + listener.local_endpoint().to_string() + " after 10 ms: ";
      CHECK(std::string(e.what()).find(where) != std::string::npos);
    }
    try {
      (void)co_await listener.async_accept(10ms);  // the client was never accepted: take it
      (void)co_await listener.async_accept(10ms);
      FAIL("expected timed_out");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::timed_out);
      const std::string where = "async_accept on " + listener.local_endpoint().to_string() + " after 10 ms: ";
      CHECK(std::string(e.what()).find(where) != std::string::npos);
    }
  });
}

#if !defined(_WIN32)  // Wine closes a socket that lingers 0 s with a FIN (docs/platforms.md)
TEST_CASE("a read on a connection its peer reset names the peer, as a timeout does" * doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  run_on_loop([&]() -> sockpat::Task<void> {
    auto client = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
    auto server = co_await listener.async_accept(5s);
    server.set_linger(std::chrono::seconds(0));
    server.close();  // a reset
    std::array<std::byte, 16> buf{};
    try {
      (void)co_await client.async_read_some(buf, 5s);
      FAIL("expected connection_reset");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::connection_reset);
#if defined(__linux__)  // elsewhere the OS may forget the peer's address: "on LOCAL"
      CHECK(std::string(e.what()) ==
            "async_read_some from " + listener.local_endpoint().to_string() + ": " + e.code().message());
#endif
    }
  });
}
#endif

TEST_CASE("closing a connection cancels its pending read" * doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  run_on_loop([&]() -> sockpat::Task<void> {
    auto client = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
    std::error_code read_error;
    bool read_done = false;
    auto reader = [&]() -> sockpat::Task<void> {
      std::array<std::byte, 16> buf{};
      (void)co_await client.async_read_some(buf, sockpat::Deadline{}, read_error);
      read_done = true;
    };
    sockpat::create_task(reader());
    co_await sockpat::sleep(0ms);  // let the reader reach its wait
    CHECK_FALSE(read_done);
    client.close();
    for (int i = 0; i < 10 && !read_done; ++i) co_await sockpat::sleep(0ms);
    CHECK(read_done);
    CHECK(read_error == std::errc::operation_canceled);
  });
}

TEST_CASE("closing a listener cancels its pending accept" * doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  run_on_loop([&]() -> sockpat::Task<void> {
    std::error_code accept_error;
    bool done = false;
    auto acceptor = [&]() -> sockpat::Task<void> {
      (void)co_await listener.async_accept(sockpat::Deadline{}, accept_error);
      done = true;
    };
    sockpat::create_task(acceptor());
    co_await sockpat::sleep(0ms);
    listener.close();
    for (int i = 0; i < 10 && !done; ++i) co_await sockpat::sleep(0ms);
    CHECK(done);
    CHECK(accept_error == std::errc::operation_canceled);
  });
}

TEST_CASE("a stop token from another thread cancels a pending read" * doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  std::stop_source source;
  std::thread stopper;
  run_on_loop([&]() -> sockpat::Task<void> {
    auto client = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
    std::array<std::byte, 16> buf{};
    stopper = std::thread([&] { source.request_stop(); });
    try {
      co_await client.async_read_some(buf, source.get_token());
      FAIL("expected operation_canceled");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::operation_canceled);
    }
  });
  stopper.join();
}

TEST_CASE("a second reader on one connection is refused, not queued" * doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  run_on_loop([&]() -> sockpat::Task<void> {
    auto client = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
    bool first_done = false;
    auto first = [&]() -> sockpat::Task<void> {
      std::array<std::byte, 4> b{};
      std::error_code ignored;
      (void)co_await client.async_read_some(b, 2s, ignored);
      first_done = true;
    };
    sockpat::create_task(first());
    co_await sockpat::sleep(0ms);
    std::array<std::byte, 4> b{};
    std::error_code ec;
    (void)co_await client.async_read_some(b, 1s, ec);
    CHECK(ec == std::errc::device_or_resource_busy);
    client.close();
    for (int i = 0; i < 10 && !first_done; ++i) co_await sockpat::sleep(0ms);
    CHECK(first_done);
  });
}

TEST_CASE("a closed connection fails with not_connected") {
  run_on_loop([&]() -> sockpat::Task<void> {
    sockpat::TcpConnection c;
    std::array<std::byte, 4> b{};
    std::error_code ec;
    (void)co_await c.async_read_some(b, {}, ec);
    CHECK(ec == sockpat::errc::not_connected);
  });
}

TEST_CASE("write_all through a full socket buffer, read_exactly reports end_of_stream" * doctest::timeout(60)) {
  auto listener = test::loopback_listener();
  run_on_loop([&]() -> sockpat::Task<void> {
    auto client = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
    auto server = co_await listener.async_accept(5s);
    std::vector<std::byte> big(8 << 20);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::byte>(i * 31 % 251);
    std::vector<std::byte> got(big.size());
    bool same = false;
    bool reader_done = false;
    auto reader = [&]() -> sockpat::Task<void> {
      co_await server.async_read_exactly(got, 30s);
      same = got == big;
      std::array<std::byte, 4> more{};
      try {
        co_await server.async_read_exactly(more, 30s);
      } catch (const sockpat::TransferError& e) {
        CHECK(e.code() == sockpat::errc::end_of_stream);
        CHECK(e.bytes_transferred() == 2);
      }
      reader_done = true;
    };
    sockpat::create_task(reader());
    CHECK(co_await client.async_write_all(big, 30s) == big.size());
    co_await client.async_write_all("ab");
    client.shutdown();
    for (int i = 0; i < 10000 && !reader_done; ++i) co_await sockpat::sleep(1ms);
    CHECK(reader_done);
    CHECK(same);
  });
}

TEST_CASE("UDP: async_send_to and async_receive_from" * doctest::timeout(30)) {
  auto a = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  auto b = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  run_on_loop([&]() -> sockpat::Task<void> {
    std::array<std::byte, 64> buf{};
    sockpat::Endpoint from;
    auto sender = [&]() -> sockpat::Task<void> {
      co_await sockpat::sleep(5ms);
      co_await a.async_send_to("datagram", b.local_endpoint());
    };
    sockpat::create_task(sender());
    const auto n = co_await b.async_receive_from(buf, from, 5s);
    CHECK(std::string(reinterpret_cast<const char*>(buf.data()), n) == "datagram");
    CHECK(from == a.local_endpoint());
  });
}

TEST_CASE("every awaited call takes bytes and chars, in the throwing and the error_code& form" * doctest::timeout(30)) {
  auto a = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  auto b = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  auto listener = test::loopback_listener();
  run_on_loop([&]() -> sockpat::Task<void> {
    std::error_code ec;
    std::array<char, 16> chars{};
    sockpat::Endpoint from;
    // Datagrams: a std::string_view sent in the error_code& form, received into std::span<char> in both.
    CHECK(co_await a.async_send_to("one", b.local_endpoint(), 5s, ec) == 3);
    CHECK_FALSE(ec);
    CHECK(std::string(chars.data(), co_await b.async_receive_from(chars, from, 5s)) == "one");
    CHECK(co_await a.async_send_to(std::string("two"), b.local_endpoint(), 5s) == 3);
    CHECK(std::string(chars.data(), co_await b.async_receive_from(chars, from, 5s, ec)) == "two");
    CHECK_FALSE(ec);
    CHECK(from == a.local_endpoint());
    // Streams: std::string_view written and std::span<char> read, in the error_code& form.
    auto client = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
    auto server = co_await listener.async_accept(5s);
    CHECK(co_await client.async_write_some("abc", 5s, ec) == 3);
    CHECK_FALSE(ec);
    CHECK(co_await client.async_write_all(std::string("defg"), 5s, ec) == 4);
    CHECK_FALSE(ec);
    std::array<char, 3> three{};
    CHECK(co_await server.async_read_exactly(three, 5s, ec) == 3);
    CHECK_FALSE(ec);
    CHECK(std::string(three.data(), 3) == "abc");
    std::size_t got = 0;
    while (got < 4 && !ec) got += co_await server.async_read_some(std::span<char>(chars).subspan(got), 5s, ec);
    CHECK_FALSE(ec);
    CHECK(std::string(chars.data(), got) == "defg");
  });
}

TEST_CASE("operations that keep completing at once yield to the loop now and then, so other tasks run" *
          doctest::timeout(30)) {
  // Datagrams to a socket with room are sent at once, and a queue of them is received at
  // once (a datagram that fills the buffer says nothing about the next): without the budget
  // the loop would run nothing else until the loops below ended.
  constexpr int count = 3 * static_cast<int>(sockpat::detail::Reactor::inline_limit);
  auto a = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  auto b = sockpat::UdpSocket::bound({"127.0.0.1", 0});
  run_on_loop([&]() -> sockpat::Task<void> {
    int ticks = 0;
    bool done = false;
    sockpat::create_task(test::count_turns(ticks, done));  // runs to its first yield at once
    const int ticks_before = ticks;
    for (int i = 0; i < count; ++i) co_await a.async_send_to(std::to_string(1000 + i), b.local_endpoint());
    const int ticks_after_sends = ticks;
    std::array<std::byte, 4> buf{};  // exactly one datagram's size: a full read, never "drained"
    sockpat::Endpoint from;
    int in_order = 0;
    for (int i = 0; i < count; ++i) {
      const auto n = co_await b.async_receive_from(buf, from, 5s);
      in_order += std::string(reinterpret_cast<const char*>(buf.data()), n) == std::to_string(1000 + i) ? 1 : 0;
    }
    const int ticks_after_receives = ticks;
    done = true;
    co_await sockpat::yield_now();  // the counter's last turn: it sees `done` and ends
    CHECK(ticks_after_sends > ticks_before);
    CHECK(ticks_after_receives > ticks_after_sends);
    CHECK(in_order == count);  // yielding lost and reordered nothing
  });
}

#if !defined(_WIN32)  // AF_UNIX: not under Wine (docs/platforms.md)
TEST_CASE("Unix-domain streams: async read and write over a socket pair" * doctest::timeout(30)) {
  auto pair = sockpat::UnixConnection::pair();
  auto& x = pair.first;  // not a structured binding: clang 14 cannot capture those in a lambda
  auto& y = pair.second;
  run_on_loop([&]() -> sockpat::Task<void> {
    auto writer = [&]() -> sockpat::Task<void> { co_await x.async_write_all("over unix"); };
    sockpat::create_task(writer());
    std::string buf(9, '\0');
    co_await y.async_read_exactly(std::span<char>(buf), 5s);
    CHECK(buf == "over unix");
  });
}
#endif

#if !defined(_WIN32)  // AF_UNIX: not under Wine (docs/platforms.md)
TEST_CASE("Unix-domain listener: async_accept and async_connect" * doctest::timeout(30)) {
  test::TempSocketPath path("async");
  auto listener = sockpat::UnixListener::bind(sockpat::Endpoint::parse("unix:" + path.path()));
  run_on_loop([&]() -> sockpat::Task<void> {
    auto c = co_await sockpat::UnixConnection::async_connect(listener.local_endpoint(), 5s);
    auto s = co_await listener.async_accept(5s);
    co_await s.async_write_all("hi");
    std::string buf(2, '\0');
    co_await c.async_read_exactly(std::span<char>(buf), 5s);
    CHECK(buf == "hi");
  });
}
#endif

}

TEST_SUITE("async_connection") {
TEST_CASE("an awaited call's timeout names the peer and the timeout, as the blocking call's does" *
          doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  run_on_loop([&]() -> sockpat::Task<void> {
    auto client = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
    const std::string peer = listener.local_endpoint().to_string();
    std::array<std::byte, 16> buf{};
    const auto start = Clock::now();
    try {
      (void)co_await client.async_read_some(buf, 50ms);
      FAIL("expected timed_out");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::timed_out);
      CHECK(std::string(e.what()).find("async_read_some from " + peer + " after 50 ms: ") != std::string::npos);
    }
    CHECK(Clock::now() - start >= 50ms);
    try {
      (void)co_await client.async_read_exactly(buf, 20ms);
      FAIL("expected timed_out");
    } catch (const sockpat::TransferError& e) {
      CHECK(e.code() == std::errc::timed_out);
      CHECK(std::string(e.what()).find("async_read_exactly from " + peer + " after 20 ms: ") != std::string::npos);
    }
    // The blocking twin says it the same way.
    try {
      (void)client.read_some(buf, 20ms);
      FAIL("expected timed_out");
    } catch (const std::system_error& e) {
      CHECK(std::string(e.what()).find("read from " + peer + " after 20 ms: ") != std::string::npos);
    }
    auto server = co_await listener.async_accept(5s);  // the client's
    const auto accept_start = Clock::now();
    try {
      (void)co_await listener.async_accept(50ms);
      FAIL("expected timed_out");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::timed_out);
      CHECK(std::string(e.what()).find("async_accept on " + peer + " after 50 ms: ") != std::string::npos);
    }
    CHECK(Clock::now() - accept_start >= 50ms);
    CHECK(Clock::now() - accept_start < 3s);
    // A time point bounds the call too; there is then no duration to name.
    try {
      (void)co_await listener.async_accept(Clock::now() + 20ms);
      FAIL("expected timed_out");
    } catch (const std::system_error& e) {
      CHECK(std::string(e.what()).find("async_accept on " + peer + ": ") != std::string::npos);
    }
  });
}
}

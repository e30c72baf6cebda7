// StreamReader / StreamWriter over TLS: open_connection and start_server with a TlsContext,
// start_tls, against each other and against Python's ssl (tests/tls/tls_peer.py).
#include "sockpat/tls_streams.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"
#include "support/tls_peer.hpp"

#include <array>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>  // std::move
#include <vector>

#include "sockpat/sync.hpp"
#include "support/loop.hpp"
#include "support/loopback.hpp"

using namespace std::chrono_literals;
using sockpat::TlsContext;
using sockpat::tls_errc;

namespace {

using test::cert;
using test::PythonPeer;

TlsContext server_context(const std::string& name = "server") {
  return TlsContext::server(cert(name + ".pem"), cert(name + ".key"));
}

TlsContext client_context() {
  auto c = TlsContext::client();
  c.add_ca_file(cert("ca.pem"));
  return c;
}

// Echoes until the peer's close_notify, then closes (sending ours) and waits for the close.
sockpat::Task<void> echo(sockpat::StreamReader r, sockpat::StreamWriter w) {
  for (int i = 0; i < 10'000'000; ++i) {
    const auto chunk = co_await r.read_chunk();
    if (chunk.empty()) break;
    co_await w.write(chunk);
  }
  CHECK(r.at_eof());
  w.close();
  co_await w.wait_closed();
}

// The failures a server reported (on_error), as messages.
struct Reports {
  std::vector<std::string> messages;
  sockpat::Event first;
  sockpat::StreamServerOptions options() {
    sockpat::StreamServerOptions o;
    o.on_error = [this](std::exception_ptr e, const sockpat::Endpoint&) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        messages.emplace_back(x.what());
      }
      first.set();
    };
    return o;
  }
};

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 4099) >> 3);
  return s;
}

// What a failed co_await threw: its code and message (the error's words).
template <class T>
sockpat::Task<std::pair<std::error_code, std::string>> failure_of(sockpat::Task<T> task) {
  try {
    (void)co_await std::move(task);
  } catch (const std::system_error& e) {
    co_return std::pair<std::error_code, std::string>{e.code(), e.what()};
  }
  co_return std::pair<std::error_code, std::string>{};
}

// Writes `data` in pieces of `piece` bytes (a task of its own: a lambda's captures would die
// with the lambda before the coroutine ends).
sockpat::Task<void> write_in_pieces(sockpat::StreamWriter& writer, const std::string& data, std::size_t piece) {
  for (std::size_t at = 0; at < data.size(); at += piece) co_await writer.write(std::string_view(data).substr(at, piece));
}

// Sends `data` with one try_write (`whole`) or one write, then closes (close_notify after it).
sockpat::Task<void> send_and_close(sockpat::StreamWriter& writer, const std::string& data, bool whole) {
  if (whole) {
    CHECK(writer.try_write(data));  // a fresh stream takes a message whole
  } else {
    co_await writer.write(data);
  }
  writer.close();
  co_await writer.wait_closed();
}

// echo(), recording the client certificate's subject first.
sockpat::Task<void> echo_naming(std::string* subject, sockpat::StreamReader r, sockpat::StreamWriter w) {
  *subject = sockpat::tls_info(w).peer_subject;
  co_await echo(std::move(r), std::move(w));
}

}  // namespace

TEST_SUITE("tls streams") {
TEST_CASE("an async TLS client and server echo lines and 64 MiB byte-exact and end with close_notify both ways" *
          doctest::timeout(110)) {
  test::run_bounded(
      []() -> sockpat::Task<void> {
        auto server = co_await sockpat::start_server(echo, "127.0.0.1", 0, server_context());
        const auto client_ctx = client_context();
        // A pair, not structured bindings: clang 14 cannot capture those in the group's body.
        auto streams = co_await sockpat::open_connection("localhost", server.local_endpoint().port(), client_ctx, 5s);
        auto& reader = streams.first;
        auto& writer = streams.second;
        CHECK(sockpat::tls_info(writer).protocol_version == "TLSv1.3");
        CHECK_FALSE(writer.can_write_eof());
        co_await writer.write("first line\nsecond");
        co_await writer.write(" line\n");
        CHECK(co_await reader.read_line() == "first line\n");
        CHECK(co_await reader.read_until("line\n") == "second line\n");

        const std::string big = pattern(64 << 20);
        std::string back;
        back.reserve(big.size());
        co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
          (void)group.create_task(write_in_pieces(writer, big, 1 << 20));
          for (int i = 0; i < 1'000'000 && back.size() < big.size(); ++i) {
            const auto chunk = co_await reader.read_chunk();
            REQUIRE_FALSE(chunk.empty());
            back.append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
          }
        });
        CHECK(back.size() == big.size());
        CHECK(back == big);

        const auto start = std::chrono::steady_clock::now();
        writer.close();  // close_notify; the server answers with its own, which ends the wait
        co_await writer.wait_closed();
        CHECK(std::chrono::steady_clock::now() - start < 5s);  // not the close timeout (10 s)
        server.close();
        co_await server.wait_closed();
        CHECK(server.stats().handler_errors == 0);
      },
      100s);
}

TEST_CASE("the async TLS server serves Python ssl clients, with ALPN" * doctest::timeout(60)) {
  auto ctx = server_context();
  ctx.set_alpn({"h2", "http/1.1"});
  std::optional<PythonPeer> client;
  int served = 0;
  test::run_bounded(
      [&]() -> sockpat::Task<void> {
        sockpat::Event done;
        auto server = co_await sockpat::start_server(
            [&](sockpat::StreamReader r, sockpat::StreamWriter w) -> sockpat::Task<void> {
              CHECK(sockpat::tls_info(w).alpn == "h2");
              co_await echo(std::move(r), std::move(w));
              ++served;
              done.set();
            },
            "127.0.0.1", 0, std::move(ctx));
        client.emplace("client --port " + std::to_string(server.local_endpoint().port()) + " --ca " + cert("ca.pem") +
                       " --alpn http/1.1,h2 --bytes 1048576");
        co_await sockpat::wait_for(done.wait(), 25s);
        server.close();
        co_await server.wait_closed();
      },
      30s);
  CHECK(served == 1);
  CHECK(client->line() == "ok 1048576 TLSv1.3 h2");  // Python's unwrap() got our close_notify
}

TEST_CASE("the async TLS client talks to a Python ssl server over TLS 1.3 and TLS 1.2" * doctest::timeout(60)) {
  for (const bool tls12 : {false, true}) {
    CAPTURE(tls12);
    PythonPeer server("server --cert " + cert("server.pem") + " --key " + cert("server.key") +
                      (tls12 ? " --max-tls12" : ""));
    const int port = server.port();
    test::run_bounded(
        [&]() -> sockpat::Task<void> {
          const auto ctx = client_context();
          auto [reader, writer] = co_await sockpat::open_connection("localhost", port, ctx, 5s);
          CHECK(sockpat::tls_info(writer).protocol_version == (tls12 ? "TLSv1.2" : "TLSv1.3"));
          const std::string data = pattern(1 << 20);
          for (std::size_t at = 0; at < data.size(); at += 64 * 1024) {
            const auto piece = std::string_view(data).substr(at, 64 * 1024);
            co_await writer.write(piece);
            CHECK(co_await reader.read_exactly(piece.size()) == piece);
          }
          writer.close();
          co_await writer.wait_closed();
        },
        30s);
    CHECK(server.line().rfind("ok 1048576 ", 0) == 0);  // it saw our close_notify, a clean end
  }
}

TEST_CASE("a peer that closes without close_notify makes a read fail with truncated, not at_eof" *
          doctest::timeout(30)) {
  PythonPeer server("server --cert " + cert("server.pem") + " --key " + cert("server.key") + " --mode truncate");
  const int port = server.port();
  test::run_bounded([&]() -> sockpat::Task<void> {
    const auto ctx = client_context();
    auto [reader, writer] = co_await sockpat::open_connection("localhost", port, ctx, 5s);
    CHECK(co_await reader.read_exactly(7) == "partial");
    const auto [code, what] = co_await failure_of(reader.read());
    CHECK(code == tls_errc::truncated);
    CHECK(std::string(what).find("StreamReader read from 127.0.0.1:") != std::string::npos);
    CHECK_FALSE(reader.at_eof());
  });
  CHECK(server.line() == "ok truncated");
}

TEST_CASE("a client that stops halfway through the handshake is dropped at the handshake timeout; the next is served" *
          doctest::timeout(30)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    sockpat::StreamTlsOptions tls;
    tls.handshake_timeout = 300ms;
    auto server = co_await sockpat::start_server(echo, "127.0.0.1", 0, server_context(), {}, tls);
    const int port = server.local_endpoint().port();
    auto stalled = co_await sockpat::TcpConnection::async_connect("127.0.0.1", port, 5s);
    co_await stalled.async_write_all(std::string("\x16\x03\x01\x02\x00", 5));  // a record header, then silence
    const auto start = std::chrono::steady_clock::now();
    std::array<std::byte, 4096> buf{};
    std::error_code ec;
    const auto n = co_await stalled.async_read_some(buf, sockpat::Deadline(5s), ec);
    CHECK((n == 0 || ec == std::errc::connection_reset));  // dropped: no answer
    CHECK(std::chrono::steady_clock::now() - start >= 250ms);
    CHECK(server.stats().timed_out == 1);
    const auto ctx = client_context();
    auto [reader, writer] = co_await sockpat::open_connection("localhost", port, ctx, 5s);
    co_await writer.write("next\n");
    CHECK(co_await reader.read_line() == "next\n");
    server.close();
    co_await server.wait_closed();
  });
}

TEST_CASE("a plaintext client of the TLS server is reported as not TLS, and the next client is served" *
          doctest::timeout(30)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    Reports reports;
    auto server = co_await sockpat::start_server(echo, "127.0.0.1", 0, server_context(), reports.options());
    const int port = server.local_endpoint().port();
    auto plain = co_await sockpat::TcpConnection::async_connect("127.0.0.1", port, 5s);
    co_await plain.async_write_all(std::string("GET / HTTP/1.0\r\n\r\n"));
    std::array<std::byte, 4096> buf{};
    std::error_code ec;
    CHECK(co_await plain.async_read_some(buf, sockpat::Deadline(5s), ec) == 0);  // closed, no answer
    co_await sockpat::wait_for(reports.first.wait(), 5s);
    REQUIRE(reports.messages.size() == 1);
    CHECK(reports.messages[0].find("TLS handshake with 127.0.0.1:") != std::string::npos);
    CHECK(reports.messages[0].find("not TLS (a plaintext client?)") != std::string::npos);
    const auto ctx = client_context();
    auto [reader, writer] = co_await sockpat::open_connection("localhost", port, ctx, 5s);
    co_await writer.write("next\n");
    CHECK(co_await reader.read_line() == "next\n");
    server.close();
    co_await server.wait_closed();
  });
}

TEST_CASE("client certificates over the async streams: required, verified and named; a client without one is refused" *
          doctest::timeout(30)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    Reports reports;
    std::string subject;
    auto server = co_await sockpat::start_server(
        [&subject](sockpat::StreamReader r, sockpat::StreamWriter w) { return echo_naming(&subject, std::move(r), std::move(w)); },
        "127.0.0.1", 0, server_context().add_ca_file(cert("ca.pem")).verify_clients(), reports.options());
    const int port = server.local_endpoint().port();
    {
      // Without a certificate: TLS 1.3 ends the client's handshake first, so the refusal comes as
      // an alert on the first read.
      const auto ctx = client_context();
      auto [reader, writer] = co_await sockpat::open_connection("localhost", port, ctx, 5s);
      co_await writer.write("x\n");
      const auto [code, what] = co_await failure_of(reader.read_line());
      // The client's handshake had ended: a failure after it, with the alert's words.
      CHECK(code == tls_errc::failed);
      CHECK(what.find("StreamReader read from 127.0.0.1:") != std::string::npos);
      CHECK(what.find("certificate required") != std::string::npos);
      co_await sockpat::wait_for(reports.first.wait(), 5s);
      REQUIRE(reports.messages.size() == 1);
      CHECK(reports.messages[0].find("peer did not return a certificate") != std::string::npos);
    }
    const auto ctx = client_context().use_certificate_files(cert("client.pem"), cert("client.key"));
    auto [reader, writer] = co_await sockpat::open_connection("localhost", port, ctx, 5s);
    co_await writer.write("y\n");
    CHECK(co_await reader.read_line() == "y\n");
    CHECK(subject.find("CN=sockpat-test-client") != std::string::npos);
    writer.close();
    co_await writer.wait_closed();
    server.close();
    co_await server.wait_closed();
    CHECK(server.stats().handler_errors == 1);  // the refused handshake, and only it
  });
}

TEST_CASE("a wrong host name, an unknown CA and an expired certificate each fail the async client with their reason" *
          doctest::timeout(60)) {
  struct Case {
    const char* cert;
    const char* reason;
  };
  for (const auto& k : {Case{"other", "hostname mismatch"}, Case{"rogue", "unable to get local issuer certificate"},
                        Case{"expired", "certificate has expired"}}) {
    CAPTURE(k.cert);
    test::run_bounded([&]() -> sockpat::Task<void> {
      Reports reports;
      auto server = co_await sockpat::start_server(echo, "127.0.0.1", 0, server_context(k.cert), reports.options());
      const auto ctx = client_context();
      const auto [code, what] =
          co_await failure_of(sockpat::open_connection("localhost", server.local_endpoint().port(), ctx, 5s));
      CHECK(code == tls_errc::certificate_verify_failed);
      CHECK(std::string(what).find("TLS handshake with 127.0.0.1:") != std::string::npos);
      CHECK(std::string(what).find(k.reason) != std::string::npos);
      co_await sockpat::wait_for(reports.first.wait(), 5s);  // the server saw the client's alert
      server.close();
      co_await server.wait_closed();
    });
  }
}

TEST_CASE("start_tls upgrades a plaintext stream on both sides, keeping a handshake that arrived with the last line" *
          doctest::timeout(30)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    const auto server_ctx = server_context();
    sockpat::Event hello_sent;
    auto server = co_await sockpat::start_server(
        [&](sockpat::StreamReader r, sockpat::StreamWriter w) -> sockpat::Task<void> {
          CHECK(co_await r.read_line() == "EHLO client\n");
          co_await w.write("250 STARTTLS\n");
          // The client's handshake comes right behind its STARTTLS line: one read takes both.
          co_await hello_sent.wait();
          CHECK(co_await r.read_line() == "STARTTLS\n");
          CHECK(r.buffered() > 0);
          co_await sockpat::start_tls(w, server_ctx);
          co_await echo(std::move(r), std::move(w));
        },
        "127.0.0.1", 0);
    auto [reader, writer] = co_await sockpat::open_connection("127.0.0.1", server.local_endpoint().port(), 5s);
    co_await writer.write("EHLO client\n");
    CHECK(co_await reader.read_line() == "250 STARTTLS\n");
    CHECK(sockpat::tls_info(writer).protocol_version.empty());  // still plaintext
    co_await writer.write("STARTTLS\n");
    const auto client_ctx = client_context();
    sockpat::StreamTlsOptions tls;
    tls.server_hostname = "localhost";
    // create_task runs the upgrade to its first wait: the ClientHello is sent by then.
    auto upgrade = sockpat::create_task(sockpat::start_tls(writer, client_ctx, tls));
    hello_sent.set();
    co_await upgrade;
    CHECK(sockpat::tls_info(writer).protocol_version == "TLSv1.3");
    co_await writer.write("over TLS\n");
    CHECK(co_await reader.read_line() == "over TLS\n");
    writer.close();
    co_await writer.wait_closed();
    server.close();
    co_await server.wait_closed();
  });
}

TEST_CASE("try_write and write over TLS with a 4 KiB send buffer and a reader that waits: the peer gets every byte" *
          doctest::timeout(60)) {
  test::run_bounded(
      []() -> sockpat::Task<void> {
        const auto client_ctx = client_context();
        const auto server_ctx = server_context();
        const std::string big = pattern(16 << 20);
        for (const bool whole : {true, false}) {
          CAPTURE(whole);
          // A local stream: what the kernel holds for the reader is charged to the writer's
          // 4 KiB buffer, so nearly all of the message waits in the writer's.
          auto [one, two] = test::local_pair();
          // Pairs, not structured bindings: clang 14 cannot capture those in the groups' bodies.
          auto mine = sockpat::make_streams(std::move(one));
          auto theirs = sockpat::make_streams(std::move(two));
          auto& writer = mine.second;
          auto& peer_reader = theirs.first;
          auto& peer_writer = theirs.second;
          sockpat::StreamTlsOptions tls;
          tls.server_hostname = "localhost";
          co_await sockpat::with_task_group([&](sockpat::TaskGroup& handshakes) -> sockpat::Task<void> {
            (void)handshakes.create_task(sockpat::start_tls(writer, client_ctx, tls));
            (void)handshakes.create_task(sockpat::start_tls(peer_writer, server_ctx));
            co_return;
          });
          const auto fd = sockpat::detail::StreamAccess::of(writer)->fd();
          REQUIRE_FALSE(sockpat::detail::set_int_option(fd, sockpat::detail::option::send_buffer, 4096));
          std::string received;
          co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
            (void)group.create_task(send_and_close(writer, big, whole));
            // Until the writer holds what the kernel would not take (a write: until it waits for room).
            for (int i = 0; i < 2000 && writer.buffered() < 32 * 1024; ++i) co_await sockpat::sleep(1ms);
            CHECK(writer.buffered() >= 32 * 1024);
            // Then a buffer that lets the rest through quickly (4 KiB takes seconds per MiB).
            CHECK_FALSE(sockpat::detail::set_int_option(fd, sockpat::detail::option::send_buffer, 1 << 20));
            for (int i = 0; i < 10'000'000; ++i) {
              const auto chunk = co_await peer_reader.read_chunk();
              if (chunk.empty()) break;
              received.append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
            }
            CHECK(peer_reader.at_eof());  // the writer's close_notify, not a truncation
            peer_writer.close();
            co_await peer_writer.wait_closed();
          });
          CHECK(received.size() == big.size());
          CHECK((received == big));  // byte-exact, in order
        }
      },
      50s);
}

TEST_CASE("a peer that requests key updates and never reads fails the stream with buffer_full, its buffer bounded" *
          doctest::timeout(60)) {
  auto ends = test::local_pair();  // not a structured binding: a lambda below uses an end
  const auto client_ctx = client_context();
  // The peer: a blocking TLS client on a thread of its own, sending KeyUpdate requests (each
  // answered by the reader's side) and never reading the answers.
  std::thread peer([&client_ctx, conn = std::move(ends.first)]() mutable {
    try {
      auto tls = sockpat::TlsConnection<test::LocalConnection::protocol_type>::client(std::move(conn), client_ctx,
                                                                                    "localhost", 10s);
      for (int i = 0; i < 100'000; ++i) {
        if (SSL_key_update(tls.engine()->native_handle(), SSL_KEY_UPDATE_REQUESTED) != 1) break;
        tls.write_all("k", 10s);
      }
    } catch (const std::system_error&) {  // the stream ended it: what is checked is the stream's side
    }
  });
  std::error_code failure;
  std::size_t most_buffered = 0;
  test::run_bounded(
      [&]() -> sockpat::Task<void> {
        auto [reader, writer] = sockpat::make_streams(std::move(ends.second));
        co_await sockpat::start_tls(writer, server_context());
        const auto fd = sockpat::detail::StreamAccess::of(writer)->fd();
        REQUIRE_FALSE(sockpat::detail::set_int_option(fd, sockpat::detail::option::send_buffer, 4096));
        try {
          for (int i = 0; i < 1'000'000; ++i) {
            if ((co_await reader.read_chunk()).empty()) break;
            most_buffered = (std::max)(most_buffered, writer.buffered());
          }
        } catch (const std::system_error& e) {
          failure = e.code();
        }
        writer.abort();
      },
      50s);
  peer.join();
  CHECK(failure == sockpat::errc::buffer_full);
  CHECK(most_buffered <= sockpat::detail::StreamState::unsolicited_limit);
}

TEST_CASE("start_tls on a verifying client without a server name (unless verify_chain_only), and write_eof over TLS, are refused" *
          doctest::timeout(30)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    auto server = co_await sockpat::start_server(echo, "127.0.0.1", 0, server_context());
    const auto ctx = client_context();
    auto plain = co_await sockpat::open_connection("127.0.0.1", server.local_endpoint().port(), 5s);
    bool refused = false;
    try {
      co_await sockpat::start_tls(plain.second, ctx);
    } catch (const std::invalid_argument&) {
      refused = true;
    }
    CHECK(refused);
    // Unless the context checks the chain alone (the peer is checked by other means).
    auto chain_only = client_context();
    chain_only.verify_chain_only();
    co_await sockpat::start_tls(plain.second, chain_only);
    co_await plain.second.write("over TLS\n");
    CHECK(co_await plain.first.read_line() == "over TLS\n");
    plain.second.close();
    co_await plain.second.wait_closed();
    auto [reader, writer] = co_await sockpat::open_connection("localhost", server.local_endpoint().port(), ctx, 5s);
    std::error_code code;
    try {
      writer.write_eof();
    } catch (const std::system_error& e) {
      code = e.code();
    }
    CHECK(code == std::errc::operation_not_supported);
    server.close();
    co_await server.wait_closed();
  });
}
}

#include "sockpat/tls.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"
#include "support/tls_peer.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>  // std::fopen: certificates read into memory
#include <future>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>  // std::declval, std::move
#include <vector>

#include "support/loopback.hpp"

#include <openssl/ct.h>  // SSL_CTX_enable_ct: a session that cannot be made

using namespace std::chrono_literals;
using sockpat::TlsConnection;
using sockpat::TlsContext;
using sockpat::tls_errc;

// Move-only, as the rest of sockpat's owners.
static_assert(!std::is_copy_constructible_v<TlsContext>);
static_assert(std::is_nothrow_move_constructible_v<TlsContext>);
static_assert(!std::is_copy_constructible_v<sockpat::detail::TlsEngine>);
static_assert(std::is_nothrow_move_constructible_v<sockpat::detail::TlsEngine>);
static_assert(!std::is_copy_constructible_v<sockpat::TlsTcpConnection>);
static_assert(std::is_nothrow_move_constructible_v<sockpat::TlsTcpConnection>);
static_assert(std::is_error_code_enum_v<tls_errc>);

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

// Echoes until the client's close_notify, then answers it.
void echo(TlsConnection<sockpat::Tcp>& tls) {
  std::vector<std::byte> buf(64 * 1024);
  while (const auto n = tls.read_some(buf, 20s)) tls.write_all(std::span<const std::byte>(buf).first(n), 20s);
  tls.shutdown();
}

// Failures the server reported, to check their messages.
struct Reports {
  std::mutex mutex;
  std::vector<std::string> messages;
  std::promise<void> first;
  bool told = false;

  sockpat::ServerOptions options() {
    sockpat::ServerOptions o;
    o.on_error = [this](std::exception_ptr e, const sockpat::Endpoint&) {
      std::lock_guard lock(mutex);
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        messages.emplace_back(x.what());
      }
      if (!told) first.set_value();
      told = true;
    };
    return o;
  }
  std::string wait_first() {
    REQUIRE(first.get_future().wait_for(10s) == std::future_status::ready);
    std::lock_guard lock(mutex);
    return messages.front();
  }
};

std::string peer_files() {
  return "--cert " + cert("server.pem") + " --key " + cert("server.key");
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 131 + seed) >> 3);
  return v;
}

}  // namespace

TEST_SUITE("tls") {

TEST_CASE("a client verifies the server, echoes through it and ends with close_notify both ways" * doctest::timeout(30)) {
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, server_context(), echo);
  server.start();
  auto c = TlsConnection<sockpat::Tcp>::connect("localhost", server.local_endpoint().port(), client_context(), 10s);
  CHECK(c.protocol_version() == "TLSv1.3");
  c.write_all("hello over TLS", 5s);
  std::array<char, 14> got{};
  c.read_exactly(got, 5s);
  CHECK(std::string(got.data(), got.size()) == "hello over TLS");
  c.shutdown(5s);
  CHECK(c.engine()->close_notify_received());
}

TEST_CASE("a client given 127.0.0.1 checks the address in the certificate" * doctest::timeout(30)) {
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, server_context(), echo);
  server.start();
  auto c = TlsConnection<sockpat::Tcp>::connect("127.0.0.1", server.local_endpoint().port(), client_context(), 10s);
  c.write_all("x", 5s);
  std::array<char, 1> got{};
  CHECK(c.read_some(got, 5s) == 1);
  c.shutdown(5s);
}

TEST_CASE("TlsServer serves Python ssl clients, 1 MiB each, with ALPN" * doctest::timeout(60)) {
  auto ctx = server_context();
  ctx.set_alpn({"h2", "http/1.1"});
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, std::move(ctx), echo);
  server.start();
  const auto port = std::to_string(server.local_endpoint().port());
  for (int i = 0; i < 2; ++i) {
    PythonPeer client("client --port " + port + " --ca " + cert("ca.pem") + " --alpn http/1.1,h2 --bytes 1048576");
    CHECK(client.line() == "ok 1048576 TLSv1.3 h2");
  }
}

TEST_CASE("TlsConnection talks to a Python ssl server over TLS 1.3 and TLS 1.2" * doctest::timeout(60)) {
  for (const bool tls12 : {false, true}) {
    CAPTURE(tls12);
    PythonPeer server("server " + peer_files() + " --alpn http/1.1" + (tls12 ? " --max-tls12" : ""));
    const int port = server.port();
    auto ctx = client_context();
    ctx.set_alpn({"http/1.1"});
    auto c = TlsConnection<sockpat::Tcp>::connect("localhost", port, ctx, 10s);
    CHECK(c.protocol_version() == (tls12 ? "TLSv1.2" : "TLSv1.3"));
    CHECK(c.alpn() == "http/1.1");
    const auto data = pattern(1 << 20, 7);
    std::vector<std::byte> back(64 * 1024);
    for (std::size_t at = 0; at < data.size(); at += back.size()) {
      c.write_all(std::span<const std::byte>(data).subspan(at, back.size()), 10s);
      c.read_exactly(back, 10s);
      REQUIRE(std::equal(back.begin(), back.end(), data.begin() + static_cast<std::ptrdiff_t>(at)));
    }
    c.shutdown(5s);
    const auto result = server.line();
    CHECK(result.rfind("ok 1048576 ", 0) == 0);
  }
}

TEST_CASE("a wrong host name, an unknown CA, a self-signed and an expired certificate each fail with their reason" *
          doctest::timeout(60)) {
  struct Case {
    const char* cert;
    const char* host;
    const char* reason;
  };
  for (const auto& k : {Case{"other", "localhost", "hostname mismatch"},
                        Case{"server", "127.0.0.2", "IP address mismatch"},
                        Case{"rogue", "localhost", "unable to get local issuer certificate"},
                        Case{"self_signed", "localhost", "self-signed certificate"},
                        Case{"expired", "localhost", "certificate has expired"}}) {
    CAPTURE(k.cert);
    Reports reports;
    sockpat::TlsTcpServer server({"127.0.0.1", 0}, server_context(k.cert), echo, reports.options());
    server.start();
    const int port = server.local_endpoint().port();
    const auto ctx = client_context();
    // The throwing form says why in words.
    auto dial = [&] {
      auto c = TlsConnection<sockpat::Tcp>::client(sockpat::TcpConnection::connect({"127.0.0.1", port}, 5s), ctx,
                                                   k.host, 5s);
    };
    CHECK_THROWS_WITH_AS(dial(), doctest::Contains(k.reason), std::system_error);
    // The error_code form: the code, and the same reason in error_text().
    std::error_code ec;
    auto c = TlsConnection<sockpat::Tcp>::client(sockpat::TcpConnection::connect({"127.0.0.1", port}, 5s), ctx,
                                                 k.host, 5s, ec);
    CHECK(ec == tls_errc::certificate_verify_failed);
    CHECK(std::string(c.error_text()).find(k.reason) != std::string::npos);
    CHECK_FALSE(c.is_open());
    // The server hears the client's alert and reports it.
    CHECK(reports.wait_first().find("alert") != std::string::npos);
  }
}

TEST_CASE("a client that requires TLS 1.3 fails against a TLS 1.2 server, saying so" * doctest::timeout(30)) {
  PythonPeer server("server " + peer_files() + " --max-tls12");
  const int port = server.port();
  auto ctx = client_context();
  ctx.set_min_version(sockpat::TlsVersion::tls1_3);
  std::error_code ec;
  auto c = TlsConnection<sockpat::Tcp>::connect("localhost", port, ctx, 10s, ec);
  CHECK(ec == tls_errc::handshake_failed);
  CHECK(std::string(c.error_text()).find("protocol version") != std::string::npos);
  CHECK(server.line().rfind("error", 0) == 0);
}

TEST_CASE("a plaintext client gets a clear error and the server serves the next client" * doctest::timeout(30)) {
  Reports reports;
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, server_context(), echo, reports.options());
  server.start();
  const int port = server.local_endpoint().port();
  {
    auto plain = sockpat::TcpConnection::connect({"127.0.0.1", port}, 5s);
    plain.write_all("GET / HTTP/1.0\r\n\r\n", 5s);
    std::array<char, 64> buf{};
    std::error_code ec;
    CHECK(plain.read_some(buf, 5s, ec) == 0);  // closed (end of stream or a reset)
  }
  const auto message = reports.wait_first();
  CHECK(message.find("not TLS") != std::string::npos);
  CHECK(message.find("tls handshake with 127.0.0.1:") != std::string::npos);
  PythonPeer plain_python("client --mode plaintext --port " + std::to_string(port));
  CHECK(plain_python.line() == "ok closed");
  auto c = TlsConnection<sockpat::Tcp>::connect("localhost", port, client_context(), 10s);
  c.write_all("next", 5s);
  std::array<char, 4> got{};
  c.read_exactly(got, 5s);
  CHECK(std::string(got.data(), 4) == "next");
  c.shutdown(5s);
  CHECK(server.stats().handler_errors == 2);
}

TEST_CASE("a TLS client of a plaintext server fails with not_tls" * doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  std::thread plain([&] {
    auto c = listener.accept(10s);
    c.write_all("HTTP/1.0 400 Bad Request\r\n\r\n", 5s);
  });
  std::error_code ec;
  auto c = TlsConnection<sockpat::Tcp>::connect("127.0.0.1", listener.local_endpoint().port(), client_context(), 10s, ec);
  plain.join();
  CHECK(ec == tls_errc::not_tls);
  CHECK(std::string(c.error_text()).find("not TLS") != std::string::npos);
}

TEST_CASE("a client that stops halfway through the handshake is dropped at the handshake deadline" *
          doctest::timeout(30)) {
  sockpat::TlsOptions tls;
  tls.handshake_timeout = 300ms;
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, server_context(), echo, {}, tls);
  server.start();
  PythonPeer stalled("client --mode stall --port " + std::to_string(server.local_endpoint().port()));
  const auto line = stalled.line();
  REQUIRE_MESSAGE(line.rfind("ok dropped after ", 0) == 0, line);
  const double after = std::stod(line.substr(17));
  CHECK(after >= 0.25);
  CHECK(after < 5.0);
  // Counted as a timeout, not reported as a failure.
  for (int i = 0; i < 500 && server.stats().timed_out == 0; ++i) std::this_thread::yield();
  CHECK(server.stats().handler_errors == 0);
}

TEST_CASE("64 MiB are echoed byte-exact" * doctest::timeout(120)) {
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, server_context(), echo);
  server.start();
  auto c = TlsConnection<sockpat::Tcp>::connect("localhost", server.local_endpoint().port(), client_context(), 10s);
  constexpr std::size_t total = 64u << 20;
  constexpr std::size_t chunk = 64 * 1024;
  std::vector<std::byte> back(chunk);
  const auto block = pattern(chunk + 251, 3);
  bool same = true;
  for (std::size_t at = 0; at < total && same; at += chunk) {
    const auto piece = std::span<const std::byte>(block).subspan(at / chunk % 251, chunk);
    c.write_all(piece, 20s);
    c.read_exactly(back, 20s);
    same = std::equal(back.begin(), back.end(), piece.begin());
  }
  CHECK(same);
  c.shutdown(5s);
}

TEST_CASE("a peer that closes without close_notify gives the truncation error; close_notify gives 0" *
          doctest::timeout(30)) {
  std::atomic<bool> notify{false};
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, server_context(), [&](TlsConnection<sockpat::Tcp>& tls) {
    tls.write_all("partial", 5s);
    if (notify) tls.shutdown(2s);
    tls.close();
  });
  server.start();
  const int port = server.local_endpoint().port();
  std::array<char, 7> got{};
  {
    auto c = TlsConnection<sockpat::Tcp>::connect("localhost", port, client_context(), 10s);
    c.read_exactly(got, 5s);
    CHECK_THROWS_WITH_AS(c.read_some(got, 5s), doctest::Contains("without close_notify"), std::system_error);
  }
  {
    auto c = TlsConnection<sockpat::Tcp>::connect("localhost", port, client_context(), 10s);
    c.read_exactly(got, 5s);
    std::error_code ec;
    CHECK(c.read_some(got, 5s, ec) == 0);
    CHECK(ec == tls_errc::truncated);
    CHECK(ec != sockpat::errc::end_of_stream);
  }
  {
    PythonPeer python_server("server " + peer_files() + " --mode truncate");
    auto c = TlsConnection<sockpat::Tcp>::connect("localhost", python_server.port(), client_context(), 10s);
    c.read_exactly(got, 5s);
    std::error_code ec;
    CHECK(c.read_some(got, 5s, ec) == 0);
    CHECK(ec == tls_errc::truncated);
  }
  notify = true;
  {
    auto c = TlsConnection<sockpat::Tcp>::connect("localhost", port, client_context(), 10s);
    c.read_exactly(got, 5s);
    std::error_code ec;
    CHECK(c.read_some(got, 5s, ec) == 0);
    CHECK_FALSE(ec);
    CHECK(c.read_some(got, 5s) == 0);  // and stays at its end
  }
}

TEST_CASE("shutdown against a peer that never answers ends at its deadline" * doctest::timeout(30)) {
  std::promise<void> done;
  auto finished = done.get_future().share();
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, server_context(), [finished](TlsConnection<sockpat::Tcp>& tls) {
    (void)finished.wait_for(20s);  // holds the connection open, reading nothing
    tls.close();
  });
  server.start();
  const int port = server.local_endpoint().port();
  auto c = TlsConnection<sockpat::Tcp>::connect("localhost", port, client_context(), 10s);
  auto c2 = TlsConnection<sockpat::Tcp>::connect("localhost", port, client_context(), 10s);
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(c.shutdown(200ms), doctest::Contains("tls shutdown with 127.0.0.1"), std::system_error);
  std::error_code ec;
  c2.shutdown(200ms, ec);
  CHECK(ec == std::errc::timed_out);
  CHECK(std::chrono::steady_clock::now() - start < 3s);
  done.set_value();
}

TEST_CASE("client certificates: required by the server, verified, and named" * doctest::timeout(30)) {
  auto ctx = server_context();
  ctx.add_ca_file(cert("ca.pem")).verify_clients();
  std::promise<std::string> subject;
  Reports reports;
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, std::move(ctx), [&](TlsConnection<sockpat::Tcp>& tls) {
    subject.set_value(tls.peer_subject());
    echo(tls);
  }, reports.options());
  server.start();
  const int port = server.local_endpoint().port();
  {
    // Without a certificate: TLS 1.3 ends the client's handshake first, so the refusal comes as an
    // alert on the first read.
    std::error_code ec;
    auto c = TlsConnection<sockpat::Tcp>::connect("localhost", port, client_context(), 10s, ec);
    if (!ec) {
      c.write_all("x", 5s, ec);
      std::array<char, 1> got{};
      if (!ec) (void)c.read_some(got, 5s, ec);
    }
    CHECK(ec);
    CHECK(std::string(c.error_text()).find("certificate required") != std::string::npos);
    CHECK(reports.wait_first().find("peer did not return a certificate") != std::string::npos);
  }
  auto with_cert = client_context();
  with_cert.use_certificate_files(cert("client.pem"), cert("client.key"));
  auto c = TlsConnection<sockpat::Tcp>::connect("localhost", port, with_cert, 10s);
  c.write_all("y", 5s);
  std::array<char, 1> got{};
  CHECK(c.read_some(got, 5s) == 1);
  c.shutdown(5s);
  auto f = subject.get_future();
  REQUIRE(f.wait_for(5s) == std::future_status::ready);
  CHECK(f.get().find("CN=sockpat-test-client") != std::string::npos);
}

TEST_CASE("ALPN: the server picks its first choice among the client's" * doctest::timeout(30)) {
  auto sctx = server_context();
  sctx.set_alpn({"h2", "http/1.1"});
  std::promise<std::string> chosen;
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, std::move(sctx), [&](TlsConnection<sockpat::Tcp>& tls) {
    chosen.set_value(std::string(tls.alpn()));
    echo(tls);
  });
  server.start();
  auto ctx = client_context();
  ctx.set_alpn({"http/1.1", "spdy/1"});
  auto c = TlsConnection<sockpat::Tcp>::connect("localhost", server.local_endpoint().port(), ctx, 10s);
  CHECK(c.alpn() == "http/1.1");
  c.shutdown(5s);
  auto f = chosen.get_future();
  REQUIRE(f.wait_for(5s) == std::future_status::ready);
  CHECK(f.get() == "http/1.1");
  CHECK_THROWS_AS(ctx.set_alpn({""}), std::invalid_argument);
}

TEST_CASE("a context is configured in one expression on a temporary, and works" * doctest::timeout(30)) {
  // On a temporary the setters return the context itself (by value); on a variable, a reference.
  static_assert(std::is_same_v<decltype(TlsContext::client().add_ca_file("ca.pem")), TlsContext>);
  static_assert(std::is_same_v<decltype(std::declval<TlsContext&>().add_ca_file("ca.pem")), TlsContext&>);
  auto sctx = TlsContext::server(cert("server.pem"), cert("server.key")).add_ca_file(cert("ca.pem")).verify_clients().set_alpn({"h2"});
  CHECK(sctx.is_server());
  CHECK(sctx.verifies_peer());
  std::promise<std::string> subject;
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, std::move(sctx), [&](TlsConnection<sockpat::Tcp>& tls) {
    subject.set_value(tls.peer_subject());
    echo(tls);
  });
  server.start();
  const auto cctx = TlsContext::client()
                        .add_ca_file(cert("ca.pem"))
                        .use_certificate_files(cert("client.pem"), cert("client.key"))
                        .set_alpn({"h2", "http/1.1"})
                        .set_min_version(sockpat::TlsVersion::tls1_3);
  auto c = TlsConnection<sockpat::Tcp>::connect("localhost", server.local_endpoint().port(), cctx, 10s);
  CHECK(c.alpn() == "h2");
  CHECK(c.protocol_version() == "TLSv1.3");
  c.write_all("z", 5s);
  std::array<char, 1> got{};
  CHECK(c.read_some(got, 5s) == 1);
  CHECK(got[0] == 'z');
  c.shutdown(5s);
  auto f = subject.get_future();
  REQUIRE(f.wait_for(5s) == std::future_status::ready);
  CHECK(f.get().find("CN=sockpat-test-client") != std::string::npos);
  // A failing setter on a temporary still throws, naming what failed.
  CHECK_THROWS_WITH_AS(TlsContext::client().add_ca_file("/nonexistent/ca.pem"), doctest::Contains("/nonexistent/ca.pem"),
                       std::system_error);
}

TEST_CASE("insecure_no_verify connects to a self-signed server; a verifying client does not" * doctest::timeout(30)) {
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, server_context("self_signed"), echo, [] {
    sockpat::ServerOptions o;
    o.on_error = [](std::exception_ptr, const sockpat::Endpoint&) {};
    return o;
  }());
  server.start();
  const int port = server.local_endpoint().port();
  auto open = TlsContext::client();
  open.insecure_no_verify();
  CHECK_FALSE(open.verifies_peer());
  auto c = TlsConnection<sockpat::Tcp>::connect("localhost", port, open, 10s);
  c.shutdown(5s);
  std::error_code ec;
  (void)TlsConnection<sockpat::Tcp>::connect("localhost", port, TlsContext::client(), 10s, ec);
  CHECK(ec == tls_errc::certificate_verify_failed);
}

TEST_CASE("a verifying client without a server name is refused at construction; verify_chain_only opts out" *
          doctest::timeout(30)) {
  // A certificate for other.example from the trusted CA: checking the chain alone would accept it.
  PythonPeer server("server --cert " + cert("other.pem") + " --key " + cert("other.key"));
  auto conn = sockpat::TcpConnection::connect({"127.0.0.1", server.port()}, 5s);
  const auto ctx = client_context();
  CHECK(ctx.checks_host_name());
  CHECK_THROWS_WITH_AS(sockpat::TlsTcpConnection(std::move(conn), ctx), doctest::Contains("needs the server's name"),
                       std::system_error);
  CHECK(conn.is_open());  // a connection the engine refused is left to its owner, with its peer
  CHECK_THROWS_WITH_AS((void)sockpat::TlsTcpConnection::client(std::move(conn), ctx, "", 5s),
                       doctest::Contains("verify_chain_only"), std::system_error);
  std::error_code ec;
  auto refused = sockpat::TlsTcpConnection::client(std::move(conn), ctx, "", 5s, ec);
  CHECK(ec == tls_errc::bad_configuration);
  CHECK(std::string(refused.error_text()).find("needs the server's name") != std::string::npos);
  CHECK_FALSE(refused.is_open());
  REQUIRE(conn.is_open());
  // The opt-out: the chain is still checked, the name is not.
  auto chain_only = client_context();
  chain_only.verify_chain_only();
  CHECK_FALSE(chain_only.checks_host_name());
  auto c = sockpat::TlsTcpConnection::client(std::move(conn), chain_only, "", 5s);
  c.write_all("pinned", 5s);
  std::array<char, 6> got{};
  c.read_exactly(got, 5s);
  CHECK(std::string(got.data(), got.size()) == "pinned");
  c.shutdown(5s);
  CHECK(server.line().rfind("ok 6 ", 0) == 0);
}

TEST_CASE("a TLS session that cannot be made is reported with the client's address, and its connection closed" *
          doctest::timeout(30)) {
  auto ctx = server_context();
  // OpenSSL's SSL_new then fails: a CT check and a custom handler for its extension (18) clash.
  REQUIRE(SSL_CTX_enable_ct(ctx.native_handle(), SSL_CT_VALIDATION_PERMISSIVE) == 1);
  REQUIRE(SSL_CTX_add_custom_ext(ctx.native_handle(), 18, SSL_EXT_TLS1_3_CERTIFICATE, nullptr, nullptr, nullptr,
                                 nullptr, nullptr) == 1);
  std::promise<std::pair<std::string, sockpat::Endpoint>> reported;
  std::atomic<bool> told{false};
  sockpat::ServerOptions options;
  options.on_error = [&](std::exception_ptr e, const sockpat::Endpoint& peer) {
    if (told.exchange(true)) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      reported.set_value({x.what(), peer});
    }
  };
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, std::move(ctx), echo, options);
  server.start();
  auto client = sockpat::TcpConnection::connect({"127.0.0.1", server.local_endpoint().port()}, 5s);
  client.write_all("\x16", 5s);  // a ClientHello begins: a worker takes the client (hello_timeout)
  auto f = reported.get_future();
  REQUIRE(f.wait_for(10s) == std::future_status::ready);
  const auto [message, peer] = f.get();
  CHECK(message.find("tls session") != std::string::npos);
  CHECK(peer == client.local_endpoint());  // the client, not an empty address
  std::array<char, 1> got{};
  std::error_code ec;
  CHECK(client.read_some(got, 5s, ec) == 0);  // the server closed it (an end, or a reset: our byte was unread)
  CHECK(ec != std::errc::timed_out);
  CHECK(server.stats().handler_errors >= 1);
}

TEST_CASE("host names match DNS SANs only, IP literals IP SANs only; a trailing dot is dropped, a NUL refused" *
          doctest::timeout(60)) {
  struct Case {
    const char* cert;
    const char* host;
    const char* refusal;  // what the error says, or nullptr: the handshake succeeds
    const char* sni;      // the SNI the server saw, when it succeeds
  };
  using namespace std::string_literals;
  const std::string nul_host = "localhost\0.evil.example"s;
  for (const auto& k : {Case{"cn_only", "localhost", "hostname mismatch", nullptr},
                        Case{"ip_only", "localhost", "hostname mismatch", nullptr},
                        Case{"ip_only", "127.0.0.1", nullptr, "-"},
                        Case{"server", "127.0.0.1", nullptr, "-"},
                        Case{"ip_only", "::1", "IP address mismatch", nullptr},
                        Case{"server", "localhost.", nullptr, "localhost"},
                        Case{"server", "localhost", nullptr, "localhost"},
                        Case{"server", ".localhost", "not a host name", nullptr},
                        Case{"server", nul_host.c_str(), "NUL", nullptr}}) {
    const std::string host = k.host == nul_host.c_str() ? nul_host : std::string(k.host);
    const std::string name = k.cert;
    CAPTURE(name);
    CAPTURE(host);
    PythonPeer server("server --report-sni --cert " + cert(std::string(k.cert) + ".pem") + " --key " +
                      cert(std::string(k.cert) + ".key"));
    auto conn = sockpat::TcpConnection::connect({"127.0.0.1", server.port()}, 5s);
    const auto ctx = client_context();
    if (k.refusal != nullptr) {
      CHECK_THROWS_WITH_AS((void)sockpat::TlsTcpConnection::client(std::move(conn), ctx, host, 5s),
                           doctest::Contains(k.refusal), std::system_error);
      continue;
    }
    auto c = sockpat::TlsTcpConnection::client(std::move(conn), ctx, host, 5s);
    CHECK(server.line() == std::string("sni ") + k.sni);
    c.write_all("x", 5s);
    std::array<char, 1> got{};
    CHECK(c.read_some(got, 5s) == 1);
    c.shutdown(5s);
    CHECK(server.line().rfind("ok 1 ", 0) == 0);
  }
}

TEST_CASE("contexts load certificates from memory, and report a missing file in both forms") {
  auto read = [](const std::string& path) {
    std::string s;
    FILE* f = std::fopen(path.c_str(), "rb");
    REQUIRE(f != nullptr);
    std::array<char, 4096> buf{};
    while (const auto n = std::fread(buf.data(), 1, buf.size(), f)) s.append(buf.data(), n);
    std::fclose(f);
    return s;
  };
  auto server = TlsContext::server_from_pem(read(cert("server.pem")), read(cert("server.key")));
  CHECK(server.is_server());
  auto client = TlsContext::client();
  client.add_ca_pem(read(cert("ca.pem")));
  CHECK(client.verifies_peer());
  CHECK_THROWS_WITH_AS((void)TlsContext::server("/nonexistent.pem", "/nonexistent.key"),
                       doctest::Contains("/nonexistent.pem"), std::system_error);
  std::error_code ec;
  client.add_ca_file("/nonexistent.pem", ec);
  CHECK(ec == tls_errc::bad_configuration);
  CHECK_FALSE(client.error_text().empty());
  client.add_ca_pem("not PEM", ec);
  CHECK(ec == tls_errc::bad_configuration);
  CHECK_THROWS_AS((void)TlsContext::server_from_pem(read(cert("server.pem")), read(cert("other.key"))), std::system_error);
}

TEST_CASE("the engine takes no more input than its bound and calls garbage not TLS") {
  auto ctx = server_context();
  sockpat::detail::TlsEngine engine(ctx, {});
  std::vector<std::byte> junk(200 * 1024, std::byte{'G'});
  const auto taken = engine.feed(junk);
  CHECK(taken == sockpat::detail::TlsEngine::input_limit);
  CHECK(engine.feed(junk) == 0);
  CHECK(engine.input_room() == 0);
  std::error_code ec;
  CHECK(engine.handshake(ec) == sockpat::detail::TlsStatus::error);
  CHECK(ec == tls_errc::not_tls);
  CHECK(engine.output().empty());
}

TEST_CASE("a peer that requests key updates and never reads cannot grow the engine's output past its bound") {
  const auto server_ctx = server_context();
  const auto client_ctx = client_context();
  sockpat::detail::TlsEngine server(server_ctx, {});
  sockpat::detail::TlsEngine client(client_ctx, "localhost");
  auto pass = [](sockpat::detail::TlsEngine& from, sockpat::detail::TlsEngine& to) {
    from.consume_output(to.feed(from.output()));
  };
  std::error_code ec;
  for (int i = 0; i < 10 && !(client.handshake_done() && server.handshake_done()); ++i) {
    (void)client.handshake(ec);
    pass(client, server);
    (void)server.handshake(ec);
    pass(server, client);
  }
  REQUIRE(server.handshake_done());
  std::array<std::byte, sockpat::detail::TlsEngine::max_record> plain{};
  std::size_t received = 0;
  bool held_back = false;
  const std::array<std::byte, 1> one{std::byte{'k'}};
  for (int i = 0; i < 5000; ++i) {
    // Each request makes OpenSSL answer with a KeyUpdate of its own, while reading.
    REQUIRE(SSL_key_update(client.native_handle(), SSL_KEY_UPDATE_REQUESTED) == 1);
    std::size_t n = 0;
    REQUIRE(client.write(one, n, ec) == sockpat::detail::TlsStatus::ok);
    pass(client, server);
    for (int j = 0; j < 4; ++j) {
      const auto status = server.read(plain, n, ec);
      REQUIRE(status != sockpat::detail::TlsStatus::error);
      received += n;
      held_back = held_back || status == sockpat::detail::TlsStatus::want_write;
      if (status != sockpat::detail::TlsStatus::ok) break;
    }
    // The server never sends: its output must stay bounded (one record's answer past the limit).
    REQUIRE(server.output().size() <= sockpat::detail::TlsEngine::output_limit + 1024);
  }
  CHECK(held_back);  // read() said "send first" (want_write) instead of growing the output
  CHECK(received > 0);
}

TEST_CASE("the error category names every code") {
  for (int i = 1; i <= 6; ++i) CHECK(sockpat::tls_category().message(i) != "unknown TLS error");
  CHECK(std::string(sockpat::make_error_code(tls_errc::truncated).category().name()) == "sockpat.tls");
}

TEST_CASE("idle connects cannot stall a fixed pool: a TLS client is served at once, the silent ones closed and counted" *
          doctest::timeout(40)) {
  // A pool of 2 workers, and twice as many clients that connect over TCP and send nothing (a
  // slowloris on the handshake): they must not hold the workers for the handshake_timeout.
  Reports reports;
  auto options = reports.options();
  options.strategy = sockpat::Strategy::thread_pool;
  options.threads = 2;
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, server_context(), echo, options);
  server.start();
  const int port = server.local_endpoint().port();
  std::vector<sockpat::TcpConnection> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(sockpat::TcpConnection::connect({"127.0.0.1", port}, 5s));
  const auto accepted_by = std::chrono::steady_clock::now() + 5s;
  while (server.stats().accepted < 4 && std::chrono::steady_clock::now() < accepted_by) std::this_thread::yield();
  REQUIRE(server.stats().accepted == 4);

  const auto start = std::chrono::steady_clock::now();
  auto c = TlsConnection<sockpat::Tcp>::connect("localhost", port, client_context(), 2s);
  c.write_all("served", 2s);
  std::array<char, 6> got{};
  c.read_exactly(got, 2s);
  CHECK(std::string(got.data(), got.size()) == "served");
  c.shutdown(2s);
  const auto served_in = std::chrono::steady_clock::now() - start;
  CHECK(served_in < 2s);

  // The silent ones are closed at the hello_timeout (default 3 s), counted, and not reported.
  for (auto& connection : idle) {
    std::array<char, 1> buf{};
    std::error_code ec;
    CHECK(connection.read_some(buf, 10s, ec) == 0);
    CHECK(ec != std::errc::timed_out);
  }
  const auto counted_by = std::chrono::steady_clock::now() + 5s;
  while (server.stats().silent < 4 && std::chrono::steady_clock::now() < counted_by) std::this_thread::yield();
  CHECK(server.stats().silent == 4);
  CHECK(server.stats().handler_errors == 0);
  CHECK(server.stats().timed_out == 0);
  std::lock_guard lock(reports.mutex);
  CHECK(reports.messages.empty());
}

TEST_CASE("a client that connects, waits, then begins its handshake within hello_timeout is served" *
          doctest::timeout(30)) {
  sockpat::ServerOptions options;
  options.strategy = sockpat::Strategy::thread_pool;
  options.threads = 1;
  sockpat::TlsTcpServer server({"127.0.0.1", 0}, server_context(), echo, options);
  server.start();
  auto tcp = sockpat::TcpConnection::connect({"127.0.0.1", server.local_endpoint().port()}, 5s);
  // Accepted, and waiting for its first byte on the accepting thread.
  const auto accepted_by = std::chrono::steady_clock::now() + 5s;
  while (server.stats().accepted < 1 && std::chrono::steady_clock::now() < accepted_by) std::this_thread::yield();
  REQUIRE(server.stats().accepted == 1);
  auto c = TlsConnection<sockpat::Tcp>::client(std::move(tcp), client_context(), "localhost", 5s);
  c.write_all("late", 5s);
  std::array<char, 4> got{};
  c.read_exactly(got, 5s);
  CHECK(std::string(got.data(), got.size()) == "late");
  c.shutdown(5s);
  CHECK(server.stats().silent == 0);
}

}  // TEST_SUITE

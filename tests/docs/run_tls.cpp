// Runs the snippets of docs/guides/tls.md marked `<!-- snippet: run NAME -->` against a real TLS
// peer on loopback: the guide's code as a user pastes it, not a copy of it. The header is made
// from the guide at build time (tests/docs/check_snippets.py --emit). The guide's files (ca.pem,
// server.pem, server.key) are the ones tests/tls/make_certs.py made for this run: the tests work
// in that directory (SOCKPAT_TLS_CERTS, set by the tls_certs fixture), as a user's program works
// next to its files.
#include "tls.snippets.hpp"

#include <doctest/doctest.h>

#include <array>         // std::array
#include <chrono>        // std::chrono_literals
#include <cstdlib>       // std::getenv
#include <filesystem>    // std::filesystem::current_path
#include <future>        // std::promise
#include <stdexcept>     // std::runtime_error
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code

using namespace std::chrono_literals;

namespace {

void in_certificates_directory() {
  const char* dir = std::getenv("SOCKPAT_TLS_CERTS");
  if (dir == nullptr) throw std::runtime_error("SOCKPAT_TLS_CERTS is not set: run through ctest (fixture tls_certs)");
  std::filesystem::current_path(dir);
}

sockpat::TlsContext trusting_client() { return sockpat::TlsContext::client().add_ca_file("ca.pem"); }

}  // namespace

TEST_SUITE("docs: TLS guide") {
TEST_CASE("'A client': it verifies localhost against ca.pem, sends hello, reads the answer and ends with close_notify" *
          doctest::timeout(60)) {
  in_certificates_directory();
  std::promise<std::string> seen;
  sockpat::TlsTcpServer server(sockpat::Endpoint("127.0.0.1", 0), sockpat::TlsContext::server("server.pem", "server.key"),
                               [&](sockpat::TlsTcpConnection& tls) {
                                 std::array<char, 5> hello{};
                                 tls.read_exactly(hello, 5s);
                                 tls.write_all("hello, client", 5s);
                                 std::array<char, 16> more{};
                                 const auto n = tls.read_some(more, 10s);  // 0: the client's close_notify
                                 tls.shutdown(5s);
                                 seen.set_value(std::string(hello.data(), hello.size()) + (n == 0 ? ", then close_notify" : ", then more"));
                               });
  server.start();
  snippet_client::snippet(server.local_endpoint().port());  // "localhost": ::1 refuses, 127.0.0.1 answers
  auto got = seen.get_future();
  REQUIRE(got.wait_for(10s) == std::future_status::ready);
  CHECK(got.get() == "hello, then close_notify");
  server.stop();
  CHECK(server.stats().handler_errors == 0);
}

TEST_CASE("'Which names match': verify_chain_only accepts a certificate of the CA for another name, not one of an unknown CA" *
          doctest::timeout(60)) {
  in_certificates_directory();
  auto handshake_with = [](const std::string& certificate) {
    sockpat::ServerOptions quiet;
    quiet.on_error = [](std::exception_ptr, const sockpat::Endpoint&) {};  // the client leaves without close_notify
    sockpat::TlsTcpServer server(sockpat::Endpoint("127.0.0.1", 0),
                                 sockpat::TlsContext::server(certificate + ".pem", certificate + ".key"),
                                 [](sockpat::TlsTcpConnection&) {}, quiet);
    server.start();
    snippet_chain_only::snippet(sockpat::TcpConnection::connect(server.local_endpoint(), 5s));
  };
  CHECK_NOTHROW(handshake_with("other"));  // other.example, signed by ca.pem: the name is not checked
  try {
    handshake_with("rogue");  // localhost, signed by a CA that ca.pem is not
    FAIL("a certificate of an unknown CA was accepted");
  } catch (const std::system_error& e) {
    CHECK(e.code() == sockpat::tls_errc::certificate_verify_failed);
  }
}

TEST_CASE("'A server': the echo handler echoes over TLS, ends with close_notify, and a plaintext client does not stop it" *
          doctest::timeout(60)) {
  in_certificates_directory();
  sockpat::ServerOptions quiet;
  quiet.on_error = [](std::exception_ptr, const sockpat::Endpoint&) {};  // the plaintext client's failure
  sockpat::TlsTcpServer server(sockpat::Endpoint("127.0.0.1", 0), sockpat::TlsContext::server("server.pem", "server.key"),
                               snippet_server::echo, quiet);
  server.start();
  const auto port = server.local_endpoint().port();
  const auto context = trusting_client();
  auto exchange = [&](std::string_view message) {
    auto tls = sockpat::TlsTcpConnection::connect("127.0.0.1", port, context, 10s);
    tls.write_all(message, 5s);
    std::string back(message.size(), '\0');
    tls.read_exactly(std::span<char>(back.data(), back.size()), 5s);
    tls.shutdown(5s);  // the handler's read_some returns 0, it answers our close_notify
    return back;
  };
  CHECK(exchange("hello over TLS") == "hello over TLS");
  {
    auto plain = sockpat::TcpConnection::connect(server.local_endpoint(), 5s);  // not TLS: refused, reported
    plain.write_all("GET / HTTP/1.0\r\n\r\n", 5s);
    std::array<char, 256> buf{};
    std::error_code ec;
    for (int i = 0; i < 100 && !ec; ++i) {
      if (plain.read_some(buf, 10s, ec) == 0) break;  // closed by the server (an alert may come first)
    }
    CHECK(ec != std::errc::timed_out);
  }
  CHECK(exchange(std::string(100000, 'x')) == std::string(100000, 'x'));  // it goes on, many records
  server.stop();
  const auto stats = server.stats();
  CHECK(stats.accepted == 3);
  CHECK(stats.handler_errors == 1);  // the plaintext client's handshake
}

TEST_CASE("'Async streams over TLS': the echo handler echoes each chunk and closes with close_notify" *
          doctest::timeout(60)) {
  in_certificates_directory();
  sockpat::EventLoop loop;
  loop.run_until_complete([]() -> sockpat::Task<void> {
    auto server = co_await sockpat::start_server(snippet_async_server::echo, "127.0.0.1", 0,
                                                 sockpat::TlsContext::server("server.pem", "server.key"));
    const auto context = trusting_client();
    auto [reader, writer] = co_await sockpat::open_connection("localhost", server.local_endpoint().port(), context, 10s);
    for (int i = 0; i < 50; ++i) {
      const std::string line = "line " + std::to_string(i) + "\n";
      co_await writer.write(line);
      CHECK(co_await sockpat::wait_for(reader.read_line(), 5s) == line);
    }
    // Our close_notify: the handler's read_chunk returns empty and it closes too. Without its
    // close_notify, wait_closed would wait out StreamOptions::close_timeout (10 s).
    const auto start = std::chrono::steady_clock::now();
    writer.close();
    co_await sockpat::wait_for(writer.wait_closed(), 20s);
    CHECK(std::chrono::steady_clock::now() - start < 5s);
    for (int i = 0; i < 500 && server.stats().active > 0; ++i) co_await sockpat::sleep(10ms);
    server.close();
    co_await server.wait_closed();
    const auto stats = server.stats();
    CHECK(stats.handler_errors == 0);
    CHECK(stats.canceled == 0);  // it ended by itself, before the close
  }());
}
}

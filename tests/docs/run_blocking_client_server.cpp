// Runs the snippets of docs/guides/blocking-client-server.md marked `<!-- snippet: run NAME -->`
// against a real peer on loopback: the guide's code as a user pastes it, not a copy of it. The
// header is made from the guide at build time (tests/docs/check_snippets.py --emit).
#include "blocking-client-server.snippets.hpp"

#include <doctest/doctest.h>

#include <array>         // std::array
#include <chrono>        // std::chrono_literals
#include <future>        // std::async
#include <span>          // std::span
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code
#include <vector>        // std::vector

using namespace std::chrono_literals;

namespace {

// Everything a connection sends until it closes, bounded in count and time.
std::string read_to_end(sockpat::TcpConnection& conn) {
  std::string got;
  std::array<char, 4096> buf{};
  for (int i = 0; i < 10000; ++i) {
    const auto n = conn.read_some(buf, 10s);
    if (n == 0) break;
    got.append(buf.data(), n);
  }
  return got;
}

// A peer on loopback for the client snippets: accepts one client, reads what it sends up to
// `expect` bytes, answers `reply`, and returns what it read.
struct OneShotServer {
  sockpat::TcpListener listener = sockpat::TcpListener::bind(sockpat::Endpoint("127.0.0.1", 0));
  std::uint16_t port = listener.local_endpoint().port();
  std::future<std::string> received;

  OneShotServer(std::size_t expect, std::string reply) {
    received = std::async(std::launch::async, [this, expect, reply] {
      auto conn = listener.accept(10s);
      std::string got(expect, '\0');
      if (expect > 0) conn.read_exactly(std::span<char>(got.data(), got.size()), 10s);
      conn.write_all(reply, 10s);
      conn.shutdown();
      return got + read_to_end(conn);  // and whatever came after, until the client closed
    });
  }
};

}  // namespace

TEST_SUITE("docs: blocking client and server guide") {
TEST_CASE("'The server': the echo handler, served by a TcpServer, echoes concurrent clients while a silent one waits" *
          doctest::timeout(60)) {
  sockpat::TcpServer server(sockpat::Endpoint("127.0.0.1", 0), snippet_server::echo);
  server.start();
  const auto at = server.local_endpoint();

  // A silent client holds a thread of its own, not the others (Strategy::elastic).
  auto silent = sockpat::TcpConnection::connect(at, 5s);
  std::vector<std::future<std::string>> clients;
  std::vector<std::string> sent;
  for (int c = 0; c < 4; ++c) {
    std::string payload;
    for (int i = 0; i < 2000; ++i) payload += "client " + std::to_string(c) + " line " + std::to_string(i) + "\n";
    sent.push_back(payload);
    clients.push_back(std::async(std::launch::async, [at, payload] {
      auto conn = sockpat::TcpConnection::connect(at, 5s);
      conn.write_all(payload, 10s);
      conn.shutdown();  // the handler's read_some returns 0: it returns, the server closes
      return read_to_end(conn);
    }));
  }
  for (std::size_t c = 0; c < clients.size(); ++c) CHECK(clients[c].get() == sent[c]);

  auto reset = sockpat::TcpConnection::connect(at, 5s);  // a reset is a normal ending, not a failure
  reset.write_all("x", 5s);
  reset.set_linger(0s);
  reset.close();
  {
    auto after = sockpat::TcpConnection::connect(at, 5s);  // and the server serves on
    after.write_all("after the reset\n", 5s);
    after.shutdown();
    CHECK(read_to_end(after) == "after the reset\n");
  }

  server.stop();  // the silent client's read is canceled; the server returns
  const auto stats = server.stats();
  CHECK(stats.accepted >= 6);  // the reset one too, unless the kernel dropped it before accept
  CHECK(stats.handler_errors == 0);
  std::array<char, 16> buf{};
  std::error_code ec;
  CHECK(silent.read_some(buf, 5s, ec) == 0);  // the stop closed it: end of stream or a reset
  CHECK(ec != std::errc::timed_out);
}

TEST_CASE("'The client': connects to localhost's port, says hello, prints the answer" * doctest::timeout(30)) {
  OneShotServer peer(14, "Hello, client!");
  snippet_client::snippet(peer.port);
  CHECK(peer.received.get() == "Hello, server!");
}

TEST_CASE("'The client': connect_with_retry connects once the server is there" * doctest::timeout(30)) {
  OneShotServer peer(0, "");
  snippet_retry::snippet(peer.port);
  CHECK(peer.received.get() == "");  // a connection was accepted, and closed by the snippet
}

TEST_CASE("'Connecting by name': ConnectOptions connect to localhost, IPv4 first, and resolve it" *
          doctest::timeout(30)) {
  OneShotServer peer(0, "");
  snippet_connect_options::snippet(peer.port);
  CHECK(peer.received.get() == "");
}

TEST_CASE("'Lines and frames': the framed loop answers ok to every line until the peer closes" * doctest::timeout(30)) {
  auto listener = sockpat::TcpListener::bind(sockpat::Endpoint("127.0.0.1", 0));
  auto client = sockpat::TcpConnection::connect(listener.local_endpoint(), 5s);
  auto conn = listener.accept(5s);
  auto served = std::async(std::launch::async, [&] { snippet_framed::snippet(conn); });
  std::string lines;
  for (int i = 0; i < 50; ++i) lines += "line " + std::to_string(i) + "\n";
  client.write_all(lines, 5s);
  client.shutdown();  // between lines: read_line returns std::nullopt and the loop ends
  REQUIRE(served.wait_for(10s) == std::future_status::ready);
  served.get();
  conn.close();
  std::string expected;
  for (int i = 0; i < 50; ++i) expected += "ok\n";
  CHECK(read_to_end(client) == expected);
}
}

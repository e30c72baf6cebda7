// Runs the snippets of README.md marked `<!-- snippet: run NAME -->` against a real peer on
// loopback: the README's code as a user pastes it, not a copy of it. The header is made from the
// README at build time (tests/docs/check_snippets.py --emit). The snippets' last lines bind or
// connect to the seed's fixed port 1234, so the tests call the functions those lines call
// (ask, serve, handle_client) with a port the OS picked.
#include "readme.snippets.hpp"

#include <doctest/doctest.h>

#include <array>               // std::array
#include <chrono>              // std::chrono_literals
#include <condition_variable>  // std::condition_variable
#include <future>              // std::async
#include <mutex>               // std::mutex
#include <stop_token>          // std::stop_source
#include <string>              // std::string
#include <string_view>         // std::string_view
#include <system_error>        // std::error_code
#include <vector>              // std::vector

using namespace std::chrono_literals;

namespace {

// What a client of the hello server gets back: everything until the server closes.
std::string hello_from(std::uint16_t port) {
  auto conn = sockpat::TcpConnection::connect(sockpat::Endpoint("127.0.0.1", port), 5s);
  conn.write_all("Hello, server!", 5s);
  std::string got;
  std::array<char, 256> buf{};
  for (int i = 0; i < 100; ++i) {  // bounded: the reply is 14 bytes
    const auto n = conn.read_some(buf, 20s);  // the server may first wait 10 s on a silent client
    if (n == 0) break;
    got.append(buf.data(), n);
  }
  return got;
}

// A client that connects and resets the connection (RST, not FIN), having sent `first` if any.
void reset_client(std::uint16_t port, std::string_view first) {
  auto conn = sockpat::TcpConnection::connect(sockpat::Endpoint("127.0.0.1", port), 5s);
  if (!first.empty()) conn.write_all(first, 5s);
  conn.set_linger(0s);  // close() now sends a reset
  conn.close();
}

}  // namespace

TEST_SUITE("docs: README") {
TEST_CASE("side by side, the client: ask() sends its hello to every address of localhost in turn and returns the answer" *
          doctest::timeout(30)) {
  auto listener = sockpat::TcpListener::bind(sockpat::Endpoint("127.0.0.1", 0));
  const auto port = listener.local_endpoint().port();
  auto server = std::async(std::launch::async, [&] {
    auto conn = listener.accept(10s);
    std::array<char, 14> hello{};
    conn.read_exactly(hello, 5s);
    conn.write_all("Hello, client!", 5s);
    return std::string(hello.data(), hello.size());
  });
  // "localhost" as the README writes it: if it resolves to ::1 first, that refuses and the next
  // address (127.0.0.1) answers.
  CHECK(snippet_hello_client::ask("localhost", port) == "Hello, client!");
  CHECK(server.get() == "Hello, server!");
}

TEST_CASE("side by side, the server: serve() answers each client, survives resetting and silent ones, and ends on its stop token" *
          doctest::timeout(60)) {
  auto listener = sockpat::TcpListener::bind(sockpat::Endpoint("127.0.0.1", 0));
  const auto port = listener.local_endpoint().port();
  std::stop_source stop;
  // An exception escaping serve() ends this thread's future, not the process: get() rethrows it.
  auto served = std::async(std::launch::async, [&] { snippet_hello_server::serve(listener, stop.get_token()); });

  CHECK(hello_from(port) == "Hello, client!");

  reset_client(port, "");  // the server's read fails with connection_reset
  CHECK(hello_from(port) == "Hello, client!");

  reset_client(port, "Hello, server!");  // the read may succeed; then the write fails
  CHECK(hello_from(port) == "Hello, client!");

  {
    // A silent client: the server waits its 10 s for it, then closes it and serves the next.
    auto silent = sockpat::TcpConnection::connect(sockpat::Endpoint("127.0.0.1", port), 5s);
    const auto start = std::chrono::steady_clock::now();
    auto next = std::async(std::launch::async, [&] { return hello_from(port); });
    std::array<char, 16> buf{};
    std::error_code ec;
    CHECK(silent.read_some(buf, 20s, ec) == 0);  // closed by the server: end of stream, no bytes
    CHECK_FALSE(ec);
    CHECK(std::chrono::steady_clock::now() - start >= 9s);  // it did wait for the silent one
    CHECK(next.get() == "Hello, client!");
  }

  CHECK(served.wait_for(0s) == std::future_status::timeout);  // still serving
  stop.request_stop();
  REQUIRE(served.wait_for(5s) == std::future_status::ready);  // the stop ends accept at once
  served.get();  // and serve() returned rather than threw
}

TEST_CASE("the asyncio-style server: handle_client answers each client, and a client that resets does not stop the server" *
          doctest::timeout(30)) {
  sockpat::EventLoop loop;
  loop.run_until_complete([]() -> sockpat::Task<void> {
    auto server = co_await sockpat::start_server(snippet_async_hello_server::handle_client, "127.0.0.1", 0);
    const auto port = server.local_endpoint().port();
    auto exchange = [port]() -> sockpat::Task<std::string> {
      auto [reader, writer] = co_await sockpat::open_connection("127.0.0.1", port, 5s);
      co_await writer.write("Hello, server!");
      std::string got;
      for (int i = 0; i < 100; ++i) {
        auto chunk = co_await sockpat::wait_for(reader.read(256), 5s);
        if (chunk.empty()) break;  // the handler closed its writer
        got += chunk;
      }
      co_return got;
    };
    CHECK(co_await exchange() == "Hello, client!");
    {
      auto [reader, writer] = co_await sockpat::open_connection("127.0.0.1", port, 5s);
      writer.abort();  // a reset before the handler's read
    }
    CHECK(co_await exchange() == "Hello, client!");
    CHECK(co_await exchange() == "Hello, client!");
    server.close();
    co_await server.wait_closed();
    CHECK(server.stats().accepted == 4);
  }());
}

TEST_CASE("the mesh node: it joins the member it is given and its broadcast reaches it" * doctest::timeout(60)) {
  std::mutex mutex;
  std::condition_variable arrived;
  std::vector<std::string> got;
  sockpat::PeerCallbacks on;
  on.on_message = [&](const sockpat::PeerMessage& m) {
    std::lock_guard<std::mutex> lock(mutex);
    got.push_back(m.payload);
    arrived.notify_all();
  };
  sockpat::PeerThread member(sockpat::PeerOptions{}, on);  // 127.0.0.1, a port the OS picks
  snippet_mesh_node::snippet(member.local_endpoint());    // joins, waits for it, broadcasts, leaves
  std::unique_lock<std::mutex> lock(mutex);
  CHECK(arrived.wait_for(lock, 10s, [&] { return !got.empty(); }));
  CHECK(got == std::vector<std::string>{"hello, mesh"});
}
}

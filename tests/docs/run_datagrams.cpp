// Runs the snippets of docs/guides/datagrams.md marked `<!-- snippet: run NAME -->` on loopback:
// the guide's code as a user pastes it. The header is made from the guide at build time
// (tests/docs/check_snippets.py --emit).
#include "datagrams.snippets.hpp"

#include <doctest/doctest.h>

#include <array>         // std::array
#include <chrono>        // std::chrono_literals
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::errc

using namespace std::chrono_literals;

TEST_SUITE("docs: datagrams guide") {
TEST_CASE("'Send and receive' runs: the server gets the ping within its 5 s and answers it" * doctest::timeout(30)) {
  // The snippet throws timed_out if the datagram does not arrive, or the OS error of a send.
  snippet_exchange::snippet();
}

TEST_CASE("'On the event loop': the awaited echo loop answers every datagram until it is cancelled" *
          doctest::timeout(30)) {
  sockpat::EventLoop loop;
  loop.run_until_complete([]() -> sockpat::Task<void> {
    auto sock = sockpat::UdpSocket::bound(sockpat::Endpoint("127.0.0.1", 0));
    auto echo = sockpat::create_task(snippet_echo_loop::snippet(sock));
    auto client = sockpat::UdpSocket::bound(sockpat::Endpoint("127.0.0.1", 0));
    std::array<char, 1500> buf{};
    for (int i = 0; i < 20; ++i) {
      const std::string message = "datagram " + std::to_string(i);
      co_await client.async_send_to(message, sock.local_endpoint());
      sockpat::Endpoint from;
      const auto n = co_await client.async_receive_from(buf, from, 5s);
      CHECK(std::string_view(buf.data(), n) == message);
      CHECK(from == sock.local_endpoint());
    }
    CHECK_FALSE(echo.done());  // it serves on: the guide's loop has no end of its own
    echo.cancel();
    auto ended = co_await sockpat::as_result(echo);
    REQUIRE_FALSE(ended);
    CHECK(ended.error() == std::errc::operation_canceled);
  }());
}
}

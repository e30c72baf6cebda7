// The compile-time benchmark's Asio program (bench/compile_time.py): proxy_sockpat.cpp in
// standalone Asio with C++20 coroutines. The task group is awaitable_operators' `&&` (both
// directions run; one failing cancels the other), the semaphore a channel with N slots.
// Run: proxy_asio LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT [MAX_CONNECTIONS]
#include <array>         // std::array
#include <chrono>        // std::chrono::seconds
#include <cstdio>        // std::printf, std::fprintf
#include <cstdlib>       // std::atoi
#include <exception>     // std::exception
#include <string>        // std::string
#include <system_error>  // std::system_error
#include <utility>       // std::move

#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/experimental/channel.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

namespace {

using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;
using Slots = asio::experimental::channel<void(asio::error_code, bool)>;

std::string upstream_host;
std::string upstream_port;

// Copies until end of stream, then half-closes the other side.
asio::awaitable<void> pump(tcp::socket& from, tcp::socket& to) {
  std::array<char, 16384> buf;
  for (;;) {
    asio::error_code ec;
    const std::size_t n = co_await from.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::eof) break;
    if (ec) throw std::system_error(ec, "read");
    co_await asio::async_write(to, asio::buffer(buf, n), asio::use_awaitable);
  }
  to.shutdown(tcp::socket::shutdown_send);
}

asio::awaitable<void> serve(Slots& slots, tcp::socket client) {
  co_await slots.async_send(asio::error_code{}, true, asio::use_awaitable);  // at most MAX_CONNECTIONS at once
  try {
    auto executor = co_await asio::this_coro::executor;
    tcp::resolver resolver(executor);
    asio::steady_timer timer(executor, std::chrono::seconds(5));
    tcp::socket upstream(executor);
    const auto addresses = co_await resolver.async_resolve(upstream_host, upstream_port, asio::use_awaitable);
    const auto connected = co_await (asio::async_connect(upstream, addresses, asio::use_awaitable) ||
                                     timer.async_wait(asio::use_awaitable));
    if (connected.index() == 1) throw std::system_error(asio::error::timed_out, "connect");
    co_await (pump(client, upstream) && pump(upstream, client));
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "proxy: %s\n", e.what());
  }
  slots.try_receive([](asio::error_code, bool) {});
}

asio::awaitable<void> listen(Slots& slots, tcp::acceptor& acceptor) {
  for (;;) {
    tcp::socket client = co_await acceptor.async_accept(asio::use_awaitable);
    asio::co_spawn(acceptor.get_executor(), serve(slots, std::move(client)), asio::detached);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: proxy_asio LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT [MAX_CONNECTIONS]\n");
    return 2;
  }
  upstream_host = argv[2];
  upstream_port = argv[3];
  try {
    asio::io_context io;
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const asio::error_code&, int) { io.stop(); });
    Slots slots(io, argc > 4 ? static_cast<std::size_t>(std::atoi(argv[4])) : 100);
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"),
                                             static_cast<unsigned short>(std::atoi(argv[1]))));
    std::printf("listening on 127.0.0.1:%u\n", acceptor.local_endpoint().port());
    std::fflush(stdout);
    asio::co_spawn(io, listen(slots, acceptor), asio::detached);
    io.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "proxy_asio: %s\n", e.what());
    return 1;
  }
}

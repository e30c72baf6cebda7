// asio_coro_echo_server: the Asio reference in its C++20 style: one coroutine per connection on
// asio::awaitable, one thread. Run: asio_coro_echo_server [--host 127.0.0.1] [--port 0]
//
// Written as the Asio documentation teaches it (an 8 KiB buffer in each coroutine frame, read some,
// write it all), with TCP_NODELAY as every reference server here sets it.
#include <cstdio>      // std::printf
#include <cstdlib>     // std::strtol
#include <string>      // std::string
#include <utility>     // std::move

#include <asio.hpp>

using asio::ip::tcp;

namespace {

asio::awaitable<void> echo(tcp::socket socket) {
  try {
    char data[8192];
    for (;;) {
      const std::size_t n = co_await socket.async_read_some(asio::buffer(data), asio::use_awaitable);
      co_await asio::async_write(socket, asio::buffer(data, n), asio::use_awaitable);
    }
  } catch (const std::system_error&) {
    // End of stream or a reset: the connection is over.
  }
}

asio::awaitable<void> listen(tcp::acceptor& acceptor) {
  for (;;) {
    tcp::socket socket = co_await acceptor.async_accept(asio::use_awaitable);
    std::error_code ec;
    socket.set_option(tcp::no_delay(true), ec);
    asio::co_spawn(acceptor.get_executor(), echo(std::move(socket)), asio::detached);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  long port = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--host") host = argv[i + 1];
    else if (a == "--port") port = std::strtol(argv[i + 1], nullptr, 10);
  }
  if (argc % 2 == 0 || port < 0 || port > 65535) {
    std::fprintf(stderr, "usage: asio_coro_echo_server [--host 127.0.0.1] [--port 0]\n");
    return 2;
  }
  try {
    asio::io_context io(1);  // one thread: the concurrency hint lets Asio drop its locking
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address(host), static_cast<unsigned short>(port)));
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&io](std::error_code, int) { io.stop(); });
    const auto at = acceptor.local_endpoint();
    std::printf("listening on %s:%u\n", at.address().to_string().c_str(), static_cast<unsigned>(at.port()));
    std::fflush(stdout);
    asio::co_spawn(io, listen(acceptor), asio::detached);
    io.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asio_coro_echo_server: %s\n", e.what());
    return 1;
  }
  return 0;
}

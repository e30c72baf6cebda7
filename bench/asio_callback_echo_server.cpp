// asio_callback_echo_server: the Asio reference in its classic style: completion handlers and a
// shared_ptr per session, one thread. Run: asio_callback_echo_server [--host 127.0.0.1] [--port 0]
//
// Written as the Asio documentation teaches it (each session owns an 8 KiB buffer, reads some,
// writes it all, reads again), with TCP_NODELAY as every reference server here sets it.
#include <array>       // std::array
#include <cstdio>      // std::printf
#include <cstdlib>     // std::strtol
#include <memory>      // std::shared_ptr, std::enable_shared_from_this
#include <string>      // std::string
#include <utility>     // std::move

#include <asio.hpp>

using asio::ip::tcp;

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  explicit Session(tcp::socket socket) : socket_(std::move(socket)) {}

  void start() { read(); }

 private:
  void read() {
    socket_.async_read_some(asio::buffer(data_), [self = shared_from_this()](std::error_code ec, std::size_t n) {
      if (!ec) self->write(n);
    });
  }
  void write(std::size_t n) {
    asio::async_write(socket_, asio::buffer(data_, n), [self = shared_from_this()](std::error_code ec, std::size_t) {
      if (!ec) self->read();
    });
  }

  tcp::socket socket_;
  std::array<char, 8192> data_;
};

class Server {
 public:
  Server(asio::io_context& io, const tcp::endpoint& at) : acceptor_(io, at) { accept(); }
  [[nodiscard]] tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

 private:
  void accept() {
    acceptor_.async_accept([this](std::error_code ec, tcp::socket socket) {
      if (!ec) {
        socket.set_option(tcp::no_delay(true), ec);
        std::make_shared<Session>(std::move(socket))->start();
      }
      accept();
    });
  }

  tcp::acceptor acceptor_;
};

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
    std::fprintf(stderr, "usage: asio_callback_echo_server [--host 127.0.0.1] [--port 0]\n");
    return 2;
  }
  try {
    asio::io_context io(1);  // one thread: the concurrency hint lets Asio drop its locking
    Server server(io, tcp::endpoint(asio::ip::make_address(host), static_cast<unsigned short>(port)));
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&io](std::error_code, int) { io.stop(); });
    const auto at = server.local_endpoint();
    std::printf("listening on %s:%u\n", at.address().to_string().c_str(), static_cast<unsigned>(at.port()));
    std::fflush(stdout);
    io.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asio_callback_echo_server: %s\n", e.what());
    return 1;
  }
  return 0;
}

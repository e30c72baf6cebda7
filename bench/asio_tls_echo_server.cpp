// asio_tls_echo_server: the Asio reference over TLS: asio::ssl::stream, completion handlers, a
// shared_ptr per session, one thread. Run: asio_tls_echo_server --cert F --key F [--port 0]
//
// Written as Asio's ssl example teaches it (handshake, then read some / write it all), with a
// 64 KiB buffer as sockpat's reader offers and TCP_NODELAY as every server here sets it; at the
// client's close_notify it answers with its own (async_shutdown).
#include <array>    // std::array
#include <csignal>  // SIGINT, SIGTERM
#include <cstdio>   // std::printf
#include <cstdlib>  // std::strtol
#include <memory>   // std::shared_ptr, std::enable_shared_from_this
#include <string>   // std::string
#include <utility>  // std::move

#include <asio.hpp>
#include <asio/ssl.hpp>

using asio::ip::tcp;

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, asio::ssl::context& ctx) : stream_(std::move(socket), ctx) {}

  void start() {
    stream_.async_handshake(asio::ssl::stream_base::server, [self = shared_from_this()](std::error_code ec) {
      if (!ec) self->read();
    });
  }

 private:
  void read() {
    stream_.async_read_some(asio::buffer(data_), [self = shared_from_this()](std::error_code ec, std::size_t n) {
      if (!ec) {
        self->write(n);
      } else if (ec == asio::error::eof) {  // the peer's close_notify: answer it
        self->stream_.async_shutdown([self](std::error_code) {});
      }
    });
  }
  void write(std::size_t n) {
    asio::async_write(stream_, asio::buffer(data_, n), [self = shared_from_this()](std::error_code ec, std::size_t) {
      if (!ec) self->read();
    });
  }

  asio::ssl::stream<tcp::socket> stream_;
  std::array<char, 65536> data_;
};

class Server {
 public:
  Server(asio::io_context& io, const tcp::endpoint& at, asio::ssl::context& ctx) : acceptor_(io, at), ctx_(ctx) {
    accept();
  }
  [[nodiscard]] tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

 private:
  void accept() {
    acceptor_.async_accept([this](std::error_code ec, tcp::socket socket) {
      if (!ec) {
        socket.set_option(tcp::no_delay(true), ec);
        std::make_shared<Session>(std::move(socket), ctx_)->start();
      }
      accept();
    });
  }

  tcp::acceptor acceptor_;
  asio::ssl::context& ctx_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  std::string cert;
  std::string key;
  unsigned short port = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--host") host = argv[i + 1];
    else if (a == "--port") port = static_cast<unsigned short>(std::strtol(argv[i + 1], nullptr, 10));
    else if (a == "--cert") cert = argv[i + 1];
    else if (a == "--key") key = argv[i + 1];
  }
  if (cert.empty() || key.empty()) {
    std::fprintf(stderr, "usage: asio_tls_echo_server --cert F --key F [--host H] [--port P]\n");
    return 2;
  }
  try {
    asio::io_context io(1);
    asio::ssl::context ctx(asio::ssl::context::tls_server);
    ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_tlsv1 |
                    asio::ssl::context::no_tlsv1_1);
    ctx.use_certificate_chain_file(cert);
    ctx.use_private_key_file(key, asio::ssl::context::pem);
    Server server(io, tcp::endpoint(asio::ip::make_address(host), port), ctx);
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&io](std::error_code, int) { io.stop(); });
    std::printf("listening on %s:%u\n", host.c_str(), static_cast<unsigned>(server.local_endpoint().port()));
    std::fflush(stdout);
    io.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asio_tls_echo_server: %s\n", e.what());
    return 1;
  }
}

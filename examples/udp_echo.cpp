// udp_echo: datagrams both ways. Without --connect it is the server: it echoes every datagram to its
// sender. With --connect HOST:PORT it sends --message (default "ping") and prints the echo.
// Run: udp_echo [--host H] [--port P]    |    udp_echo --connect 127.0.0.1:P [--message M]
#include <array>
#include <cstdio>
#include <string>

#include "args.hpp"
#include "sockpat.hpp"

using namespace std::chrono_literals;

namespace {

int client(const example::Args& args) {
  const auto server = example::endpoint_arg(args.get("connect", ""));
  // Connected: the kernel passes on datagrams from the server alone, and an ICMP "port
  // unreachable" for ours comes back as connection_refused rather than a silence (not on
  // Windows, docs/platforms.md).
  sockpat::UdpSocket sock(server.family());
  sock.connect(server);
  const std::string message = args.get("message", "ping");
  std::array<char, 65536> buf{};
  // UDP may drop a datagram: try a few times, each bounded.
  for (int attempt = 0; attempt < 5; ++attempt) {
    std::error_code ec;
    sock.send(message, 2s, ec);
    if (ec) throw std::system_error(ec, "send to " + server.to_string());
    const auto n = sock.receive(buf, 1s, ec);
    if (ec == std::errc::timed_out) continue;
    if (ec) throw std::system_error(ec, "receive from " + server.to_string());
    std::printf("Received from %s: %.*s\n", server.to_string().c_str(), static_cast<int>(n), buf.data());
    return 0;
  }
  std::fprintf(stderr, "udp_echo: no answer from %s\n", server.to_string().c_str());
  return 1;
}

int server(const example::Args& args) {
  sockpat::SignalStop signals;
  const auto addresses = sockpat::resolve(args.get("host", "127.0.0.1"), args.get_port());
  auto sock = sockpat::UdpSocket::bound(addresses.front());
  std::printf("listening on %s\n", sock.local_endpoint().to_string().c_str());
  std::fflush(stdout);
  std::array<std::byte, 65536> buf{};
  while (!signals.stop_requested()) {
    sockpat::Endpoint from;
    std::error_code ec;
    const auto n = sock.receive_from(buf, from, signals.token(), ec);
    if (ec == std::errc::operation_canceled) break;
    if (ec) continue;  // a truncated or refused datagram does not stop the server
    sock.send_to(std::span(buf).first(n), from, sockpat::Deadline(1s, signals.token()), ec);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"host", "port", "connect", "message"},
                           "udp_echo [--host HOST] [--port PORT] | udp_echo --connect HOST:PORT [--message TEXT]");
  try {
    return args.has("connect") ? client(args) : server(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "udp_echo: %s\n", e.what());
    return 1;
  }
}

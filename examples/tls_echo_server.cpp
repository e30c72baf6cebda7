// tls_echo_server: echoes every byte back over TLS until the client ends, a thread per client.
// Run: tls_echo_server --cert CHAIN.pem --key KEY.pem [--host H] [--port P] [--ca CA.pem]
//
// threaded_echo_server over TLS (sockpat/tls.hpp, OpenSSL): each client's handshake is bounded
// (--handshake-timeout, 10 s), a client that fails it (a plaintext client, a certificate refused)
// is one line on stderr and the server goes on. --ca CA.pem asks clients for a certificate signed
// by that CA and refuses those without one. A client's clean end (close_notify) is answered in kind.
#include <array>
#include <chrono>
#include <cstdio>
#include <span>

#include "args.hpp"
#include "sockpat.hpp"
#include "sockpat/tls.hpp"

namespace {

int serve(const example::Args& args) {
  if (!args.has("cert") || !args.has("key")) args.fail("--cert and --key are required");
  sockpat::SignalStop signals;
  auto context = sockpat::TlsContext::server(args.get("cert", ""), args.get("key", ""));
  if (args.has("ca")) context.add_ca_file(args.get("ca", "")).verify_clients();
  sockpat::TlsOptions tls;
  tls.handshake_timeout = std::chrono::seconds(args.get_int("handshake-timeout", 10, 1, 3600));

  sockpat::TlsTcpServer server(
      sockpat::TcpListener::bind(args.get("host", "127.0.0.1"), args.get_port()), std::move(context),
      [](sockpat::TlsTcpConnection& conn) {
        std::array<std::byte, 16384> buf{};
        while (const auto n = conn.read_some(buf)) conn.write_all(std::span(buf).first(n));
        conn.shutdown();  // the client sent close_notify: answer it
      },
      sockpat::ServerOptions{}, tls);
  std::printf("listening on %s\n", server.local_endpoint().to_string().c_str());
  std::fflush(stdout);
  server.serve(signals.token(), signals.urgent_token());  // returns after a graceful stop on SIGINT/SIGTERM
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"host", "port", "cert", "key", "ca", "handshake-timeout"},
                           "tls_echo_server --cert CHAIN.pem --key KEY.pem [--host HOST] [--port PORT] "
                           "[--ca CA.pem] [--handshake-timeout SECONDS]");
  try {
    return serve(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tls_echo_server: %s\n", e.what());
    return 1;
  }
}

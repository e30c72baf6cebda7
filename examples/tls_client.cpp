// tls_client: sends a message over TLS, prints what comes back, and ends with close_notify.
// Run: tls_client --port P [--host H] [--ca CA.pem] [--message M] [--cert F --key F] [--insecure]
//
// The server's certificate is checked against the system's trust store (and --ca, if given) and
// must name --host (default localhost); --insecure turns every check off. Reads until as many
// bytes as were sent came back (an echo server) or the server ends cleanly, within 10 seconds.
#include <array>
#include <cstdio>
#include <string>

#include "args.hpp"
#include "sockpat.hpp"
#include "sockpat/tls.hpp"

using namespace std::chrono_literals;

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {"insecure"}, {"host", "port", "ca", "message", "cert", "key"},
                           "tls_client --port PORT [--host HOST] [--ca CA.pem] [--message TEXT] "
                           "[--cert CHAIN.pem --key KEY.pem] [--insecure]");
  if (!args.has("port")) args.fail("--port is required");
  if (args.has("cert") != args.has("key")) args.fail("--cert and --key go together");
  try {
    auto context = sockpat::TlsContext::client();
    if (args.has("ca")) context.add_ca_file(args.get("ca", ""));
    if (args.has("cert")) context.use_certificate_files(args.get("cert", ""), args.get("key", ""));
    if (args.has("insecure")) context.insecure_no_verify();
    const sockpat::Deadline deadline = 10s;
    const std::string host = args.get("host", "localhost");
    auto conn = sockpat::TlsTcpConnection::connect(host, args.get_port(), context, deadline);
    const std::string message = args.get("message", "Hello over TLS!");
    conn.write_all(message, deadline);

    std::string reply;
    std::array<char, 4096> buf{};
    while (reply.size() < message.size()) {
      const auto n = conn.read_some(buf, deadline);
      if (n == 0) break;  // the server's close_notify
      reply.append(buf.data(), n);
    }
    conn.shutdown(deadline);
    std::printf("%.*s with %s\n", static_cast<int>(conn.protocol_version().size()), conn.protocol_version().data(),
                host.c_str());
    std::printf("Received from server: %s\n", reply.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tls_client: %s\n", e.what());
    return 1;
  }
}

// hello_client: the first seed's client. Sends "Hello, server!" (or --message), prints the reply.
// Run: hello_client --port P [--host H] [--message M]
//
// The seed takes one recv(1024) as the whole reply; this client reads until the server closes
// (as the seed's servers do after replying), up to 1024 bytes and 10 seconds.
#include <array>
#include <cstdio>
#include <string>

#include "args.hpp"
#include "sockpat.hpp"

using namespace std::chrono_literals;

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"host", "port", "message"},
                           "hello_client --port PORT [--host HOST] [--message TEXT]");
  if (!args.has("port")) args.fail("--port is required");
  try {
    const sockpat::Deadline deadline = 10s;
    auto conn = sockpat::TcpConnection::connect(args.get("host", "127.0.0.1"), args.get_port(), deadline);
    conn.write_all(args.get("message", "Hello, server!"), deadline);

    std::string reply;
    std::array<char, 1024> buf{};
    while (reply.size() < buf.size()) {
      const auto n = conn.read_some(std::span(buf).first(buf.size() - reply.size()), deadline);
      if (n == 0) break;  // the server closed: the reply is complete
      reply.append(buf.data(), n);
    }
    std::printf("Received from server: %s\n", reply.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hello_client: %s\n", e.what());
    return 1;
  }
}

// hello_server: the first seed's blocking server. For each client it reads one message, prints it,
// replies "Hello, client!" and closes that connection. Run: hello_server [--host H] [--port P] [--once]
//
// Unlike the seed it does not block forever: Ctrl-C (SIGINT) or SIGTERM stops it, and a client that
// connects but never speaks is dropped after 10 s instead of holding the server.
#include <array>
#include <cstdio>

#include "args.hpp"
#include "sockpat.hpp"

using namespace std::chrono_literals;

namespace {

int serve(const example::Args& args) {
  sockpat::SignalStop signals;
  auto listener = sockpat::TcpListener::bind(args.get("host", "127.0.0.1"), args.get_port());
  std::printf("listening on %s\n", listener.local_endpoint().to_string().c_str());
  std::fflush(stdout);

  while (!signals.stop_requested()) {
    std::error_code ec;
    auto conn = listener.accept(signals.token(), ec);
    if (ec == std::errc::operation_canceled) break;
    if (ec) {
      std::fprintf(stderr, "accept: %s\n", ec.message().c_str());
      continue;
    }
    // As in the seed, a message is what one read of up to 1024 bytes brings: the seed's client
    // sends one short message and waits for the reply without closing its side.
    std::array<char, 1024> buf{};
    const auto n = conn.read_some(buf, sockpat::Deadline(10s, signals.token()), ec);
    if (ec) {
      std::fprintf(stderr, "read from client: %s\n", ec.message().c_str());
      continue;
    }
    std::printf("Received from client: %.*s\n", static_cast<int>(n), buf.data());
    std::fflush(stdout);
    conn.write_all("Hello, client!", sockpat::Deadline(10s, signals.token()), ec);
    if (ec) std::fprintf(stderr, "write to client: %s\n", ec.message().c_str());
    if (args.has("once")) break;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {"once"}, {"host", "port"}, "hello_server [--host HOST] [--port PORT] [--once]");
  try {
    return serve(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hello_server: %s\n", e.what());
    return 1;
  }
}

// threaded_echo_server: echoes every byte back until the client closes, many clients at once, a
// thread each. Run: threaded_echo_server [--host H] [--port P] [--threads N] [--idle-timeout S]
//
// Python's socketserver.ThreadingTCPServer with a StreamRequestHandler, but bounded: elastic threads
// (one per client being served, reused, ended after 10 s without a client), at most
// --max-connections clients held (default: from the descriptor limit; the rest wait in the listen
// backlog), silent clients dropped after --idle-timeout seconds. --threads N runs a fixed pool of N
// threads instead, where N idle clients keep everyone else waiting.
#include <array>
#include <cstdio>
#include <string_view>

#include "args.hpp"
#include "sockpat.hpp"

namespace {

int serve(const example::Args& args) {
  sockpat::SignalStop signals;
  sockpat::ServerOptions options;
  options.threads = static_cast<std::size_t>(args.get_int("threads", 0, 0, 1024));  // 0: elastic (the default)
  if (options.threads != 0) options.strategy = sockpat::Strategy::thread_pool;
  options.max_connections = static_cast<std::size_t>(
      args.get_int("max-connections", 0, 0, 1'000'000));  // 0: the strategy's default
  options.idle_timeout = std::chrono::seconds(args.get_int("idle-timeout", 60, 1, 86400));

  sockpat::TcpServer server(
      sockpat::TcpListener::bind(args.get("host", "127.0.0.1"), args.get_port()),
      [](sockpat::TcpConnection& conn) {
        std::array<char, 16384> buf{};
        while (const auto n = conn.read_some(buf)) conn.write_all(std::string_view(buf.data(), n));
      },
      options);
  std::printf("listening on %s\n", server.local_endpoint().to_string().c_str());
  std::fflush(stdout);
  server.serve(signals.token(), signals.urgent_token());  // returns after a graceful stop on SIGINT/SIGTERM
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"host", "port", "threads", "max-connections", "idle-timeout"},
                           "threaded_echo_server [--host HOST] [--port PORT] [--threads N] [--max-connections N] "
                           "[--idle-timeout SECONDS]");
  try {
    return serve(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "threaded_echo_server: %s\n", e.what());
    return 1;
  }
}

// sockpat_threaded_echo_server: sockpat::Server as the benchmark runs it: echo every byte until the
// client closes, on the default elastic threads, or a fixed pool with --threads N.
// Run: sockpat_threaded_echo_server [--host H] [--port 0] [--threads N]
//
// examples/threaded_echo_server.cpp with the reference servers' 64 KiB receive buffer, so that the
// blocking rows differ from raw_threaded_echo_server only in what sockpat does.
#include <array>    // std::array
#include <cstdio>   // std::printf

#include "args.hpp"
#include "sockpat.hpp"

namespace {

int serve(const example::Args& args) {
  sockpat::SignalStop signals;
  sockpat::ServerOptions options;
  options.threads = static_cast<std::size_t>(args.get_int("threads", 0, 0, 100'000));  // 0: elastic
  if (options.threads != 0) options.strategy = sockpat::Strategy::thread_pool;
  sockpat::TcpServer server(
      sockpat::TcpListener::bind(args.get("host", "127.0.0.1"), args.get_port()),
      [](sockpat::TcpConnection& conn) {
        std::array<char, 64 * 1024> buf;  // not zeroed: only what read_some filled is sent
        while (const auto n = conn.read_some(buf)) conn.write_all(std::string_view(buf.data(), n));
      },
      options);
  std::printf("listening on %s\n", server.local_endpoint().to_string().c_str());
  std::fflush(stdout);
  server.serve(signals.token(), signals.urgent_token());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"host", "port", "threads"},
                           "sockpat_threaded_echo_server [--host HOST] [--port PORT] [--threads N]");
  try {
    return serve(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sockpat_threaded_echo_server: %s\n", e.what());
    return 1;
  }
}

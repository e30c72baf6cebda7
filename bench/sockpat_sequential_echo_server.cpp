// sockpat_sequential_echo_server: sockpat's blocking core as the seed uses it, one client at a time:
// echo every byte until the client closes, then take the next. Run: sockpat_sequential_echo_server [--port 0]
//
// The benchmark's "sequential" row: it applies to the one-connection scenarios only.
#include <array>    // std::array
#include <cstdio>   // std::printf

#include "args.hpp"
#include "sockpat.hpp"

using namespace std::chrono_literals;

namespace {

int serve(const example::Args& args) {
  sockpat::SignalStop signals;
  auto listener = sockpat::TcpListener::bind(args.get("host", "127.0.0.1"), args.get_port());
  std::printf("listening on %s\n", listener.local_endpoint().to_string().c_str());
  std::fflush(stdout);

  std::array<char, 64 * 1024> buf{};
  while (!signals.stop_requested()) {
    std::error_code ec;
    auto conn = listener.accept(signals.token(), ec);
    if (ec == std::errc::operation_canceled) break;
    if (ec) continue;
    conn.set_no_delay(true);
    // A silent client is dropped after 30 s, so one client cannot hold the server forever.
    while (const auto n = conn.read_some(buf, sockpat::Deadline(30s, signals.token()), ec)) {
      conn.write_all(std::string_view(buf.data(), n), sockpat::Deadline(30s, signals.token()), ec);
      if (ec) break;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"host", "port"},
                           "sockpat_sequential_echo_server [--host HOST] [--port PORT]");
  try {
    return serve(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sockpat_sequential_echo_server: %s\n", e.what());
    return 1;
  }
}

// uppercase_server: the second seed's server. Replies to every byte it receives with the same byte
// upper-cased, until the client closes; then serves the next client. Run: uppercase_server [--host H] [--port P]
//
// The seed answers one recv(1024); this server streams, so a message of any length comes back whole.
#include <array>
#include <cctype>
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
    if (ec) continue;
    std::array<char, 4096> buf{};
    // An idle client is dropped after 30 s, so one silent client cannot hold the server forever.
    while (const auto n = conn.read_some(buf, sockpat::Deadline(30s, signals.token()), ec)) {
      for (std::size_t i = 0; i < n; ++i) buf[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(buf[i])));
      conn.write_all(std::string_view(buf.data(), n), sockpat::Deadline(30s, signals.token()), ec);
      if (ec) break;
    }
    if (ec && ec != std::errc::operation_canceled) std::fprintf(stderr, "client: %s\n", ec.message().c_str());
    if (args.has("once")) break;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {"once"}, {"host", "port"},
                           "uppercase_server [--host HOST] [--port PORT] [--once]");
  try {
    return serve(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "uppercase_server: %s\n", e.what());
    return 1;
  }
}

// sockpat_tls_echo_server: the async echo server over TLS (start_server with a TlsContext), one
// event loop. Run: sockpat_tls_echo_server --cert F --key F [--host 127.0.0.1] [--port 0]
//
// The TLS benchmark's sockpat side (bench/tls_run.py); prints "listening on HOST:PORT" and
// serves until SIGINT/SIGTERM.
#include <cstdio>   // std::printf, std::fprintf, std::fflush
#include <cstdlib>  // std::strtol
#include <string>   // std::string
#include <system_error>

#include "sockpat.hpp"
#include "sockpat/tls_streams.hpp"

namespace {

sockpat::Task<void> echo(sockpat::StreamReader reader, sockpat::StreamWriter writer) {
  try {
    for (;;) {
      const auto chunk = co_await reader.read_chunk();
      if (chunk.empty()) break;  // the client's close_notify
      co_await writer.write(chunk);
    }
  } catch (const std::system_error&) {
    co_return;  // a client that vanished (truncated, reset): routine here
  }
  writer.close();
  co_await writer.wait_closed();
}


}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  std::string cert;
  std::string key;
  int port = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--host") host = argv[i + 1];
    else if (a == "--port") port = static_cast<int>(std::strtol(argv[i + 1], nullptr, 10));
    else if (a == "--cert") cert = argv[i + 1];
    else if (a == "--key") key = argv[i + 1];
  }
  if (cert.empty() || key.empty()) {
    std::fprintf(stderr, "usage: sockpat_tls_echo_server --cert F --key F [--host H] [--port P]\n");
    return 2;
  }
  try {
    sockpat::SignalStop signals;
    sockpat::EventLoop loop;
    loop.stop_when(signals.token());
    auto server = loop.run_until_complete(sockpat::start_server(echo, host, port, sockpat::TlsContext::server(cert, key)));
    std::printf("listening on %s\n", server.local_endpoint().to_string().c_str());
    std::fflush(stdout);
    loop.run();
    server.close();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sockpat_tls_echo_server: %s\n", e.what());
    return 1;
  }
}

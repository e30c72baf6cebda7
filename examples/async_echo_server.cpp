// async_echo_server: echoes every byte back until the client closes, on one event loop per thread
// (--threads N: N loops share the port through SO_REUSEPORT). The benchmark target.
// Run: async_echo_server [--host H] [--port P] [--threads N]
#include <cstddef>
#include <cstdio>
#include <span>
#include <system_error>
#include <thread>
#include <vector>

#include "args.hpp"
#include "sockpat.hpp"

sockpat::Task<void> echo(sockpat::StreamReader reader, sockpat::StreamWriter writer) {
  try {
    // read_chunk hands out the reader's own buffer, which it holds only while bytes are there:
    // an idle connection costs no buffer, and nothing is copied on the way through.
    for (;;) {
      const auto chunk = co_await reader.read_chunk();
      if (chunk.empty()) break;  // the client closed its side
      co_await writer.write(chunk);
    }
  } catch (const std::system_error& e) {
    // A client that vanishes (reset, or gone while we write) is routine for a server; anything
    // else goes on to the loop, which reports it.
    if (e.code() != std::errc::connection_reset && e.code() != std::errc::broken_pipe) throw;
  }
}

// Runs one loop with its own listener on `port` until `stop`.
void serve(const std::string& host, int port, bool reuse_port, std::stop_token stop, sockpat::Endpoint* bound) {
  sockpat::EventLoop loop;
  loop.stop_when(stop);
  sockpat::StreamServerOptions options;
  options.listen.reuse_port = reuse_port;
  auto server = loop.run_until_complete(sockpat::start_server(echo, host, port, options));
  if (bound != nullptr) *bound = server.local_endpoint();
  loop.run();
  server.close();
  loop.run_until_complete(server.wait_closed());
}

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, "async_echo_server [--host HOST] [--port PORT] [--threads N]");
  const int threads = args.get_int("threads", 1);
  if (threads < 1 || threads > 64) args.fail("--threads must be 1..64");
  const std::string host = args.get("host", "127.0.0.1");
  sockpat::SignalStop signals;

  // The first loop binds (port 0: the OS picks); the others join its port.
  sockpat::Endpoint bound;
  std::vector<std::thread> others;
  {
    sockpat::EventLoop loop;
    loop.stop_when(signals.token());
    sockpat::StreamServerOptions options;
    options.listen.reuse_port = threads > 1;
    auto server = loop.run_until_complete(sockpat::start_server(echo, host, args.get_int("port", 0), options));
    bound = server.local_endpoint();
    for (int i = 1; i < threads; ++i) {
      others.emplace_back(serve, host, static_cast<int>(bound.port()), true, signals.token(), nullptr);
    }
    std::printf("listening on %s\n", bound.to_string().c_str());
    std::fflush(stdout);
    loop.run();
    server.close();
    loop.run_until_complete(server.wait_closed());
  }
  for (auto& t : others) t.join();
  return 0;
}

// async_echo_server: echoes every byte back until the client closes, on one event loop per thread
// (--threads N: the first loop claims the port, the others join it through SO_REUSEPORT, so a
// second copy of the server is refused the port). The benchmark target.
// Run: async_echo_server [--host H] [--port P] [--threads N]
#include <atomic>
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

// Runs one more loop with its own listener, joining the first loop's `port`, until `stop`.
void serve(const std::string& host, int port, std::stop_token stop) {
  sockpat::EventLoop loop;
  loop.stop_when(stop);
  sockpat::StreamServerOptions options;
  options.listen.reuse_port = true;
  auto server = loop.run_until_complete(sockpat::start_server(echo, host, port, options));
  loop.run();
  server.close();
  loop.run_until_complete(server.wait_closed());
}

int run(const example::Args& args) {
  const int threads = args.get_int("threads", 1, 1, 64);
  const std::string host = args.get("host", "127.0.0.1");
  sockpat::SignalStop signals;
  // Every loop stops on a signal, or when another loop fails to start.
  std::stop_source stop;
  const std::stop_callback on_signal(signals.token(), [&stop] { stop.request_stop(); });
  std::atomic<bool> failed{false};

  // The first loop binds (port 0: the OS picks) and claims the port: bound without
  // SO_REUSEPORT, a port in use fails here, even one that another copy of this server shares
  // with its own loops. The others then join it.
  sockpat::EventLoop loop;
  loop.stop_when(stop.get_token());
  sockpat::StreamServerOptions options;
  options.listen.claim_port = threads > 1;
  auto server = loop.run_until_complete(sockpat::start_server(echo, host, args.get_port(), options));
  const sockpat::Endpoint bound = server.local_endpoint();
  {
    // Declared after `stop`, so destroyed first: each jthread's own stop request (when this
    // scope unwinds) is passed on to `stop`, which ends every loop before the join.
    std::vector<std::jthread> others;
    for (int i = 1; i < threads; ++i) {
      others.emplace_back([&, port = static_cast<int>(bound.port())](std::stop_token own) {
        const std::stop_callback pass_on(own, [&stop] { stop.request_stop(); });
        try {
          serve(host, port, stop.get_token());
        } catch (const std::exception& e) {
          if (!failed.exchange(true)) std::fprintf(stderr, "async_echo_server: %s\n", e.what());
          stop.request_stop();
        }
      });
    }
    std::printf("listening on %s\n", bound.to_string().c_str());
    std::fflush(stdout);
    loop.run();
  }
  server.close();
  loop.run_until_complete(server.wait_closed());
  return failed ? 1 : 0;
}

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"host", "port", "threads"},
                           "async_echo_server [--host HOST] [--port PORT] [--threads N]");
  try {
    return run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "async_echo_server: %s\n", e.what());
    return 1;
  }
}

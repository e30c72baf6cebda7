// The compile-time benchmark's sockpat program (bench/compile_time.py): a TCP proxy with streams,
// a task group and a semaphore. proxy_asio.cpp is the same program in Asio.
// Run: proxy_sockpat LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT [MAX_CONNECTIONS]
#include <cstdio>        // std::printf, std::fprintf
#include <chrono>        // std::chrono::seconds
#include <cstdlib>       // std::atoi
#include <exception>     // std::exception
#include <string>        // std::string
#include <system_error>  // std::system_error
#include <utility>       // std::move

#include <sockpat/event_loop.hpp>  // EventLoop
#include <sockpat/signals.hpp>     // SignalStop
#include <sockpat/streams.hpp>     // start_server, open_connection, StreamReader, StreamWriter
#include <sockpat/sync.hpp>        // Semaphore
#include <sockpat/task_group.hpp>  // with_task_group

namespace {

std::string upstream_host;
int upstream_port = 0;

// Copies until end of stream, then half-closes the other side.
sockpat::Task<void> pump(sockpat::StreamReader& from, sockpat::StreamWriter& to) {
  for (;;) {
    const auto chunk = co_await from.read_chunk();
    if (chunk.empty()) break;
    co_await to.write(chunk);
  }
  co_await to.drain();
  to.write_eof();
}

sockpat::Task<void> serve(sockpat::Semaphore& slots, sockpat::StreamReader client_in,
                          sockpat::StreamWriter client_out) {
  const auto permit = co_await slots.acquire();  // at most MAX_CONNECTIONS proxied at once
  try {
    auto [up_in, up_out] = co_await sockpat::open_connection(upstream_host, upstream_port, std::chrono::seconds(5));
    co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
      group.create_task([&] { return pump(client_in, up_out); });
      group.create_task([&] { return pump(up_in, client_out); });
      co_return;
    });
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "proxy: %s\n", e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: proxy_sockpat LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT [MAX_CONNECTIONS]\n");
    return 2;
  }
  upstream_host = argv[2];
  upstream_port = std::atoi(argv[3]);
  try {
    sockpat::SignalStop signals;
    sockpat::EventLoop loop;
    loop.stop_when(signals.token());
    sockpat::Semaphore slots(argc > 4 ? static_cast<std::size_t>(std::atoi(argv[4])) : 100);
    auto handler = [&slots](sockpat::StreamReader r, sockpat::StreamWriter w) {
      return serve(slots, std::move(r), std::move(w));
    };
    auto server = loop.run_until_complete(sockpat::start_server(handler, "127.0.0.1", std::atoi(argv[1])));
    std::printf("listening on %s\n", server.local_endpoint().to_string().c_str());
    std::fflush(stdout);
    loop.run();
    server.close();
    loop.run_until_complete(server.wait_closed());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "proxy_sockpat: %s\n", e.what());
    return 1;
  }
}

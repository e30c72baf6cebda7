// async_client: many concurrent clients on one event loop, gathered. Each opens a connection,
// sends its message, half-closes, reads the answer to the end and checks it.
// Run: async_client --port P [--host H] [--clients N] [--message M] [--expect TEXT] [--timeout SECONDS]
// Without --expect each client expects its own bytes back (an echo server).
#include <cstdio>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "args.hpp"
#include "sockpat.hpp"

using namespace std::chrono_literals;

sockpat::Task<bool> one_client(std::string host, int port, std::string message, std::string expect) {
  auto [reader, writer] = co_await sockpat::open_connection(host, port, 10s);
  co_await writer.write(message);
  writer.write_eof();
  std::string answer;
  for (;;) {
    auto chunk = co_await reader.read(65536);
    if (chunk.empty()) break;
    answer += chunk;
  }
  if (answer != expect) {
    std::fprintf(stderr, "wrong answer to %.40s: %zu bytes, %.40s\n", message.c_str(), answer.size(), answer.c_str());
  }
  co_return answer == expect;
}

sockpat::Task<int> all_clients(const example::Args& args) {
  const int clients = args.get_int("clients", 10, 1, 10000);
  const int port = args.get_port();
  std::vector<sockpat::Task<bool>> tasks;
  for (int i = 0; i < clients; ++i) {
    // Messages differ in content (and, for an echo server, in length up to 6 kB), so a mixed-up
    // answer cannot pass. A server with a fixed answer reads one short message, as the seed's.
    const bool echo = !args.has("expect");
    std::string message = args.get("message", "Hello, server!") + " #" + std::to_string(i);
    if (echo) message += std::string(i % 7 * 1000, '.');
    const std::string expect = echo ? message : args.get("expect", "");
    tasks.push_back(one_client(args.get("host", "127.0.0.1"), port, std::move(message), expect));
  }
  // Within --timeout (30 s) in all: a server that stops answering makes this fail, not hang.
  const int timeout = args.get_int("timeout", 30, 1, 86400);
  std::vector<bool> results;
  try {
    results = co_await sockpat::wait_for(
        [](std::vector<sockpat::Task<bool>> t) -> sockpat::Task<std::vector<bool>> {
          co_return co_await sockpat::gather(std::move(t));
        }(std::move(tasks)),
        std::chrono::seconds(timeout));
  } catch (const std::system_error& e) {
    // wait_for's own message names only itself: say what did not finish in time, and where.
    if (e.code() != std::errc::timed_out || std::string_view(e.what()).rfind("wait_for", 0) != 0) throw;
    const std::string host = args.get("host", "127.0.0.1");
    const std::string server = (host.find(':') == std::string::npos ? host : '[' + host + ']') + ':' +
                               std::to_string(port);
    throw std::system_error(e.code(), std::to_string(clients) + " clients of " + server + " not done after " +
                                          std::to_string(timeout) + " s");
  }
  int good = 0;
  for (bool ok : results) good += ok ? 1 : 0;
  co_return good;
}

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"host", "port", "clients", "message", "expect", "timeout"},
                           "async_client --port PORT [--host HOST] [--clients N] [--message M] [--expect TEXT] "
                           "[--timeout SECONDS]");
  if (!args.has("port")) args.fail("--port is required");
  const int clients = args.get_int("clients", 10, 1, 10000);
  try {
    const int good = sockpat::run(all_clients(args));
    std::printf("%d of %d clients got the right answer\n", good, clients);
    return good == clients ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "async_client: %s\n", e.what());
    return 1;
  }
}

// The server side of tests/fault/vanish.py: an echo server, threaded (Server<Tcp> with its
// idle_timeout) or async (start_server, each read bounded by wait_for), that reports how each
// connection ended, so the driver can see a vanished client dropped by the idle timeout.
// Run: vanish_server --mode threaded|async --host H [--port P] --idle-ms N
// Prints "listening on H:P", then one line per connection that ends:
//   "closed PEER after MS ms: REASON" (REASON: end_of_stream, timed_out, or the error's message).
#include <array>         // std::array
#include <chrono>        // std::chrono::steady_clock
#include <cstdio>        // std::printf
#include <mutex>         // std::mutex: lines from several threads
#include <span>          // std::span
#include <string>        // std::string
#include <system_error>  // std::system_error

#include "../../examples/args.hpp"
#include "sockpat.hpp"

namespace {

std::mutex out_mutex;

void report(const sockpat::Endpoint& peer, std::chrono::steady_clock::time_point since, const std::string& reason) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - since).count();
  const std::lock_guard lock(out_mutex);
  std::printf("closed %s after %lld ms: %s\n", peer.to_string().c_str(), static_cast<long long>(ms), reason.c_str());
  std::fflush(stdout);
}

std::string reason_of(const std::system_error& e) {
  return e.code() == std::errc::timed_out ? std::string("timed_out") : std::string(e.what());
}

sockpat::Task<void> async_echo(sockpat::StreamReader reader, sockpat::StreamWriter writer, std::chrono::milliseconds idle) {
  const auto peer = writer.peer_endpoint();
  auto last = std::chrono::steady_clock::now();  // the time of the last byte read
  std::array<std::byte, 4096> buf{};
  std::string reason = "end_of_stream";
  try {
    for (;;) {
      const auto n = co_await sockpat::wait_for(reader.read_some(buf), idle);
      if (n == 0) break;
      last = std::chrono::steady_clock::now();
      co_await writer.write(std::span<const std::byte>(buf.data(), n));
    }
  } catch (const std::system_error& e) {
    reason = reason_of(e);
  }
  report(peer, last, reason);
}

}  // namespace

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"mode", "host", "port", "idle-ms"},
                           "vanish_server --mode threaded|async --host HOST [--port PORT] --idle-ms N");
  const std::string mode = args.get("mode", "threaded");
  const std::string host = args.get("host", "127.0.0.1");
  const int port = args.get_int("port", 0, 0, 65535);
  const std::chrono::milliseconds idle(args.get_int("idle-ms", 2000, 1, 3600 * 1000));
  sockpat::SignalStop signals;

  if (mode == "threaded") {
    sockpat::ServerOptions options;
    options.threads = 4;
    options.idle_timeout = idle;
    sockpat::TcpServer server(
        sockpat::TcpListener::bind(host, port),
        [](sockpat::TcpConnection& conn) {
          const auto peer = conn.remote_endpoint();
          auto last = std::chrono::steady_clock::now();
          std::string reason = "end_of_stream";
          try {
            std::array<char, 4096> buf{};
            while (const auto n = conn.read_some(buf)) {  // bounded by the server's idle_timeout
              last = std::chrono::steady_clock::now();
              conn.write_all(std::string_view(buf.data(), n));
            }
          } catch (const std::system_error& e) {
            reason = reason_of(e);
          }
          report(peer, last, reason);
        },
        options);
    std::printf("listening on %s\n", server.local_endpoint().to_string().c_str());
    std::fflush(stdout);
    server.serve(signals.token());
  } else if (mode == "async") {
    sockpat::EventLoop loop;
    loop.stop_when(signals.token());
    auto server = loop.run_until_complete(sockpat::start_server(
        [idle](sockpat::StreamReader r, sockpat::StreamWriter w) { return async_echo(std::move(r), std::move(w), idle); },
        host, port));
    std::printf("listening on %s\n", server.local_endpoint().to_string().c_str());
    std::fflush(stdout);
    loop.run();
    server.close();
    loop.run_until_complete(server.wait_closed());
  } else {
    args.fail("--mode must be threaded or async");
  }
  return 0;
}

// async_hello_server: the seed's asyncio server, line for line: each client's first read of up to
// 1024 bytes gets "Hello, client!", then the connection closes. Run: async_hello_server [--host H] [--port P]
//
// As in the seed, the server runs on one event loop until Ctrl-C (SIGINT) or SIGTERM, then closes
// and waits for the handlers still running.
#include <cstdio>
#include <string>

#include "args.hpp"
#include "sockpat.hpp"

sockpat::Task<void> handle_client(sockpat::StreamReader reader, sockpat::StreamWriter writer) {
  // Receive data from the client
  auto data = co_await reader.read(1024);
  auto message = data;

  // Send data to the client
  std::string response = "Hello, client!";
  co_await writer.write(response);
  co_await writer.drain();

  // Close the connection
  writer.close();
}

int serve(const example::Args& args) {
  sockpat::SignalStop signals;

  // Create the server
  sockpat::EventLoop loop;
  loop.stop_when(signals.token());
  auto server = loop.run_until_complete(
      sockpat::start_server(handle_client, args.get("host", "127.0.0.1"), args.get_port()));
  std::printf("listening on %s\n", server.local_endpoint().to_string().c_str());
  std::fflush(stdout);

  // Wait for connections, until Ctrl-C
  loop.run();

  // Shut the server down
  server.close();
  loop.run_until_complete(server.wait_closed());
  return 0;
}

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"host", "port"}, "async_hello_server [--host HOST] [--port PORT]");
  try {
    return serve(args);
  } catch (const std::exception& e) {
    // A port in use, a bad host: one line, not an abort.
    std::fprintf(stderr, "async_hello_server: %s\n", e.what());
    return 1;
  }
}

// line_client: talks to line_server. Sends each --command (or each line of standard input) and
// prints the reply. Run: line_client --port P [--host H] [--command "SET k v"]...
//
// It may start before the server: the connect is retried (with backoff) for up to 10 seconds.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "args.hpp"
#include "sockpat.hpp"

using namespace std::chrono_literals;

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"host", "port", "command"},
                           "line_client --port PORT [--host HOST] [--command LINE]...");
  if (!args.has("port")) args.fail("--port is required");
  try {
    const auto server = sockpat::resolve(args.get("host", "127.0.0.1"), args.get_port()).front();
    auto conn = sockpat::connect_with_retry<sockpat::Tcp>(server, 10s);
    sockpat::FramedConnection framed(conn);
    const auto send = [&](const std::string& command) {
      const auto reply = framed.request(sockpat::DelimiterFraming::lines(), command, 10s);
      std::printf("%s\n", reply.c_str());
      std::fflush(stdout);
    };
    if (args.has("command")) {
      for (const auto& command : args.all("command")) send(command);
    } else {
      for (std::string line; std::getline(std::cin, line);) send(line);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "line_client: %s\n", e.what());
    return 1;
  }
}

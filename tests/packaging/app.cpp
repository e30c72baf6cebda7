// A sockpat consumer: a listener and a connection on loopback exchange bytes both ways.
// Every install route in tests/packaging/run.sh builds this same file and runs it.
#include <sockpat.hpp>

#include <array>        // std::array
#include <chrono>       // std::chrono_literals
#include <cstdio>       // std::printf, std::fprintf
#include <exception>    // std::exception
#include <string_view>  // std::string_view

using namespace std::chrono_literals;

int main() {
  try {
    auto listener = sockpat::TcpListener::bind({"127.0.0.1", 0});  // port 0: the OS picks one
    const auto endpoint = listener.local_endpoint();
    auto client = sockpat::TcpConnection::connect(endpoint, 10s);  // the backlog completes it
    auto server = listener.accept(10s);

    client.write_all("ping", 10s);
    std::array<char, 4> got{};
    server.read_exactly(got, 10s);
    server.write_all("pong", 10s);
    std::array<char, 4> reply{};
    client.read_exactly(reply, 10s);

    const std::string_view request(got.data(), got.size()), answer(reply.data(), reply.size());
    if (request != "ping" || answer != "pong") {
      std::fprintf(stderr, "sockpat consumer: expected ping/pong, got %.4s/%.4s\n", got.data(), reply.data());
      return 1;
    }
    std::printf("sockpat %s consumer: ping -> pong over %s\n", SOCKPAT_VERSION_STRING,
                endpoint.to_string().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sockpat consumer: %s\n", e.what());
    return 1;
  }
}

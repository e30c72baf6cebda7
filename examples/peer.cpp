// peer: the second seed's peer. Listens on --listen and dials --connect from that same port until
// the two peers share one connection (either may start first), sends "Hello from NAME", prints the
// greeting it receives, sends it back upper-cased, and prints its own greeting as it comes back.
// Run: peer --listen 127.0.0.1:5000 --connect 127.0.0.1:6000 [--name NAME] [--timeout SECONDS]
//
// The seed binds and connects without listening, so it only works when both start at the same
// instant; sockpat::rendezvous also listens, so the order does not matter and a seed peer that
// starts second connects to this one.
#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <string>

#include "args.hpp"
#include "sockpat.hpp"

namespace {

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// The seed's exchange of greetings, over the connection the rendezvous made.
int exchange(sockpat::TcpConnection conn, const std::string& greeting, const sockpat::Deadline& deadline) {
  conn.write_all(greeting, deadline);

  // Like the seed, a greeting is what one read brings; but the other peer's upper-cased copy of
  // our greeting may come in the same read, so it is split off by its known length.
  const std::string expected_back = upper(greeting);
  std::array<char, 1024> buf{};
  std::string received(buf.data(), conn.read_some(buf, deadline));
  std::string back;
  if (received.size() > expected_back.size() && received.ends_with(expected_back)) {
    back = expected_back;
    received.resize(received.size() - expected_back.size());
  }
  std::printf("Received from peer: %s\n", received.c_str());
  std::fflush(stdout);

  std::error_code ec;
  conn.write_all(upper(received), deadline, ec);  // a seed peer may already have closed: not fatal
  while (back.size() < expected_back.size()) {
    const auto n = conn.read_some(std::span(buf).first(expected_back.size() - back.size()), deadline, ec);
    if (ec || n == 0) break;
    back.append(buf.data(), n);
  }
  std::printf("Received back: %s\n", back.c_str());
  return back == expected_back ? 0 : 1;
}

int run(const example::Args& args) {
  sockpat::SignalStop signals;
  const auto local = example::endpoint_arg(args.get("listen", "127.0.0.1:0"));
  // The other peer is named in our family: a rendezvous needs the very address it listens on.
  const auto remote = example::endpoint_arg(args.get("connect", ""), local.family());
  if (remote.family() != local.family()) {
    args.fail(("--connect " + remote.to_string() + " and --listen " + local.to_string() +
               " must be of one family (both IPv4 or both IPv6): a peer dials from the port it listens on")
                  .c_str());
  }
  const std::string greeting = "Hello from " + args.get("name", "Peer");
  const sockpat::Deadline deadline(std::chrono::seconds(args.get_int("timeout", 30, 1, 86400)), signals.token());

  // Bound here rather than inside rendezvous, so that what is printed is the real port, and
  // only once it listens.
  sockpat::ListenOptions listen_options;
  // rendezvous dials from this same port, which needs SO_REUSEPORT on the listener; claimed
  // (bound without it, set once listening) so that a port in use, even by another peer, fails.
  listen_options.claim_port = true;
  auto listener = sockpat::TcpListener::bind(local, listen_options);
  std::printf("listening on %s\n", listener.local_endpoint().to_string().c_str());
  std::fflush(stdout);
  try {
    return exchange(sockpat::rendezvous(listener, remote, deadline), greeting, deadline);
  } catch (const std::system_error& e) {
    // Ctrl-C or SIGTERM ends a peer as it ends the servers: quietly, with exit 0.
    if (e.code() == std::errc::operation_canceled && signals.token().stop_requested()) return 0;
    throw;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"listen", "connect", "name", "timeout"},
                           "peer --listen HOST:PORT --connect HOST:PORT [--name NAME] [--timeout SECONDS]");
  if (!args.has("connect")) args.fail("--connect is required");
  try {
    return run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "peer: %s\n", e.what());
    return 1;
  }
}

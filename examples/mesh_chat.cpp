// mesh_chat: a chat over a peer-to-peer mesh (sockpat::PeerThread). Each line read from standard
// input goes to every node of the mesh; each line from another node is printed once as
// "NAME: text". Knowing one member is enough: the others are discovered and dialed.
// Run: mesh_chat [--listen HOST:PORT] [--join HOST:PORT ...] [--name NAME] [--wait-peers N] [--timeout S]
//
// Prints "listening on HOST:PORT" first. With --wait-peers N it reads standard input only once
// N nodes are linked (so a script needs no sleep), and fails after --timeout seconds (30).
// Nodes joining and leaving (and why) are reported on standard error, and so is a line that went
// to no node (none linked yet). At the end of input it sends what
// is queued, closes its links and exits 0; SIGINT and SIGTERM stop it the same way.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>  // std::_Exit
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

#include "args.hpp"
#include "sockpat.hpp"

namespace {

std::mutex out_mutex;

void say(std::FILE* f, const std::string& line) {
  const std::lock_guard<std::mutex> lock(out_mutex);
  std::fputs(line.c_str(), f);
  std::fputc('\n', f);
  std::fflush(f);
}

std::string hex(std::uint64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

int run(const example::Args& args) {
  sockpat::SignalStop signals;
  sockpat::PeerOptions options;
  options.listen = example::endpoint_arg(args.get("listen", "127.0.0.1:0"));
  // Members are named in the family we listen in, so that "localhost" means one address.
  for (const auto& j : args.all("join")) options.join.push_back(example::endpoint_arg(j, options.listen.family()));
  const std::string name = args.get("name", "node");
  const auto wait_peers = static_cast<std::size_t>(args.get_int("wait-peers", 0, 0, 1000));
  const auto timeout = std::chrono::seconds(args.get_int("timeout", 30, 1, 86400));

  sockpat::PeerCallbacks callbacks;
  // A broadcast's payload is "NAME: text" already; the mesh delivers it here once.
  callbacks.on_message = [](const sockpat::PeerMessage& m) { say(stdout, m.payload); };
  callbacks.on_peer_joined = [](std::uint64_t id, const sockpat::Endpoint& at) {
    say(stderr, "joined " + hex(id) + " " + (at.empty() ? std::string("-") : at.to_string()));
  };
  callbacks.on_peer_left = [](const sockpat::PeerLeft& left) {
    std::string why = sockpat::to_string(left.reason);
    if (!left.detail.empty()) why += ": " + left.detail;
    say(stderr, "left " + hex(left.id) + " (" + why + ")");
  };
  sockpat::PeerThread node(options, callbacks);
  say(stdout, "listening on " + node.local_endpoint().to_string());

  if (wait_peers > 0 && !node.wait_for_peers(wait_peers, timeout)) {
    say(stderr, "mesh_chat: fewer than " + std::to_string(wait_peers) + " peers linked in time");
    return 1;
  }

  // Standard input is read on a thread of its own, so that a signal can end the wait even
  // while a read blocks; the process exits without waiting for that thread.
  std::mutex m;
  std::condition_variable cv;
  bool input_done = false;
  std::thread reader([&node, &name, &m, &cv, &input_done] {
    std::string line;
    while (std::getline(std::cin, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const auto sent = node.broadcast(name + ": " + line);
      if (!sent) say(stderr, std::string("mesh_chat: not sent (") + sockpat::to_string(sent.status) + ")");
    }
    const std::lock_guard<std::mutex> lock(m);
    input_done = true;
    cv.notify_all();
  });
  {
    const std::stop_callback on_signal(signals.token(), [&] {
      const std::lock_guard<std::mutex> lock(m);
      cv.notify_all();
    });
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return input_done || signals.stop_requested(); });
  }
  const bool finished_input = [&] {
    const std::lock_guard<std::mutex> lock(m);
    return input_done;
  }();
  if (finished_input) {
    reader.join();
  } else {
    reader.detach();  // blocked reading a terminal; the process ends it
  }
  node.stop();  // what was broadcast is sent before the links close
  if (!finished_input) std::_Exit(0);  // the detached reader must not outlive main's locals
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"listen", "join", "name", "wait-peers", "timeout"},
                           "mesh_chat [--listen HOST:PORT] [--join HOST:PORT ...] [--name NAME] "
                           "[--wait-peers N] [--timeout SECONDS]  (--listen: 127.0.0.1:0)");
  try {
    return run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mesh_chat: %s\n", e.what());
    return 1;
  }
}

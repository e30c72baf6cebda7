// chat_server: each line a client sends goes to every other client, through a bounded queue and a
// writer task per client, so a sender never waits; a client whose backlog stays high is dropped
// (Redis's client-output-buffer-limit). Run: chat_server [--host H] [--port P] [--drop-after MS]
#include <algorithm>     // std::find
#include <chrono>        // std::chrono::steady_clock, milliseconds
#include <cstddef>       // std::size_t
#include <cstdio>        // std::printf, std::fprintf
#include <optional>      // std::optional
#include <string>        // std::string
#include <system_error>  // std::system_error, std::errc
#include <utility>       // std::move
#include <vector>        // std::vector

#include "args.hpp"
#include "sockpat.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Limits {
  std::size_t soft = 256 * 1024;    // bytes queued for one client: tolerated for `grace`
  std::size_t hard = 1024 * 1024;   // never: the client is dropped at once
  Clock::duration grace = std::chrono::milliseconds(2000);
};

// A line costs its bytes and its std::string, as Redis counts memory rather than payload; so
// the hard limit also bounds how many lines a queue holds, and that is its capacity.
std::size_t cost_of(const std::string& line) { return line.size() + sizeof(std::string); }

struct Client {
  Client(std::string peer, sockpat::StreamWriter& w, const Limits& limits)
      : name(std::move(peer)), writer(w), queue(limits.hard / sizeof(std::string) + 1) {}
  std::string name;
  sockpat::StreamWriter& writer;
  sockpat::Queue<std::string> queue;
  std::size_t owed = 0;  // bytes queued for it, and the line being written
  std::optional<Clock::time_point> over_soft_since;
  bool dropped = false;
};

class Room {
 public:
  explicit Room(Limits limits) : limits_(limits) {}
  [[nodiscard]] const Limits& limits() const { return limits_; }

  void join(Client& c) {
    clients_.push_back(&c);
    std::fprintf(stderr, "chat_server: %s joined (%zu here)\n", c.name.c_str(), clients_.size());
  }
  void leave(Client& c, const char* how) {
    clients_.erase(std::find(clients_.begin(), clients_.end(), &c));
    std::fprintf(stderr, "chat_server: %s %s (%zu here)\n", c.name.c_str(), how, clients_.size());
  }

  /// Queues `line` for everyone but its sender; never waits.
  void broadcast(const Client& from, const std::string& line) {
    for (Client* c : clients_) {
      if (c != &from && !c->dropped) deliver(*c, line);
    }
  }

  /// A client's writer has handed `line` to its connection.
  void sent(Client& c, const std::string& line) {
    c.owed -= cost_of(line);
    if (c.owed <= limits_.soft) c.over_soft_since.reset();
  }

 private:
  void deliver(Client& c, const std::string& line) {
    c.owed += cost_of(line);
    if (c.owed > limits_.hard || !c.queue.try_put(line)) return drop(c, "the hard limit");
    if (c.owed <= limits_.soft) return;
    // Checked as lines arrive for it: a backlog nobody adds to harms no one else.
    const auto now = Clock::now();
    if (!c.over_soft_since) {
      c.over_soft_since = now;
    } else if (now - *c.over_soft_since > limits_.grace) {
      drop(c, "the soft limit for too long");
    }
  }

  // Its queue ends (its writer task with it) and its connection is closed now, without
  // flushing what is buffered for a reader that is not reading; that also ends its pending read.
  void drop(Client& c, const char* why) {
    std::fprintf(stderr, "chat_server: %s dropped: %zu bytes queued, over %s\n", c.name.c_str(), c.owed, why);
    c.dropped = true;
    c.queue.close();
    while (c.queue.try_get()) {
    }
    c.writer.abort();
  }

  Limits limits_;
  std::vector<Client*> clients_;
};

sockpat::Task<void> write_lines(Room& room, Client& c) {
  try {
    for (;;) {
      const std::string line = co_await c.queue.get();
      co_await c.writer.write(line);
      room.sent(c, line);
    }
  } catch (const std::system_error&) {
    // The queue was closed (the client left or was dropped), the connection failed, or the
    // task was cancelled: its reader sees the end as well, and the client leaves from there.
  }
}

sockpat::Task<void> chat(Room& room, sockpat::StreamReader reader, sockpat::StreamWriter writer) {
  Client me(writer.peer_endpoint().to_string(), writer, room.limits());
  room.join(me);
  // The writer task lives in a group inside this handler: it cannot outlive `me`.
  co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
    group.create_task(write_lines(room, me));
    const char* how = "left";
    try {
      while (auto line = co_await reader.read_line()) room.broadcast(me, *line);
    } catch (const std::system_error& e) {
      // A reset, a line over the reader's limit, its connection dropped, the server closing.
      if (me.dropped) how = "left, dropped";
      else if (e.code() == std::errc::operation_canceled) how = "left, the server closing";
      else how = "left after a reset or a line too long";
    }
    room.leave(me, how);
    me.queue.close();
    group.cancel();  // its writer may be waiting for a client that does not read
  });
}

int run(const example::Args& args) {
  const std::string host = args.get("host", "127.0.0.1");
  Limits limits;
  limits.grace = std::chrono::milliseconds(args.get_int("drop-after", 2000, 0, 3600 * 1000));
  sockpat::SignalStop signals;
  sockpat::EventLoop loop;
  loop.stop_when(signals.token());
  Room room(limits);
  // server.close() cancels the handlers at once: each one's group then cancels its writer task.
  auto server = loop.run_until_complete(sockpat::start_server(
      [&room](sockpat::StreamReader r, sockpat::StreamWriter w) { return chat(room, std::move(r), std::move(w)); },
      host, args.get_port()));
  std::printf("listening on %s\n", server.local_endpoint().to_string().c_str());
  std::fflush(stdout);
  loop.run();
  server.close();
  loop.run_until_complete(server.wait_closed());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"host", "port", "drop-after"},
                           "chat_server [--host HOST] [--port PORT] [--drop-after MS]");
  try {
    return run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "chat_server: %s\n", e.what());
    return 1;
  }
}

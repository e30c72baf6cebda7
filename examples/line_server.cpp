// line_server: a tiny key-value store spoken in lines, one store shared by every client and guarded
// by a mutex. Run: line_server [--host H] [--port P] [--threads N]; talk to it with line_client.
//
//   SET key value   -> OK              GET key -> VALUE value | NOT_FOUND
//   DEL key         -> DELETED | NOT_FOUND      QUIT -> BYE (and the server closes)
// Lines end in "\n" or "\r\n" (telnet works); a line over 4 KiB gets "ERROR line too long".
#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "args.hpp"
#include "sockpat.hpp"

using namespace std::chrono_literals;

namespace {

class Store {
 public:
  void set(std::string_view key, std::string_view value) {
    std::lock_guard lock(mutex_);
    map_.insert_or_assign(std::string(key), std::string(value));
  }
  std::optional<std::string> get(std::string_view key) const {
    std::lock_guard lock(mutex_);
    const auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    return it->second;
  }
  bool del(std::string_view key) {
    std::lock_guard lock(mutex_);
    const auto it = map_.find(key);
    if (it == map_.end()) return false;
    map_.erase(it);
    return true;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::string, std::less<>> map_;
};

/// Splits off the first space-separated word of `rest`.
std::string_view next_word(std::string_view& rest) {
  const auto start = rest.find_first_not_of(' ');
  if (start == std::string_view::npos) return rest = {};
  rest.remove_prefix(start);
  const auto end = std::min(rest.find(' '), rest.size());
  const auto word = rest.substr(0, end);
  rest.remove_prefix(end < rest.size() ? end + 1 : end);
  return word;
}

/// The reply to one command line; std::nullopt for QUIT.
std::optional<std::string> execute(Store& store, std::string_view line) {
  const auto command = next_word(line);
  const auto key = next_word(line);
  if (command == "QUIT") return std::nullopt;
  if (key.empty()) return command.empty() ? "ERROR empty line" : "ERROR " + std::string(command) + " needs a key";
  if (command == "SET") {
    store.set(key, line);  // the value is the rest of the line, spaces and all
    return "OK";
  }
  if (command == "GET") {
    const auto value = store.get(key);
    return value ? "VALUE " + *value : "NOT_FOUND";
  }
  if (command == "DEL") return store.del(key) ? "DELETED" : "NOT_FOUND";
  return "ERROR unknown command " + std::string(command);
}

int serve(const example::Args& args) {
  sockpat::SignalStop signals;
  Store store;
  sockpat::ServerOptions options;
  options.threads = static_cast<std::size_t>(args.get_int("threads", 0, 0, 1024));  // 0: one per hardware thread
  options.idle_timeout = 5min;

  sockpat::TcpServer server(
      sockpat::TcpListener::bind(args.get("host", "127.0.0.1"), args.get_port()),
      [&store](sockpat::TcpConnection& conn) {
        // Lines as frames: "\n" or "\r\n" dropped (read_line would keep it), 4 KiB at most.
        const auto lines = sockpat::DelimiterFraming::lines(4096);
        sockpat::FramedConnection framed(conn);
        std::error_code ec;
        while (const auto line = framed.read_frame(lines, sockpat::Deadline{}, ec)) {
          const auto reply = execute(store, *line);
          framed.write_line(reply.value_or("BYE"), 10s);
          if (!reply) return;
        }
        // A client leaving, or going silent past the idle timeout, is not worth a report.
        if (ec == sockpat::errc::frame_too_large) framed.write_line("ERROR line too long", 10s, ec);
      },
      options);
  std::printf("listening on %s\n", server.local_endpoint().to_string().c_str());
  std::fflush(stdout);
  server.serve(signals.token(), signals.urgent_token());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"host", "port", "threads"},
                           "line_server [--host HOST] [--port PORT] [--threads N]");
  try {
    return serve(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "line_server: %s\n", e.what());
    return 1;
  }
}

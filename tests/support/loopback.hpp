// Test helpers: loopback listeners on port 0, bounded waits, descriptor counts.
#ifndef SOCKPAT_TESTS_SUPPORT_LOOPBACK_HPP
#define SOCKPAT_TESTS_SUPPORT_LOOPBACK_HPP

#include <chrono>      // std::chrono_literals
#include <filesystem>  // std::filesystem::directory_iterator, temp_directory_path
#include <string>      // std::string

#include <unistd.h>  // getpid

#include "sockpat/listener.hpp"

namespace test {

using namespace std::chrono_literals;

/// A listener on 127.0.0.1 with a port the OS picked.
inline sockpat::TcpListener loopback_listener(const sockpat::ListenOptions& o = {}) {
  return sockpat::TcpListener::bind({"127.0.0.1", 0}, o);
}

/// Both ends of one loopback TCP connection.
struct ConnectedPair {
  sockpat::TcpConnection client;
  sockpat::TcpConnection server;
};

inline ConnectedPair connected_pair() {
  auto listener = loopback_listener();
  auto client = sockpat::TcpConnection::connect(listener.local_endpoint(), 5s);
  auto server = listener.accept(5s);
  return {std::move(client), std::move(server)};
}

/// The number of open descriptors of this process.
inline int open_descriptors() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

/// A fresh path for a Unix-domain socket, removed when the object dies.
class TempSocketPath {
 public:
  explicit TempSocketPath(const std::string& stem) {
    static int counter = 0;
    path_ = (std::filesystem::temp_directory_path() /
             ("sockpat-" + stem + '-' + std::to_string(::getpid()) + '-' + std::to_string(++counter) + ".sock"))
                .string();
    std::filesystem::remove(path_);
  }
  TempSocketPath(const TempSocketPath&) = delete;
  TempSocketPath& operator=(const TempSocketPath&) = delete;
  ~TempSocketPath() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace test

#endif

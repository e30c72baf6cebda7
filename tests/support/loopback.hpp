// Test helpers: loopback listeners on port 0, bounded waits, descriptor counts.
#ifndef SOCKPAT_TESTS_SUPPORT_LOOPBACK_HPP
#define SOCKPAT_TESTS_SUPPORT_LOOPBACK_HPP

#include <chrono>      // std::chrono_literals
#include <filesystem>  // std::filesystem::directory_iterator, temp_directory_path
#include <stdexcept>   // std::runtime_error
#include <string>      // std::string
#include <utility>     // std::pair, std::move

#include "sockpat/listener.hpp"

#if defined(_WIN32)
#include <process.h>  // _getpid
#include <windows.h>  // GetProcessHandleCount (sockpat has included it already, lean)
#else
#include <unistd.h>  // getpid
#endif

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

#if defined(_WIN32)
// Windows has no socketpair: where a test needs any two connected stream ends, a loopback TCP pair.
using LocalConnection = sockpat::TcpConnection;
inline std::pair<LocalConnection, LocalConnection> local_pair() {
  auto p = connected_pair();
  return {std::move(p.client), std::move(p.server)};
}
#else
using LocalConnection = sockpat::UnixConnection;
inline std::pair<LocalConnection, LocalConnection> local_pair() { return sockpat::UnixConnection::pair(); }
#endif

inline int process_id() {
#if defined(_WIN32)
  return ::_getpid();
#else
  return static_cast<int>(::getpid());
#endif
}

/// The number of open descriptors (on Windows: kernel handles, sockets among them) of this process.
inline int open_descriptors() {
#if defined(_WIN32)
  DWORD n = 0;
  if (!::GetProcessHandleCount(::GetCurrentProcess(), &n)) throw std::runtime_error("GetProcessHandleCount failed");
  return static_cast<int>(n);
#else
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
#endif
}

/// Whether this Windows program runs under Wine (whose ntdll exports wine_get_version). Wine runs
/// Winsock over the host's sockets and differs from Windows in a few places, each listed with
/// its test in docs/platforms.md.
inline bool running_under_wine() {
#if defined(_WIN32)
  const HMODULE ntdll = ::GetModuleHandleA("ntdll.dll");
  return ntdll != nullptr && ::GetProcAddress(ntdll, "wine_get_version") != nullptr;
#else
  return false;
#endif
}

/// Whether this system opens AF_UNIX stream sockets (Windows 10 1803+; not Wine 8).
inline bool unix_sockets_supported() {
  std::error_code ec;
  sockpat::UnixSocket probe(sockpat::Family::unix_domain, ec);
  return !ec;
}

/// A fresh path for a Unix-domain socket, removed when the object dies.
class TempSocketPath {
 public:
  explicit TempSocketPath(const std::string& stem) {
    static int counter = 0;
    path_ = (std::filesystem::temp_directory_path() /
             ("sockpat-" + stem + '-' + std::to_string(process_id()) + '-' + std::to_string(++counter) + ".sock"))
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

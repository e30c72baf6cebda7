// Test helpers for TLS: the certificates of this run, and a Python ssl peer.
#ifndef SOCKPAT_TESTS_SUPPORT_TLS_PEER_HPP
#define SOCKPAT_TESTS_SUPPORT_TLS_PEER_HPP

#include <doctest/doctest.h>

#include <array>      // std::array: a line of the peer's output
#include <cstdio>     // popen, fgets, pclose: the Python peer
#include <cstdlib>    // std::getenv
#include <stdexcept>  // std::runtime_error
#include <string>     // std::string, std::stoi

namespace test {

/// A certificate or key that tests/tls/make_certs.py made for this run (the tls_certs fixture).
inline std::string cert(const std::string& name) {
  const char* dir = std::getenv("SOCKPAT_TLS_CERTS");
  if (dir == nullptr) throw std::runtime_error("SOCKPAT_TLS_CERTS is not set: run through ctest (fixture tls_certs)");
  return std::string(dir) + '/' + name;
}

/// A Python ssl peer (tests/tls/tls_peer.py), started with popen. Its lines are read blocking,
/// bounded by the script itself: every socket call has a timeout and --timeout bounds the run.
class PythonPeer {
 public:
  explicit PythonPeer(const std::string& args) {
    const std::string command =
        std::string(SOCKPAT_TEST_PYTHON) + " " + SOCKPAT_TLS_PEER + " " + args + " --timeout 20 2>&1";
    pipe_ = ::popen(command.c_str(), "r");
    if (pipe_ == nullptr) throw std::runtime_error("cannot start " + command);
  }
  PythonPeer(const PythonPeer&) = delete;
  PythonPeer& operator=(const PythonPeer&) = delete;
  ~PythonPeer() {
    if (pipe_ != nullptr) ::pclose(pipe_);
  }
  std::string line() {
    std::array<char, 512> buf{};
    if (std::fgets(buf.data(), static_cast<int>(buf.size()), pipe_) == nullptr) return "(no output)";
    std::string s(buf.data());
    if (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }
  int port() {
    const auto l = line();
    REQUIRE_MESSAGE(l.rfind("port ", 0) == 0, l);
    return std::stoi(l.substr(5));
  }

 private:
  FILE* pipe_ = nullptr;
};

}  // namespace test

#endif  // SOCKPAT_TESTS_SUPPORT_TLS_PEER_HPP

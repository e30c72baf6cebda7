// Test helpers for connecting by name: resolvers that answer chosen addresses, take their time or
// hang until released, and a listener that drops SYNs (its accept queue is full).
#ifndef SOCKPAT_TESTS_SUPPORT_RESOLVERS_HPP
#define SOCKPAT_TESTS_SUPPORT_RESOLVERS_HPP

#include <chrono>              // std::chrono_literals
#include <condition_variable>  // std::condition_variable
#include <cstdint>             // std::uint16_t
#include <memory>              // std::shared_ptr, std::make_shared
#include <mutex>               // std::mutex, std::unique_lock
#include <string>              // std::string
#include <system_error>        // std::error_code
#include <thread>              // std::this_thread::sleep_for: the slow resolver's 2 s
#include <utility>             // std::move
#include <vector>              // std::vector

#include "sockpat/connection.hpp"
#include "sockpat/listener.hpp"
#include "sockpat/resolver.hpp"

namespace test {

using namespace std::chrono_literals;

/// A resolver answering `hosts` (numeric addresses) with the port asked for.
inline sockpat::Resolver fixed_resolver(std::vector<std::string> hosts) {
  return [hosts = std::move(hosts)](const std::string&, std::uint16_t port, std::error_code&) {
    std::vector<sockpat::Endpoint> out;
    for (const auto& h : hosts) out.emplace_back(h, port);
    return out;
  };
}

/// A resolver that takes `delay` before answering 127.0.0.1: the slow DNS server of the issue.
inline sockpat::Resolver slow_resolver(std::chrono::milliseconds delay) {
  return [delay](const std::string&, std::uint16_t port, std::error_code&) {
    std::this_thread::sleep_for(delay);
    return std::vector<sockpat::Endpoint>{{"127.0.0.1", port}};
  };
}

/// A resolver that hangs until release(), then answers 127.0.0.1. It tells when it was entered
/// and, through `freed()`, when the helper thread has let go of it (its copy was destroyed): how
/// a test sees that a late answer was dropped rather than kept.
class Hang {
 public:
  Hang() : s_(std::make_shared<State>()) {}
  Hang(const Hang&) = delete;
  Hang& operator=(const Hang&) = delete;
  ~Hang() { release(); }

  [[nodiscard]] sockpat::Resolver resolver() const {
    auto token = std::make_shared<Token>(s_);
    return [s = s_, token](const std::string&, std::uint16_t port, std::error_code&) {
      std::unique_lock<std::mutex> lock(s->mutex);
      ++s->entered;
      s->changed.notify_all();
      s->changed.wait(lock, [&] { return s->released; });
      return std::vector<sockpat::Endpoint>{{"127.0.0.1", port}};
    };
  }
  void release() {
    const std::lock_guard<std::mutex> lock(s_->mutex);
    s_->released = true;
    s_->changed.notify_all();
  }
  /// Waits (at most `limit`) until the resolver has been called `n` times in all.
  bool entered(int n = 1, std::chrono::milliseconds limit = 5000ms) {
    std::unique_lock<std::mutex> lock(s_->mutex);
    return s_->changed.wait_for(lock, limit, [&] { return s_->entered >= n; });
  }
  /// How many times the resolver has been called so far.
  [[nodiscard]] int calls() const {
    const std::lock_guard<std::mutex> lock(s_->mutex);
    return s_->entered;
  }
  /// Waits (at most `limit`) until every copy of every resolver() made so far was destroyed.
  bool freed(std::chrono::milliseconds limit = 5000ms) {
    std::unique_lock<std::mutex> lock(s_->mutex);
    return s_->changed.wait_for(lock, limit, [&] { return s_->tokens == 0; });
  }

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable changed;
    int entered = 0;
    int tokens = 0;
    bool released = false;
  };
  // Counts the resolvers alive: each resolver() holds one token, freed with its last copy.
  struct Token {
    explicit Token(std::shared_ptr<State> s) : s_(std::move(s)) {
      const std::lock_guard<std::mutex> lock(s_->mutex);
      ++s_->tokens;
    }
    Token(const Token&) = delete;
    Token& operator=(const Token&) = delete;
    ~Token() {
      const std::lock_guard<std::mutex> lock(s_->mutex);
      --s_->tokens;
      s_->changed.notify_all();
    }
    std::shared_ptr<State> s_;
  };
  std::shared_ptr<State> s_;
};

/// A listener on 127.0.0.1 whose accept queue is full: Linux drops further SYNs, so a connect
/// to it stays pending (as to a black-holed address) until its deadline. The fillers hold the
/// queue; nothing accepts.
struct SilentListener {
  sockpat::TcpListener listener;
  std::vector<sockpat::TcpConnection> fillers;
  [[nodiscard]] sockpat::Endpoint endpoint() const { return listener.local_endpoint(); }
};

inline SilentListener silent_listener() {
  sockpat::ListenOptions o;
  o.backlog = 0;
  SilentListener s{sockpat::TcpListener::bind({"127.0.0.1", 0}, o), {}};
  std::error_code ec;
  for (int i = 0; i < 64 && !ec; ++i) {
    auto c = sockpat::TcpConnection::connect(s.endpoint(), sockpat::ConnectOptions::with_deadline(100ms), ec);
    if (!ec) s.fillers.push_back(std::move(c));
  }
  if (ec != std::errc::timed_out) throw std::system_error(ec, "filling a listener's accept queue");
  return s;
}

/// A port on 127.0.0.1 (and, nothing listening there, on ::1) that refuses: bound, read back, released.
inline std::uint16_t closed_port() {
  auto l = sockpat::TcpListener::bind({"127.0.0.1", 0});
  return l.local_endpoint().port();
}

}  // namespace test

#endif  // SOCKPAT_TESTS_SUPPORT_RESOLVERS_HPP

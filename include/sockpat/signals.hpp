// sockpat: SIGINT and SIGTERM as a std::stop_token, for servers that stop cleanly on Ctrl-C.
#ifndef SOCKPAT_SIGNALS_HPP
#define SOCKPAT_SIGNALS_HPP

#include <atomic>        // std::atomic
#include <stdexcept>     // std::logic_error
#include <stop_token>    // std::stop_source, std::stop_token
#include <system_error>  // std::system_error
#include <thread>        // std::thread: a watcher turns the handler's byte into request_stop()

#include "sockpat/detail/signal.hpp"

namespace sockpat {

/// While alive, SIGINT and SIGTERM (on Windows: Ctrl-C, Ctrl-Break and closing the console) request
/// a stop on token() instead of killing the process;
/// the previous handlers come back when it is destroyed. One instance at a time per process.
/// request_stop() is not async-signal-safe, so the handler only writes a byte and a small
/// watcher thread makes the request.
class SignalStop {
 public:
  SignalStop() {
    if (active().exchange(true)) throw std::logic_error("sockpat: only one SignalStop may be alive at a time");
    if (auto ec = pipe_.install()) {
      active() = false;
      throw std::system_error(ec, "SignalStop");
    }
    watcher_ = std::thread([this] {
      while (const int signo = pipe_.wait()) {
        // The first signal asks for a graceful stop; a second one (Ctrl-C again, or SIGTERM
        // after SIGINT) asks to end the grace.
        if (source_.stop_requested()) {
          urgent_.request_stop();
        } else {
          signal_.store(signo);
          source_.request_stop();
        }
      }
    });
  }
  SignalStop(const SignalStop&) = delete;
  SignalStop& operator=(const SignalStop&) = delete;
  ~SignalStop() {
    pipe_.poke();
    watcher_.join();
    pipe_.uninstall();
    active() = false;
  }

  /// Requested by the first signal.
  [[nodiscard]] std::stop_token token() const noexcept { return source_.get_token(); }
  /// Requested by a second signal, while the first one's graceful stop is under way: for
  /// Server::serve(token(), urgent_token()), which then cancels the handlers still finishing.
  [[nodiscard]] std::stop_token urgent_token() const noexcept { return urgent_.get_token(); }
  [[nodiscard]] bool stop_requested() const noexcept { return source_.stop_requested(); }
  /// Requests the stop by hand, as a signal would.
  void request_stop() noexcept { source_.request_stop(); }
  /// The signal that requested the stop (SIGINT, SIGTERM), or 0. On Windows: SIGINT for Ctrl-C,
  /// SIGBREAK for Ctrl-Break, SIGTERM for closing the console window.
  [[nodiscard]] int signal() const noexcept { return signal_.load(); }

 private:
  static std::atomic<bool>& active() noexcept {
    static std::atomic<bool> flag{false};
    return flag;
  }

  detail::SignalPipe pipe_;
  std::stop_source source_;
  std::stop_source urgent_;
  std::atomic<int> signal_{0};
  std::thread watcher_;
};

}  // namespace sockpat

#endif  // SOCKPAT_SIGNALS_HPP

// sockpat: SIGINT/SIGTERM turned into bytes on a self-pipe, the one thing a handler may do safely.
#ifndef SOCKPAT_DETAIL_SIGNAL_HPP
#define SOCKPAT_DETAIL_SIGNAL_HPP

#include <atomic>        // std::atomic
#include <system_error>  // std::error_code

#include "sockpat/detail/syscall.hpp"

namespace sockpat::detail {

inline std::atomic<int>& signal_pipe_write_end() noexcept {
  static std::atomic<int> fd{invalid_handle};
  return fd;
}

extern "C" inline void sockpat_on_signal(int signo) {
  const int saved = errno;  // a handler must leave errno as it found it
  const int fd = signal_pipe_write_end().load(std::memory_order_relaxed);
  if (fd != invalid_handle) {
    const unsigned char byte = static_cast<unsigned char>(signo);
    (void)!::write(fd, &byte, 1);  // a full pipe already holds a wake-up
  }
  errno = saved;
}

inline constexpr int stop_signals[] = {SIGINT, SIGTERM};

/// Installs the handlers; `previous` receives the old dispositions for restore_stop_signals.
struct SignalPipe {
  int read_end = invalid_handle;
  int write_end = invalid_handle;
  struct sigaction previous[2] {};

  std::error_code install() noexcept {
    int fds[2];
    if (::pipe(fds) != 0) return last_error();
    for (int fd : fds) {
      if (auto ec = set_nonblocking_cloexec(fd)) {
        close_handle(fds[0]);
        close_handle(fds[1]);
        return ec;
      }
    }
    read_end = fds[0];
    write_end = fds[1];
    signal_pipe_write_end().store(write_end);
    struct sigaction sa {};
    sa.sa_handler = &sockpat_on_signal;
    ::sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (int i = 0; i < 2; ++i) ::sigaction(stop_signals[i], &sa, &previous[i]);
    return {};
  }

  void uninstall() noexcept {
    for (int i = 0; i < 2; ++i) ::sigaction(stop_signals[i], &previous[i], nullptr);
    signal_pipe_write_end().store(invalid_handle);
    close_handle(read_end);
    close_handle(write_end);
    read_end = write_end = invalid_handle;
  }

  /// Waits for a byte: the signal number, or 0 for "quit" (written by poke()).
  [[nodiscard]] int wait() const noexcept {
    for (;;) {
      ::pollfd p{read_end, POLLIN, 0};
      if (::poll(&p, 1, -1) < 0 && errno != EINTR) return 0;
      unsigned char byte = 0;
      const auto r = ::read(read_end, &byte, 1);
      if (r == 1) return byte;
      if (r == 0 || (errno != EINTR && errno != EAGAIN)) return 0;
    }
  }

  void poke() const noexcept {
    const unsigned char zero = 0;
    (void)!::write(write_end, &zero, 1);
  }
};

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_SIGNAL_HPP

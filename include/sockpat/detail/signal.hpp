// sockpat: stop requests from outside turned into bytes on a self-pipe, the one thing a handler
// may do safely. POSIX: SIGINT/SIGTERM handlers. Windows: a console control handler
// (Ctrl-C, Ctrl-Break, closing the console window) writing to a loopback socket pair.
#ifndef SOCKPAT_DETAIL_SIGNAL_HPP
#define SOCKPAT_DETAIL_SIGNAL_HPP

#include <atomic>        // std::atomic
#include <system_error>  // std::error_code

#include "sockpat/detail/syscall.hpp"

namespace sockpat::detail {

inline std::atomic<native_handle>& signal_pipe_write_end() noexcept {
  static std::atomic<native_handle> fd{invalid_handle};
  return fd;
}

#if defined(SOCKPAT_POSIX)
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
#endif

#if defined(SOCKPAT_WINDOWS)
/// The signal number SignalStop::signal() reports for a console control event, or 0 for the
/// events it leaves to the next handler (logoff and shutdown reach services, not consoles).
inline int signal_of_console_event(DWORD event) noexcept {
  switch (event) {
    case CTRL_C_EVENT: return SIGINT;
    case CTRL_BREAK_EVENT: return SIGBREAK;
    case CTRL_CLOSE_EVENT: return SIGTERM;
    default: return 0;
  }
}

/// The console control handler. Windows runs it on a thread of its own, so it may do more than a
/// POSIX signal handler; it still only writes a byte, so both platforms share one watcher.
/// Windows ends the process when the handler of a CTRL_CLOSE_EVENT returns (or after 5 s).
inline BOOL WINAPI sockpat_on_console_event(DWORD event) {
  const int signo = signal_of_console_event(event);
  const native_handle s = signal_pipe_write_end().load();
  if (signo == 0 || s == invalid_handle) return FALSE;
  const char byte = static_cast<char>(signo);
  (void)::send(s, &byte, 1, 0);  // a full buffer already holds a wake-up
  return TRUE;
}
#endif

/// Installs the handlers; `previous` receives the old dispositions, which uninstall() restores.
/// A signal the process ignored at start (SIG_IGN, as `nohup` or a shell's background job sets
/// SIGINT) stays ignored, as Python leaves it.
struct SignalPipe {
  native_handle read_end = invalid_handle;
  native_handle write_end = invalid_handle;
#if defined(SOCKPAT_POSIX)
  struct sigaction previous[2] {};
  bool installed[2] = {false, false};
#endif

#if defined(SOCKPAT_POSIX)
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
    for (int i = 0; i < 2; ++i) {
      installed[i] = ::sigaction(stop_signals[i], nullptr, &previous[i]) == 0 && previous[i].sa_handler != SIG_IGN;
      if (installed[i]) ::sigaction(stop_signals[i], &sa, nullptr);
    }
    return {};
  }

  void uninstall() noexcept {
    for (int i = 0; i < 2; ++i) {
      if (installed[i]) ::sigaction(stop_signals[i], &previous[i], nullptr);
      installed[i] = false;
    }
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
#endif

#if defined(SOCKPAT_WINDOWS)
  std::error_code install() noexcept {
    native_handle pair[2];
    if (auto ec = socket_pair(AF_INET, SOCK_STREAM, pair)) return ec;
    (void)set_int_option(pair[1], IPPROTO_TCP, TCP_NODELAY, 1);  // the byte goes out at once
    read_end = pair[0];
    write_end = pair[1];
    signal_pipe_write_end().store(write_end);
    if (!::SetConsoleCtrlHandler(&sockpat_on_console_event, TRUE)) {
      const auto ec = os_error(static_cast<int>(::GetLastError()));
      signal_pipe_write_end().store(invalid_handle);
      close_handle(read_end);
      close_handle(write_end);
      read_end = write_end = invalid_handle;
      return ec;
    }
    return {};
  }

  // Removing our handler leaves the chain as it was: the previous handlers are in force again.
  void uninstall() noexcept {
    ::SetConsoleCtrlHandler(&sockpat_on_console_event, FALSE);
    signal_pipe_write_end().store(invalid_handle);
    close_handle(read_end);
    close_handle(write_end);
    read_end = write_end = invalid_handle;
  }

  /// Waits for a byte: the signal number, or 0 for "quit" (written by poke()).
  [[nodiscard]] int wait() const noexcept {
    for (;;) {
      ::WSAPOLLFD p{read_end, POLLIN, 0};
      if (::WSAPoll(&p, 1, -1) < 0) return 0;
      char byte = 0;
      const int r = ::recv(read_end, &byte, 1, 0);
      if (r == 1) return static_cast<unsigned char>(byte);
      if (r == 0 || ::WSAGetLastError() != WSAEWOULDBLOCK) return 0;
    }
  }

  void poke() const noexcept {
    const char zero = 0;
    (void)::send(write_end, &zero, 1, 0);
  }
#endif
};

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_SIGNAL_HPP

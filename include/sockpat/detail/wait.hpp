// sockpat: waiting for a socket to become ready, bounded by a deadline and a stop token.
#ifndef SOCKPAT_DETAIL_WAIT_HPP
#define SOCKPAT_DETAIL_WAIT_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock
#include <climits>       // INT_MAX
#include <cstdint>       // std::uint64_t
#include <new>           // std::bad_alloc
#include <optional>      // std::optional
#include <stop_token>    // std::stop_token, std::stop_callback
#include <system_error>  // std::error_code

#include "sockpat/detail/per_thread.hpp"
#include "sockpat/detail/syscall.hpp"

namespace sockpat::detail {

using steady_time = std::chrono::steady_clock::time_point;
// Parenthesised: a user's <windows.h> without NOMINMAX makes max a function-like macro.
inline constexpr steady_time no_deadline = (steady_time::max)();

/// A per-thread wake-up descriptor that a stop callback signals from another thread to end
/// a poll() early. Opened the first time a thread waits with a stop token, closed at thread exit.
/// POSIX: an eventfd (Linux) or a pipe. Windows: WSAPoll waits on sockets only, so the channel
/// is a connected TCP pair over 127.0.0.1; an event loop's call_soon_threadsafe() wake-up is the same pair.
class Waker {
 public:
  Waker() noexcept = default;
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;
  ~Waker() {
    if (read_ != invalid_handle) close_handle(read_);
    if (write_ != invalid_handle && write_ != read_) close_handle(write_);
  }

  std::error_code open() noexcept {
    if (read_ != invalid_handle) return {};
#if defined(SOCKPAT_LINUX)
    const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return last_error();
    read_ = write_ = fd;
#elif defined(SOCKPAT_WINDOWS)
    native_handle pair[2];
    if (auto ec = socket_pair(AF_INET, SOCK_STREAM, pair)) return ec;
    // One byte must go out at once, not wait for Nagle's timer.
    (void)set_int_option(pair[1], IPPROTO_TCP, TCP_NODELAY, 1);
    read_ = pair[0];
    write_ = pair[1];
#else
    int fds[2];
    if (::pipe(fds) != 0) return last_error();
    for (int fd : fds) {
      if (auto ec = set_nonblocking_cloexec(fd)) {
        close_handle(fds[0]);
        close_handle(fds[1]);
        return ec;
      }
    }
    read_ = fds[0];
    write_ = fds[1];
#endif
    return {};
  }

  [[nodiscard]] native_handle read_handle() const noexcept { return read_; }

#if defined(SOCKPAT_WINDOWS)
  void notify() const noexcept {
    const char one = 1;
    // A full socket buffer already means "woken": the result is not needed.
    (void)::send(write_, &one, 1, 0);
  }

  void drain() const noexcept {
    char buf[64];
    while (::recv(read_, buf, sizeof buf, 0) > 0) {
    }
  }
#else
  void notify() const noexcept {
    const std::uint64_t one = 1;
    // A full pipe or counter already means "woken": the result is not needed.
    while (::write(write_, &one, write_ == read_ ? sizeof one : 1) < 0 && errno == EINTR) {
    }
  }

  void drain() const noexcept {
    std::uint64_t buf[8];
    while (::read(read_, buf, sizeof buf) > 0 || errno == EINTR) {
      if (write_ == read_) break;  // an eventfd is emptied by one read
    }
  }
#endif

 private:
  native_handle read_ = invalid_handle;
  native_handle write_ = invalid_handle;
};

inline Waker* thread_waker(std::error_code& ec) noexcept {
  try {
    Waker& waker = per_thread<Waker>();
    ec = waker.open();
    return ec ? nullptr : &waker;
  } catch (const std::bad_alloc&) {
    ec = make_errc(std::errc::not_enough_memory);
    return nullptr;
  }
}

/// now + d, saturating at no_deadline instead of overflowing into the past.
inline steady_time time_after(std::chrono::steady_clock::duration d) noexcept {
  const auto now = std::chrono::steady_clock::now();
  if (d <= d.zero()) return now;
  if (d >= no_deadline - now) return no_deadline;
  return now + d;
}

inline int poll_timeout_ms(steady_time deadline) noexcept {
  if (deadline == no_deadline) return -1;
  const auto left = deadline - std::chrono::steady_clock::now();
  if (left <= left.zero()) return 0;
  // Round up, so that poll never returns before the deadline and spins.
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

#if defined(SOCKPAT_WINDOWS)
using poll_entry = ::WSAPOLLFD;
using poll_count = ::ULONG;
inline int poll_handles(poll_entry* fds, poll_count n, int timeout_ms) noexcept { return ::WSAPoll(fds, n, timeout_ms); }
inline bool interrupted(const std::error_code&) noexcept { return false; }  // no signals interrupt WSAPoll
#else
using poll_entry = ::pollfd;
using poll_count = ::nfds_t;
inline int poll_handles(poll_entry* fds, poll_count n, int timeout_ms) noexcept { return ::poll(fds, n, timeout_ms); }
inline bool interrupted(const std::error_code& ec) noexcept { return ec == std::errc::interrupted; }
#endif

enum class Readiness : short { read = POLLIN, write = POLLOUT };

/// How often a wait without a wake-up descriptor looks at its stop tokens.
inline constexpr int poll_slice_ms = 20;

struct WakeOnStop {
  const Waker* waker;
  void operator()() const noexcept { waker->notify(); }
};

/// The wake-up side of a wait: the thread's Waker with a stop callback per token that can stop,
/// or, when the process is out of descriptors for a Waker (EMFILE, ENFILE), a time slice after
/// which the wait looks at the tokens again: out of descriptors is no time to fail a read.
class StopWatch {
 public:
  StopWatch(const std::stop_token& stop, const std::stop_token& also) noexcept : stop_(stop), also_(also) {
    if (!stop.stop_possible() && !also.stop_possible()) return;
    std::error_code ec;
    waker_ = thread_waker(ec);
    if (ec) {
      waker_ = nullptr;
      slice_ = poll_slice_ms;
      return;
    }
    if (stop.stop_possible()) on_stop_.emplace(stop, WakeOnStop{waker_});
    if (also.stop_possible()) on_also_.emplace(also, WakeOnStop{waker_});
  }
  StopWatch(const StopWatch&) = delete;
  StopWatch& operator=(const StopWatch&) = delete;
  // After the callbacks are gone no one can signal the waker any more; empty it for the next wait.
  ~StopWatch() {
    on_stop_.reset();
    on_also_.reset();
    if (waker_ != nullptr && stopped()) waker_->drain();
  }

  [[nodiscard]] bool stopped() const noexcept { return stop_.stop_requested() || also_.stop_requested(); }
  [[nodiscard]] const Waker* waker() const noexcept { return waker_; }
  /// The poll timeout for `deadline`, shortened to the slice when there is no waker.
  [[nodiscard]] int timeout_ms(steady_time deadline) const noexcept {
    int timeout = poll_timeout_ms(deadline);
    if (slice_ >= 0 && (timeout < 0 || timeout > slice_)) timeout = slice_;
    return timeout;
  }

 private:
  const std::stop_token& stop_;
  const std::stop_token& also_;
  Waker* waker_ = nullptr;
  int slice_ = -1;
  std::optional<std::stop_callback<WakeOnStop>> on_stop_;
  std::optional<std::stop_callback<WakeOnStop>> on_also_;
};

/// Blocks until `h` is ready for `what`, the deadline passes (timed_out) or stop is requested on
/// either token (operation_canceled). An error or hang-up on the socket counts as ready: the next
/// call reports it. The second token is an object's own cancel token (a server's per-connection stop).
inline std::error_code wait_ready(native_handle h, Readiness what, steady_time deadline, const std::stop_token& stop,
                                  const std::stop_token& also) noexcept {
  if (stop.stop_requested() || also.stop_requested()) return make_errc(std::errc::operation_canceled);
  const StopWatch watch(stop, also);
  poll_entry fds[2] = {{h, static_cast<short>(what), 0}, {invalid_handle, POLLIN, 0}};
  poll_count count = 1;
  if (watch.waker() != nullptr) {
    fds[1].fd = watch.waker()->read_handle();
    count = 2;
  }
  for (;;) {
    const int r = poll_handles(fds, count, watch.timeout_ms(deadline));
    if (r < 0) {
      const auto ec = last_error();
      if (interrupted(ec)) continue;
      return ec;
    }
    if (watch.stopped()) return make_errc(std::errc::operation_canceled);
    if (fds[0].revents != 0) return {};
    if (r == 0 && std::chrono::steady_clock::now() >= deadline) return make_errc(std::errc::timed_out);
  }
}

inline std::error_code wait_ready(native_handle h, Readiness what, steady_time deadline,
                                  const std::stop_token& stop) noexcept {
  static const std::stop_token never;
  return wait_ready(h, what, deadline, stop, never);
}

#if defined(SOCKPAT_WINDOWS)
// WSAPoll before Windows 10 2004 never reports a connect that failed (refused, unreachable): it
// waits out its whole timeout. select() reports the failure in the except set on every version,
// so the connect wait uses it; one socket and the waker are far below FD_SETSIZE.
inline std::error_code wait_connected(native_handle h, steady_time deadline, const std::stop_token& stop,
                                      const std::stop_token& also) noexcept {
  if (stop.stop_requested() || also.stop_requested()) return make_errc(std::errc::operation_canceled);
  const StopWatch watch(stop, also);
  for (;;) {
    ::fd_set readable;
    ::fd_set writable;
    ::fd_set failed;
    FD_ZERO(&readable);
    FD_ZERO(&writable);
    FD_ZERO(&failed);
    FD_SET(h, &writable);
    FD_SET(h, &failed);
    if (watch.waker() != nullptr) FD_SET(watch.waker()->read_handle(), &readable);
    const int ms = watch.timeout_ms(deadline);
    ::timeval tv{ms / 1000, (ms % 1000) * 1000};
    const int r = ::select(0, &readable, &writable, &failed, ms < 0 ? nullptr : &tv);
    if (r < 0) return last_error();
    if (watch.stopped()) return make_errc(std::errc::operation_canceled);
    if (FD_ISSET(h, &writable) || FD_ISSET(h, &failed)) return {};
    if (r == 0 && std::chrono::steady_clock::now() >= deadline) return make_errc(std::errc::timed_out);
  }
}
#else
inline std::error_code wait_connected(native_handle h, steady_time deadline, const std::stop_token& stop,
                                      const std::stop_token& also) noexcept {
  return wait_ready(h, Readiness::write, deadline, stop, also);
}
#endif

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_WAIT_HPP

// sockpat: waiting for a socket to become ready, bounded by a deadline and a stop token.
#ifndef SOCKPAT_DETAIL_WAIT_HPP
#define SOCKPAT_DETAIL_WAIT_HPP

#include <chrono>        // std::chrono::steady_clock
#include <climits>       // INT_MAX
#include <cstdint>       // std::uint64_t
#include <optional>      // std::optional
#include <stop_token>    // std::stop_token, std::stop_callback
#include <system_error>  // std::error_code

#include "sockpat/detail/syscall.hpp"

namespace sockpat::detail {

using steady_time = std::chrono::steady_clock::time_point;
inline constexpr steady_time no_deadline = steady_time::max();

/// A per-thread wake-up descriptor that a stop callback signals from another thread to end
/// a poll() early. Opened the first time a thread waits with a stop token, closed at thread exit.
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

 private:
  native_handle read_ = invalid_handle;
  native_handle write_ = invalid_handle;
};

inline Waker* thread_waker(std::error_code& ec) noexcept {
  thread_local Waker waker;
  ec = waker.open();
  return ec ? nullptr : &waker;
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

enum class Readiness : short { read = POLLIN, write = POLLOUT };

/// How often a wait without a wake-up descriptor looks at its stop tokens.
inline constexpr int poll_slice_ms = 20;

struct WakeOnStop {
  const Waker* waker;
  void operator()() const noexcept { waker->notify(); }
};

/// Blocks until `h` is ready for `what`, the deadline passes (timed_out) or stop is requested on
/// either token (operation_canceled). An error or hang-up on the socket counts as ready: the next
/// call reports it. The second token is an object's own cancel token (a server's per-connection stop).
inline std::error_code wait_ready(native_handle h, Readiness what, steady_time deadline, const std::stop_token& stop,
                                  const std::stop_token& also) noexcept {
  const auto stopped = [&] { return stop.stop_requested() || also.stop_requested(); };
  if (stopped()) return std::make_error_code(std::errc::operation_canceled);
  ::pollfd fds[2] = {{h, static_cast<short>(what), 0}, {invalid_handle, POLLIN, 0}};
  ::nfds_t count = 1;
  std::error_code ec;
  Waker* waker = nullptr;
  std::optional<std::stop_callback<WakeOnStop>> on_stop;
  std::optional<std::stop_callback<WakeOnStop>> on_also;
  // Without a wake-up descriptor (the process is out of them: EMFILE, ENFILE) a stop is still
  // seen, by waking every poll_slice_ms to look; out of descriptors is no time to fail a read.
  int slice = -1;
  if (stop.stop_possible() || also.stop_possible()) {
    waker = thread_waker(ec);
    if (ec) {
      ec.clear();
      waker = nullptr;
      slice = poll_slice_ms;
    } else {
      fds[1].fd = waker->read_handle();
      count = 2;
      if (stop.stop_possible()) on_stop.emplace(stop, WakeOnStop{waker});
      if (also.stop_possible()) on_also.emplace(also, WakeOnStop{waker});
    }
  }
  for (;;) {
    int timeout = poll_timeout_ms(deadline);
    if (slice >= 0 && (timeout < 0 || timeout > slice)) timeout = slice;
    const int r = ::poll(fds, count, timeout);
    if (r < 0) {
      if (errno == EINTR) continue;
      ec = last_error();
      break;
    }
    if (stopped()) {
      ec = std::make_error_code(std::errc::operation_canceled);
      break;
    }
    if (fds[0].revents != 0) break;
    if (r == 0 && std::chrono::steady_clock::now() >= deadline) {
      ec = std::make_error_code(std::errc::timed_out);
      break;
    }
  }
  // After the callback is gone no one can signal the waker any more; empty it for the next wait.
  on_stop.reset();
  on_also.reset();
  if (waker != nullptr && stopped()) waker->drain();
  return ec;
}

inline std::error_code wait_ready(native_handle h, Readiness what, steady_time deadline,
                                  const std::stop_token& stop) noexcept {
  static const std::stop_token never;
  return wait_ready(h, what, deadline, stop, never);
}

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_WAIT_HPP

// sockpat: the event loop's Linux backend. Include detail/poller.hpp, not this file.
// Each descriptor is registered once, edge-triggered for reading and writing, the first time an
// operation on it would block; no epoll_ctl per operation. Every operation tries its system
// call before waiting, so an edge that arrived while no one waited is never needed.
#ifndef SOCKPAT_DETAIL_EPOLL_HPP
#define SOCKPAT_DETAIL_EPOLL_HPP

#include <cstdint>       // std::uint64_t
#include <system_error>  // std::error_code

#include "sockpat/detail/syscall.hpp"

namespace sockpat::detail {

class EpollPoller {
 public:
  static constexpr bool edge_triggered = true;
  static constexpr const char* name = "epoll";

  EpollPoller() noexcept = default;
  EpollPoller(const EpollPoller&) = delete;
  EpollPoller& operator=(const EpollPoller&) = delete;
  ~EpollPoller() {
    if (fd_ != invalid_handle) close_handle(fd_);
  }

  std::error_code open() noexcept {
    fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    return fd_ < 0 ? last_error() : std::error_code{};
  }

  /// Makes sure `h` reports its readiness with `tag`. Interest is not narrowed: edge-triggered
  /// events for a direction no one waits on are simply ignored by the loop.
  std::error_code watch(native_handle h, std::uint64_t tag, bool read, bool write, bool& registered) noexcept {
    if (registered || (!read && !write)) return {};
    ::epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = tag;
    if (::epoll_ctl(fd_, EPOLL_CTL_ADD, h, &ev) != 0) {
      // Still registered under an older tag (a handle released, then adopted again).
      if (errno != EEXIST || ::epoll_ctl(fd_, EPOLL_CTL_MOD, h, &ev) != 0) return last_error();
    }
    registered = true;
    return {};
  }

  /// Before `h` is closed (the kernel then drops it from the set itself) or released (then it
  /// must be removed here, since the descriptor lives on).
  void forget(native_handle h, bool released, bool& registered) noexcept {
    if (registered && released) {
      ::epoll_event ev{};
      (void)::epoll_ctl(fd_, EPOLL_CTL_DEL, h, &ev);
    }
    registered = false;
  }

  /// Waits up to `timeout_ms` (-1: no limit) and calls on_event(tag, readable, writable, hangup)
  /// for each ready descriptor. An error or hang-up counts as both, so the operation reports it.
  template <class F>
  std::error_code wait(int timeout_ms, F&& on_event) {
    const int n = ::epoll_wait(fd_, events_, max_events, timeout_ms);
    if (n < 0) return errno == EINTR ? std::error_code{} : last_error();
    for (int i = 0; i < n; ++i) {
      const auto e = events_[i].events;
      const bool broken = (e & (EPOLLERR | EPOLLHUP)) != 0;
      on_event(events_[i].data.u64, broken || (e & (EPOLLIN | EPOLLRDHUP)) != 0, broken || (e & EPOLLOUT) != 0,
               broken || (e & EPOLLRDHUP) != 0);
    }
    return {};
  }

 private:
  static constexpr int max_events = 256;
  native_handle fd_ = invalid_handle;
  ::epoll_event events_[max_events]{};
};

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_EPOLL_HPP

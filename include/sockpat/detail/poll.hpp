// sockpat: the event loop's portable backend over poll(), level-triggered: a descriptor is in
// the set only while an operation waits on it. The BSD and Windows backends start from it.
// Include detail/poller.hpp, not this file.
#ifndef SOCKPAT_DETAIL_POLL_HPP
#define SOCKPAT_DETAIL_POLL_HPP

#include <cstddef>       // std::size_t
#include <cstdint>       // std::uint64_t
#include <system_error>  // std::error_code
#include <utility>       // std::pair
#include <vector>        // std::vector

#include "sockpat/detail/syscall.hpp"
#include "sockpat/detail/wait.hpp"  // poll_entry, poll_handles: poll() or WSAPoll()

namespace sockpat::detail {

class PollPoller {
 public:
  static constexpr bool edge_triggered = false;
  static constexpr const char* name = "poll";

  PollPoller() = default;
  PollPoller(const PollPoller&) = delete;
  PollPoller& operator=(const PollPoller&) = delete;
  ~PollPoller() = default;

  static std::error_code open() noexcept { return {}; }

  /// Sets the interest of `h` to exactly (read, write); none removes it from the set.
  std::error_code watch(native_handle h, std::uint64_t tag, bool read, bool write, bool& registered) {
    const short events = static_cast<short>((read ? POLLIN : 0) | (write ? POLLOUT : 0));
    if (events == 0) {
      remove(h, registered);
      return {};
    }
    const auto i = static_cast<std::size_t>(h);
    if (i >= slot_.size()) slot_.resize(i + 1 > 2 * slot_.size() ? i + 1 : 2 * slot_.size(), npos);
    if (slot_[i] == npos) {
      slot_[i] = fds_.size();
      fds_.push_back(poll_entry{h, events, 0});
      tags_.push_back(tag);
    } else {
      fds_[slot_[i]].events = events;
      tags_[slot_[i]] = tag;
    }
    registered = true;
    return {};
  }

  void forget(native_handle h, bool /*released*/, bool& registered) noexcept { remove(h, registered); }

  template <class F>
  std::error_code wait(int timeout_ms, F&& on_event) {
    const int n = poll_handles(fds_.data(), static_cast<poll_count>(fds_.size()), timeout_ms);
    if (n < 0) {
      const auto ec = last_error();
      return interrupted(ec) ? std::error_code{} : ec;
    }
    // Collect first: the callbacks change the set.
    ready_.clear();
    for (std::size_t i = 0; i < fds_.size() && ready_.size() < static_cast<std::size_t>(n); ++i) {
      if (fds_[i].revents != 0) ready_.emplace_back(tags_[i], fds_[i].revents);
    }
    for (const auto& [tag, re] : ready_) {
      const bool broken = (re & (POLLERR | POLLHUP | POLLNVAL)) != 0;
      on_event(tag, broken || (re & POLLIN) != 0, broken || (re & POLLOUT) != 0, broken);
    }
    return {};
  }

 private:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  void remove(native_handle h, bool& registered) noexcept {
    registered = false;
    const auto i = static_cast<std::size_t>(h);
    if (h == invalid_handle || i >= slot_.size() || slot_[i] == npos) return;
    const std::size_t s = slot_[i];
    const std::size_t last = fds_.size() - 1;
    if (s != last) {  // swap-remove keeps the set dense
      fds_[s] = fds_[last];
      tags_[s] = tags_[last];
      slot_[static_cast<std::size_t>(fds_[s].fd)] = s;
    }
    fds_.pop_back();
    tags_.pop_back();
    slot_[i] = npos;
  }

  std::vector<poll_entry> fds_;
  std::vector<std::uint64_t> tags_;
  std::vector<std::size_t> slot_;  // by descriptor: its index in fds_, or npos
  std::vector<std::pair<std::uint64_t, short>> ready_;
};

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_POLL_HPP

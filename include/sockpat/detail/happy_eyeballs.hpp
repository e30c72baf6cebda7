// sockpat: the parts of Happy Eyeballs (RFC 8305) that are not about one socket type: the order
// of the addresses, the wait on several connecting sockets at once, and the error that names
// every address tried.
#ifndef SOCKPAT_DETAIL_HAPPY_EYEBALLS_HPP
#define SOCKPAT_DETAIL_HAPPY_EYEBALLS_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock
#include <cstddef>       // std::size_t
#include <span>          // std::span
#include <stop_token>    // std::stop_token
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code
#include <vector>        // std::vector

#include "sockpat/detail/wait.hpp"
#include "sockpat/endpoint.hpp"

namespace sockpat::detail {

/// RFC 8305 section 4: the families take turns, one address each, starting with `first`
/// (unspecified: the family of the first address, as the resolver sorted them); the order
/// within a family is kept. Unix-domain and unspecified endpoints are dropped.
inline std::vector<Endpoint> interleave(const std::vector<Endpoint>& addresses, Family first) {
  std::vector<Endpoint> a;
  std::vector<Endpoint> b;
  for (const auto& e : addresses) {
    if (!e.is_v4() && !e.is_v6()) continue;
    if (first == Family::unspecified) first = e.family();
    (e.family() == first ? a : b).push_back(e);
  }
  std::vector<Endpoint> out;
  out.reserve(a.size() + b.size());
  for (std::size_t i = 0; i < a.size() || i < b.size(); ++i) {
    if (i < a.size()) out.push_back(a[i]);
    if (i < b.size()) out.push_back(b[i]);
  }
  return out;
}

/// One address that was tried, and how its attempt ended.
struct AttemptError {
  Endpoint endpoint;
  std::error_code error;
};

/// "connect HOST:PORT (tried [::1]:80: Connection refused; 127.0.0.1:80: Connection timed out)".
/// One address tried ended the connect with its own error, which the message then ends with:
/// "connect localhost:80 (tried 127.0.0.1:80)", or "connect 127.0.0.1:80" for that very address.
inline std::string describe_attempts(std::string_view op, std::string_view host, int port,
                                     const std::vector<AttemptError>& tried) {
  std::string s(op);
  s += ' ';
  s += host_port(host, port);
  if (tried.empty()) return s + " (no address to try)";
  if (tried.size() == 1) {
    const auto only = tried.front().endpoint.to_string();
    return only == host_port(host, port) ? s : s + " (tried " + only + ')';
  }
  s += " (tried ";
  for (std::size_t i = 0; i < tried.size(); ++i) {
    if (i > 0) s += "; ";
    s += tried[i].endpoint.to_string();
    s += ": ";
    s += tried[i].error.message();
  }
  return s + ')';
}

/// Waits until one of the connecting sockets `hs` has finished (connected or failed: the caller
/// reads SO_ERROR), `until` passes (timed_out), or stop is requested (operation_canceled). On
/// success `ready` is the index of a finished socket. At most 64 sockets.
inline std::error_code wait_any_connected(std::span<const native_handle> hs, steady_time until,
                                          const std::stop_token& stop, std::size_t& ready) noexcept {
  static const std::stop_token never;
  if (stop.stop_requested()) return make_errc(std::errc::operation_canceled);
  if (hs.size() > 64) return make_errc(std::errc::invalid_argument);
  const StopWatch watch(stop, never);
  for (;;) {
#if defined(SOCKPAT_WINDOWS)
    // As wait_connected: WSAPoll before Windows 10 2004 never reports a failed connect; select does.
    ::fd_set readable;
    ::fd_set writable;
    ::fd_set failed;
    FD_ZERO(&readable);
    FD_ZERO(&writable);
    FD_ZERO(&failed);
    for (const native_handle h : hs) {
      FD_SET(h, &writable);
      FD_SET(h, &failed);
    }
    if (watch.waker() != nullptr) FD_SET(watch.waker()->read_handle(), &readable);
    const int ms = watch.timeout_ms(until);
    ::timeval tv{ms / 1000, (ms % 1000) * 1000};
    const int r = ::select(0, &readable, &writable, &failed, ms < 0 ? nullptr : &tv);
    if (r < 0) return last_error();
    if (watch.stopped()) return make_errc(std::errc::operation_canceled);
    for (std::size_t i = 0; i < hs.size(); ++i) {
      if (FD_ISSET(hs[i], &writable) || FD_ISSET(hs[i], &failed)) {
        ready = i;
        return {};
      }
    }
#else
    poll_entry fds[65];
    for (std::size_t i = 0; i < hs.size(); ++i) fds[i] = {hs[i], POLLOUT, 0};
    auto count = static_cast<poll_count>(hs.size());
    if (watch.waker() != nullptr) fds[count++] = {watch.waker()->read_handle(), POLLIN, 0};
    const int r = poll_handles(fds, count, watch.timeout_ms(until));
    if (r < 0) {
      const auto ec = last_error();
      if (interrupted(ec)) continue;
      return ec;
    }
    if (watch.stopped()) return make_errc(std::errc::operation_canceled);
    for (std::size_t i = 0; i < hs.size(); ++i) {
      if (fds[i].revents != 0) {
        ready = i;
        return {};
      }
    }
#endif
    if (r == 0 && std::chrono::steady_clock::now() >= until) return make_errc(std::errc::timed_out);
  }
}

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_HAPPY_EYEBALLS_HPP

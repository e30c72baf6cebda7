// sockpat: thin, non-template wrappers over the socket system calls.
// Each returns its error as std::error_code, retries EINTR where retrying is right,
// never raises SIGPIPE, and creates every descriptor close-on-exec and non-blocking
// (blocking calls wait in poll(), so that a deadline or a stop token can bound them).
#ifndef SOCKPAT_DETAIL_SYSCALL_HPP
#define SOCKPAT_DETAIL_SYSCALL_HPP

#include <cerrno>        // errno
#include <cstddef>       // std::size_t
#include <system_error>  // std::error_code, std::system_category

#include "sockpat/detail/os.hpp"

namespace sockpat::detail {

#if defined(SOCKPAT_POSIX)
using native_handle = int;
inline constexpr native_handle invalid_handle = -1;
using socklen = ::socklen_t;
#endif

/// The calling thread's last socket error as a std::error_code. The one translation point:
/// on POSIX errno values are system_category codes that compare equal to std::errc.
inline std::error_code last_error() noexcept { return {errno, std::system_category()}; }

inline bool would_block(const std::error_code& ec) noexcept {
  return ec == std::errc::operation_would_block || ec == std::errc::resource_unavailable_try_again;
}

#if defined(MSG_NOSIGNAL)
inline constexpr int send_flags = MSG_NOSIGNAL;
#else
inline constexpr int send_flags = 0;  // SO_NOSIGPIPE is set on the socket instead
#endif

inline std::error_code set_nonblocking_cloexec(native_handle h) noexcept {
  const int fl = ::fcntl(h, F_GETFL, 0);
  if (fl < 0 || ::fcntl(h, F_SETFL, fl | O_NONBLOCK) < 0) return last_error();
  const int fd = ::fcntl(h, F_GETFD, 0);
  if (fd < 0 || ::fcntl(h, F_SETFD, fd | FD_CLOEXEC) < 0) return last_error();
  return {};
}

// Don't retry close on EINTR: POSIX leaves the descriptor's state unspecified and Linux
// has already released it, so a retry could close a descriptor another thread just got.
inline std::error_code close_handle(native_handle h) noexcept {
  if (::close(h) != 0 && errno != EINTR) return last_error();
  return {};
}

inline std::error_code after_create(native_handle h, bool flags_set) noexcept {
  std::error_code ec;
  if (!flags_set) ec = set_nonblocking_cloexec(h);
#if defined(SO_NOSIGPIPE)
  if (!ec) {
    const int one = 1;
    if (::setsockopt(h, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one) != 0) ec = last_error();
  }
#endif
  return ec;
}

inline native_handle open_socket(int family, int type, int protocol, std::error_code& ec) noexcept {
#if defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK)
  // SOCK_CLOEXEC at creation: a concurrent fork+exec must not inherit the descriptor.
  native_handle h = ::socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, protocol);
  const bool flags_set = true;
#else
  native_handle h = ::socket(family, type, protocol);
  const bool flags_set = false;
#endif
  if (h == invalid_handle) {
    ec = last_error();
    return invalid_handle;
  }
  ec = after_create(h, flags_set);
  if (ec) {
    close_handle(h);
    return invalid_handle;
  }
  return h;
}

inline std::error_code socket_pair(int family, int type, native_handle out[2]) noexcept {
#if defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK)
  if (::socketpair(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, out) != 0) return last_error();
  const bool flags_set = true;
#else
  if (::socketpair(family, type, 0, out) != 0) return last_error();
  const bool flags_set = false;
#endif
  std::error_code ec = after_create(out[0], flags_set);
  if (!ec) ec = after_create(out[1], flags_set);
  if (ec) {
    close_handle(out[0]);
    close_handle(out[1]);
  }
  return ec;
}

inline std::error_code bind_handle(native_handle h, const void* addr, socklen len) noexcept {
  if (::bind(h, static_cast<const ::sockaddr*>(addr), len) != 0) return last_error();
  return {};
}

inline std::error_code listen_handle(native_handle h, int backlog) noexcept {
  if (::listen(h, backlog) != 0) return last_error();
  return {};
}

/// accept with the new descriptor close-on-exec and non-blocking. EINTR is retried; would_block
/// and ECONNABORTED (the client left before we took it) are returned for the caller to wait on.
inline native_handle accept_handle(native_handle h, void* addr, socklen* len, std::error_code& ec) noexcept {
  for (;;) {
#if defined(SOCKPAT_LINUX) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__)
    native_handle c = ::accept4(h, static_cast<::sockaddr*>(addr), len, SOCK_CLOEXEC | SOCK_NONBLOCK);
    const bool flags_set = true;
#else
    native_handle c = ::accept(h, static_cast<::sockaddr*>(addr), len);
    const bool flags_set = false;
#endif
    if (c == invalid_handle) {
      if (errno == EINTR) continue;
      ec = last_error();
      return invalid_handle;
    }
    ec = after_create(c, flags_set);
    if (ec) {
      close_handle(c);
      return invalid_handle;
    }
    return c;
  }
}

/// Starts a connect on a non-blocking socket: success, operation_in_progress, or the error.
inline std::error_code connect_handle(native_handle h, const void* addr, socklen len) noexcept {
  if (::connect(h, static_cast<const ::sockaddr*>(addr), len) == 0) return {};
  // EINTR leaves the connect going on asynchronously, exactly like EINPROGRESS.
  if (errno == EINTR || errno == EINPROGRESS) return std::make_error_code(std::errc::operation_in_progress);
  return last_error();
}

inline std::size_t recv_some(native_handle h, void* buf, std::size_t n, int flags, std::error_code& ec) noexcept {
  for (;;) {
    const auto r = ::recv(h, buf, n, flags);
    if (r >= 0) return static_cast<std::size_t>(r);
    if (errno == EINTR) continue;
    ec = last_error();
    return 0;
  }
}

inline std::size_t send_some(native_handle h, const void* buf, std::size_t n, std::error_code& ec) noexcept {
  for (;;) {
    const auto r = ::send(h, buf, n, send_flags);
    if (r >= 0) return static_cast<std::size_t>(r);
    if (errno == EINTR) continue;
    ec = last_error();
    return 0;
  }
}

inline std::size_t send_to(native_handle h, const void* buf, std::size_t n, const void* addr, socklen len,
                           std::error_code& ec) noexcept {
  for (;;) {
    const auto r = ::sendto(h, buf, n, send_flags, static_cast<const ::sockaddr*>(addr), len);
    if (r >= 0) return static_cast<std::size_t>(r);
    if (errno == EINTR) continue;
    ec = last_error();
    return 0;
  }
}

inline std::size_t recv_from(native_handle h, void* buf, std::size_t n, void* addr, socklen* len,
                             std::error_code& ec) noexcept {
  for (;;) {
#if defined(MSG_TRUNC) && defined(SOCKPAT_LINUX)
    // MSG_TRUNC: Linux then returns the datagram's real length, so truncation can be reported.
    const auto r = ::recvfrom(h, buf, n, MSG_TRUNC, static_cast<::sockaddr*>(addr), len);
#else
    const auto r = ::recvfrom(h, buf, n, 0, static_cast<::sockaddr*>(addr), len);
#endif
    if (r >= 0) return static_cast<std::size_t>(r);
    if (errno == EINTR) continue;
    ec = last_error();
    return 0;
  }
}

inline constexpr int shut_receive = SHUT_RD;
inline constexpr int shut_send = SHUT_WR;
inline constexpr int shut_both = SHUT_RDWR;

inline std::error_code shutdown_handle(native_handle h, int how) noexcept {
  if (::shutdown(h, how) != 0) return last_error();
  return {};
}

inline std::error_code set_option(native_handle h, int level, int name, const void* value, socklen len) noexcept {
  if (::setsockopt(h, level, name, value, len) != 0) return last_error();
  return {};
}

inline std::error_code get_option(native_handle h, int level, int name, void* value, socklen* len) noexcept {
  if (::getsockopt(h, level, name, value, len) != 0) return last_error();
  return {};
}

inline std::error_code set_int_option(native_handle h, int level, int name, int value) noexcept {
  return set_option(h, level, name, &value, sizeof value);
}

inline int get_int_option(native_handle h, int level, int name, std::error_code& ec) noexcept {
  int value = 0;
  socklen len = sizeof value;
  ec = get_option(h, level, name, &value, &len);
  return value;
}

/// The pending error of a socket (SO_ERROR), as after a non-blocking connect.
inline std::error_code pending_error(native_handle h) noexcept {
  std::error_code ec;
  const int err = get_int_option(h, SOL_SOCKET, SO_ERROR, ec);
  if (ec) return ec;
  return {err, std::system_category()};
}

inline std::error_code local_address(native_handle h, void* addr, socklen* len) noexcept {
  if (::getsockname(h, static_cast<::sockaddr*>(addr), len) != 0) return last_error();
  return {};
}

inline std::error_code peer_address(native_handle h, void* addr, socklen* len) noexcept {
  if (::getpeername(h, static_cast<::sockaddr*>(addr), len) != 0) return last_error();
  return {};
}

/// A socket option: level, name, and the name to quote in errors.
struct SocketOption {
  int level;
  int name;
  const char* label;
};

namespace option {
inline constexpr SocketOption reuse_address{SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR"};
#if defined(SO_REUSEPORT)
#define SOCKPAT_HAS_REUSE_PORT 1
inline constexpr SocketOption reuse_port{SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT"};
#endif
inline constexpr SocketOption keep_alive{SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE"};
inline constexpr SocketOption no_delay{IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY"};
inline constexpr SocketOption send_buffer{SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"};
inline constexpr SocketOption receive_buffer{SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"};
inline constexpr SocketOption v6_only{IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY"};
inline constexpr SocketOption broadcast{SOL_SOCKET, SO_BROADCAST, "SO_BROADCAST"};
}  // namespace option

inline std::error_code set_int_option(native_handle h, const SocketOption& o, int value) noexcept {
  return set_int_option(h, o.level, o.name, value);
}

inline int get_int_option(native_handle h, const SocketOption& o, std::error_code& ec) noexcept {
  return get_int_option(h, o.level, o.name, ec);
}

/// SO_LINGER: off, or on with a timeout in seconds (0: close() resets the connection).
inline std::error_code set_linger(native_handle h, bool on, int seconds) noexcept {
  ::linger l{};
  l.l_onoff = on ? 1 : 0;
  l.l_linger = on ? seconds : 0;
  return set_option(h, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

inline constexpr int default_backlog = SOMAXCONN;

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_SYSCALL_HPP

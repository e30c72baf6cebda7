// sockpat: thin, non-template wrappers over the socket system calls.
// Each returns its error as std::error_code, retries EINTR where retrying is right,
// never raises SIGPIPE, and creates every descriptor close-on-exec and non-blocking
// (blocking calls wait in poll(), so that a deadline or a stop token can bound them; the one
// exception, a connection's reads waiting in recv itself, is Connection::set_kernel_wait).
// On Windows the same functions sit over Winsock: SOCKET handles created non-inheritable,
// FIONBIO for non-blocking, WSAGetLastError translated by winsock_category().
#ifndef SOCKPAT_DETAIL_SYSCALL_HPP
#define SOCKPAT_DETAIL_SYSCALL_HPP

#include <cerrno>        // errno
#include "sockpat/detail/chrono.hpp"  // std::chrono::microseconds: SO_RCVTIMEO
#include <climits>       // INT_MAX
#include <cstddef>       // std::size_t
#include <string>        // std::string: error messages
#include <system_error>  // std::error_code, std::system_category

#include "sockpat/detail/os.hpp"

namespace sockpat::detail {

#if defined(SOCKPAT_POSIX)
using native_handle = int;
inline constexpr native_handle invalid_handle = -1;
using socklen = ::socklen_t;

/// An error number the OS reported (errno, SO_ERROR) as a std::error_code.
inline std::error_code os_error(int code) noexcept { return {code, std::system_category()}; }

/// The calling thread's last socket error as a std::error_code. The one translation point:
/// on POSIX errno values are system_category codes that compare equal to std::errc.
inline std::error_code last_error() noexcept { return os_error(errno); }
#endif

#if defined(SOCKPAT_WINDOWS)
using native_handle = ::SOCKET;
inline constexpr native_handle invalid_handle = INVALID_SOCKET;
using socklen = int;

/// Winsock's WSAE* codes. Their values are kept (ec.value() == WSAECONNREFUSED), and
/// default_error_condition maps them onto std::errc, so `ec == std::errc::connection_refused`
/// holds on Windows as on POSIX. std::system_category() cannot be relied on for this:
/// MSVC's maps WSAE* codes, libstdc++'s (MinGW) does not.
class WinsockCategory final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "sockpat.winsock"; }

  [[nodiscard]] std::string message(int code) const override {
    char buf[256];
    const DWORD n = ::FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, nullptr,
                                     static_cast<DWORD>(code), 0, buf, sizeof buf, nullptr);
    std::string s(buf, n);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '.')) s.pop_back();
    return s.empty() ? "Winsock error " + std::to_string(code) : s;
  }

  [[nodiscard]] std::error_condition default_error_condition(int code) const noexcept override {
    const auto e = generic_of(code);
    if (e == std::errc{}) return {code, *this};
    return std::make_error_condition(e);
  }

 private:
  static std::errc generic_of(int code) noexcept {
    switch (code) {
      case WSAEINTR: return std::errc::interrupted;
      case WSAEBADF: return std::errc::bad_file_descriptor;
      case WSAEACCES: return std::errc::permission_denied;
      case WSAEFAULT: return std::errc::bad_address;
      case WSAEINVAL: return std::errc::invalid_argument;
      case WSAEMFILE: return std::errc::too_many_files_open;
      case WSAEWOULDBLOCK: return std::errc::operation_would_block;
      case WSAEINPROGRESS: return std::errc::operation_in_progress;
      case WSAEALREADY: return std::errc::connection_already_in_progress;
      case WSAENOTSOCK: return std::errc::not_a_socket;
      case WSAEDESTADDRREQ: return std::errc::destination_address_required;
      case WSAEMSGSIZE: return std::errc::message_size;
      case WSAEPROTOTYPE: return std::errc::wrong_protocol_type;
      case WSAENOPROTOOPT: return std::errc::no_protocol_option;
      case WSAEPROTONOSUPPORT: return std::errc::protocol_not_supported;
      case WSAESOCKTNOSUPPORT: return std::errc::not_supported;
      case WSAEOPNOTSUPP: return std::errc::operation_not_supported;
      case WSAEPFNOSUPPORT: return std::errc::address_family_not_supported;
      case WSAEAFNOSUPPORT: return std::errc::address_family_not_supported;
      case WSAEADDRINUSE: return std::errc::address_in_use;
      case WSAEADDRNOTAVAIL: return std::errc::address_not_available;
      case WSAENETDOWN: return std::errc::network_down;
      case WSAENETUNREACH: return std::errc::network_unreachable;
      case WSAENETRESET: return std::errc::network_reset;
      case WSAECONNABORTED: return std::errc::connection_aborted;
      case WSAECONNRESET: return std::errc::connection_reset;
      case WSAENOBUFS: return std::errc::no_buffer_space;
      case WSAEISCONN: return std::errc::already_connected;
      case WSAENOTCONN: return std::errc::not_connected;
      case WSAESHUTDOWN: return std::errc::broken_pipe;  // a send after shutdown(SD_SEND): EPIPE on POSIX
      case WSAETIMEDOUT: return std::errc::timed_out;
      case WSAECONNREFUSED: return std::errc::connection_refused;
      case WSAELOOP: return std::errc::too_many_symbolic_link_levels;
      case WSAENAMETOOLONG: return std::errc::filename_too_long;
      case WSAEHOSTDOWN: return std::errc::host_unreachable;
      case WSAEHOSTUNREACH: return std::errc::host_unreachable;
      case WSAENOTEMPTY: return std::errc::directory_not_empty;
      case WSA_NOT_ENOUGH_MEMORY: return std::errc::not_enough_memory;
      case WSA_OPERATION_ABORTED: return std::errc::operation_canceled;
      case WSAECANCELLED: return std::errc::operation_canceled;
      default: return {};
    }
  }
};

inline const std::error_category& winsock_category() noexcept {
  static const WinsockCategory category;
  return category;
}

/// An error number Winsock reported (WSAGetLastError, SO_ERROR, getaddrinfo) as a std::error_code.
inline std::error_code os_error(int code) noexcept { return {code, winsock_category()}; }

/// The calling thread's last Winsock error as a std::error_code: the one translation point.
inline std::error_code last_error() noexcept { return os_error(::WSAGetLastError()); }

/// WSAStartup once per process, on first use and thread-safely (a function-local static),
/// and WSACleanup at exit; the user never calls either. Every function that needs Winsock
/// before it has a socket (socket creation, getaddrinfo, inet_pton) calls this first.
class WinsockInit {
 public:
  WinsockInit() noexcept {
    ::WSADATA data;
    result_ = ::WSAStartup(MAKEWORD(2, 2), &data);
  }
  WinsockInit(const WinsockInit&) = delete;
  WinsockInit& operator=(const WinsockInit&) = delete;
  ~WinsockInit() {
    if (result_ == 0) ::WSACleanup();
  }
  [[nodiscard]] int result() const noexcept { return result_; }

 private:
  int result_ = 0;
};

inline std::error_code ensure_winsock() noexcept {
  static const WinsockInit init;
  return init.result() == 0 ? std::error_code{} : os_error(init.result());
}
#endif

#if defined(SOCKPAT_WINDOWS)
/// The std::errc values sockpat reports itself (timed_out, operation_canceled, ...), in a category
/// whose conditions are std::generic_category()'s, so they compare equal to std::errc as usual.
/// It exists for its messages: MinGW's libstdc++ asks the Microsoft C runtime, which knows no
/// text for the POSIX numbers above 42 and says "Unknown error" for ETIMEDOUT.
class PortableErrcCategory final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "sockpat.generic"; }
  [[nodiscard]] std::error_condition default_error_condition(int code) const noexcept override {
    return {code, std::generic_category()};
  }
  [[nodiscard]] std::string message(int code) const override {
    switch (static_cast<std::errc>(code)) {
      case std::errc::timed_out: return "Connection timed out";
      case std::errc::operation_canceled: return "Operation canceled";
      case std::errc::operation_in_progress: return "Operation now in progress";
      case std::errc::message_size: return "Message too long";
      case std::errc::address_family_not_supported: return "Address family not supported by protocol";
      case std::errc::connection_refused: return "Connection refused";
      case std::errc::host_unreachable: return "No route to host";
      case std::errc::invalid_argument: return "Invalid argument";
      case std::errc::operation_not_supported: return "Operation not supported";
      case std::errc::not_enough_memory: return "Not enough memory";
      default: return std::generic_category().message(code);
    }
  }
};

inline const std::error_category& portable_errc_category() noexcept {
  static const PortableErrcCategory category;
  return category;
}

/// A std::errc value as an error_code with a readable message on every platform.
inline std::error_code make_errc(std::errc e) noexcept { return {static_cast<int>(e), portable_errc_category()}; }
#else
/// A std::errc value as an error_code (std::generic_category()).
inline std::error_code make_errc(std::errc e) noexcept { return std::make_error_code(e); }
#endif

inline bool would_block(const std::error_code& ec) noexcept {
  return ec == std::errc::operation_would_block || ec == std::errc::resource_unavailable_try_again;
}

#if defined(SOCKPAT_POSIX)
// MSG_DONTWAIT on every recv_some/send_some: a descriptor is non-blocking anyway, except a
// connection switched to kernel waits (Connection::set_kernel_wait), whose other calls must
// still never block. Without the flag (none of the POSIX systems sockpat targets lacks it)
// kernel waits are not offered.
#if defined(MSG_DONTWAIT)
inline constexpr int dont_wait = MSG_DONTWAIT;
inline constexpr bool kernel_wait_supported = true;
#else
inline constexpr int dont_wait = 0;
inline constexpr bool kernel_wait_supported = false;
#endif
#if defined(MSG_NOSIGNAL)
inline constexpr int send_flags = MSG_NOSIGNAL | dont_wait;
#else
inline constexpr int send_flags = dont_wait;  // SO_NOSIGPIPE is set on the socket instead
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
#endif

#if defined(SOCKPAT_WINDOWS)
// Windows has no SIGPIPE: a send on a reset connection just fails.
inline constexpr int send_flags = 0;

// SIO_UDP_CONNRESET, spelled from winsock2.h's macros (the SDKs declare it in different headers).
inline constexpr DWORD sio_udp_connreset = _WSAIOW(IOC_VENDOR, 12);

// Not inheritable: a concurrent CreateProcess must not inherit the socket (the
// counterpart of close-on-exec); non-blocking, so that blocking calls can wait in WSAPoll.
inline std::error_code after_create(native_handle h) noexcept {
  if (!::SetHandleInformation(reinterpret_cast<HANDLE>(h), HANDLE_FLAG_INHERIT, 0)) {
    return os_error(static_cast<int>(::GetLastError()));
  }
  u_long on = 1;
  if (::ioctlsocket(h, FIONBIO, &on) != 0) return last_error();
  return {};
}

// closesocket is not interrupted by signals: nothing to retry.
inline std::error_code close_handle(native_handle h) noexcept {
  if (::closesocket(h) != 0) return last_error();
  return {};
}

inline native_handle open_socket(int family, int type, int protocol, std::error_code& ec) noexcept {
  ec = ensure_winsock();
  if (ec) return invalid_handle;
  // WSA_FLAG_NO_HANDLE_INHERIT at creation, as SOCK_CLOEXEC on Linux; WSA_FLAG_OVERLAPPED keeps
  // the socket usable by an IOCP backend (it is what ::socket() would give too).
  native_handle h = ::WSASocketW(family, type, protocol, nullptr, 0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (h == invalid_handle) {
    ec = last_error();
    return invalid_handle;
  }
  u_long on = 1;
  if (::ioctlsocket(h, FIONBIO, &on) != 0) {
    ec = last_error();
    close_handle(h);
    return invalid_handle;
  }
  if (type == SOCK_DGRAM && (family == AF_INET || family == AF_INET6)) {
    // Without this, an ICMP port-unreachable for an earlier sendto makes the next recvfrom of an
    // unconnected UDP socket fail with WSAECONNRESET, and one vanished client stops a UDP server.
    // Linux does not report it on unconnected sockets either. Best effort: an old stack without
    // the ioctl keeps its own behaviour.
    BOOL report = FALSE;
    DWORD returned = 0;
    (void)::WSAIoctl(h, sio_udp_connreset, &report, sizeof report, nullptr, 0, &returned, nullptr, nullptr);
  }
  return h;
}

/// Two connected stream sockets. Windows has no socketpair(): for AF_INET this is a TCP pair
/// over 127.0.0.1 (the wake-up channel of waits and of the event loop). AF_UNIX pairs are
/// refused with address_family_not_supported.
inline std::error_code socket_pair(int family, int type, native_handle out[2]) noexcept {
  out[0] = out[1] = invalid_handle;
  if (family != AF_INET || type != SOCK_STREAM) return make_errc(std::errc::address_family_not_supported);
  std::error_code ec;
  const native_handle listener = open_socket(AF_INET, SOCK_STREAM, 0, ec);
  if (ec) return ec;
  ::sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int len = sizeof addr;
  // SO_EXCLUSIVEADDRUSE: no other socket may bind this port while the pair is being made.
  const int one = 1;
  if (::setsockopt(listener, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, reinterpret_cast<const char*>(&one), sizeof one) != 0 ||
      ::bind(listener, reinterpret_cast<const ::sockaddr*>(&addr), len) != 0 || ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<::sockaddr*>(&addr), &len) != 0) {
    ec = last_error();
  }
  if (!ec) out[0] = open_socket(AF_INET, SOCK_STREAM, 0, ec);
  if (!ec) {
    // Loopback connects of a non-blocking socket complete or fail within the listener's backlog.
    if (::connect(out[0], reinterpret_cast<const ::sockaddr*>(&addr), len) != 0 && ::WSAGetLastError() != WSAEWOULDBLOCK) {
      ec = last_error();
    }
  }
  if (!ec) {
    ::fd_set readable;
    FD_ZERO(&readable);
    FD_SET(listener, &readable);
    ::timeval bound{10, 0};  // a loopback handshake that takes longer is a broken stack
    const int r = ::select(0, &readable, nullptr, nullptr, &bound);
    if (r < 0) ec = last_error();
    if (r == 0) ec = make_errc(std::errc::timed_out);
  }
  if (!ec) {
    ::sockaddr_in peer{};
    int peer_len = sizeof peer;
    out[1] = ::accept(listener, reinterpret_cast<::sockaddr*>(&peer), &peer_len);
    if (out[1] == invalid_handle) ec = last_error();
    if (!ec) ec = after_create(out[1]);
    // Make sure the accepted socket is the one we dialled, not a stranger's on the same port.
    ::sockaddr_in mine{};
    int mine_len = sizeof mine;
    if (!ec && ::getsockname(out[0], reinterpret_cast<::sockaddr*>(&mine), &mine_len) != 0) ec = last_error();
    if (!ec && (mine.sin_port != peer.sin_port || mine.sin_addr.s_addr != peer.sin_addr.s_addr)) {
      ec = make_errc(std::errc::connection_refused);
    }
  }
  close_handle(listener);
  if (ec) {
    for (int i = 0; i < 2; ++i) {
      if (out[i] != invalid_handle) close_handle(out[i]);
      out[i] = invalid_handle;
    }
  }
  return ec;
}
#endif

inline std::error_code bind_handle(native_handle h, const void* addr, socklen len) noexcept {
  if (::bind(h, static_cast<const ::sockaddr*>(addr), len) != 0) return last_error();
  return {};
}

inline std::error_code listen_handle(native_handle h, int backlog) noexcept {
  if (::listen(h, backlog) != 0) return last_error();
  return {};
}

#if defined(SOCKPAT_POSIX)
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
  if (errno == EINTR || errno == EINPROGRESS) return make_errc(std::errc::operation_in_progress);
  return last_error();
}

inline std::size_t recv_some(native_handle h, void* buf, std::size_t n, int flags, std::error_code& ec) noexcept {
  for (;;) {
    const auto r = ::recv(h, buf, n, flags | dont_wait);
    if (r >= 0) return static_cast<std::size_t>(r);
    if (errno == EINTR) continue;
    ec = last_error();
    return 0;
  }
}

/// recv that sleeps in the kernel until data, end of stream, SO_RCVTIMEO (would_block) or a
/// shutdown: for a descriptor set_blocking(true) made blocking.
inline std::size_t recv_waiting(native_handle h, void* buf, std::size_t n, std::error_code& ec) noexcept {
  for (;;) {
    const auto r = ::recv(h, buf, n, 0);
    if (r >= 0) return static_cast<std::size_t>(r);
    if (errno == EINTR) continue;
    ec = last_error();
    return 0;
  }
}

inline std::error_code set_blocking(native_handle h, bool blocking) noexcept {
  const int fl = ::fcntl(h, F_GETFL, 0);
  if (fl < 0 || ::fcntl(h, F_SETFL, blocking ? (fl & ~O_NONBLOCK) : (fl | O_NONBLOCK)) < 0) return last_error();
  return {};
}

/// SO_RCVTIMEO: how long recv_waiting sleeps before would_block; 0 means without limit.
inline std::error_code set_receive_timeout(native_handle h, std::chrono::microseconds t) noexcept {
  ::timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(t.count() / 1000000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>(t.count() % 1000000);
  if (t.count() > 0 && tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1;
  if (::setsockopt(h, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) return last_error();
  return {};
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

inline std::error_code set_option(native_handle h, int level, int name, const void* value, socklen len) noexcept {
  if (::setsockopt(h, level, name, value, len) != 0) return last_error();
  return {};
}

inline std::error_code get_option(native_handle h, int level, int name, void* value, socklen* len) noexcept {
  if (::getsockopt(h, level, name, value, len) != 0) return last_error();
  return {};
}
#endif

#if defined(SOCKPAT_WINDOWS)
// Winsock lengths are int: a larger buffer is sent or received in INT_MAX pieces by the callers' loops.
inline int io_length(std::size_t n) noexcept { return n > INT_MAX ? INT_MAX : static_cast<int>(n); }

/// accept, with the new socket non-blocking and not inheritable. would_block and
/// WSAECONNRESET/WSAECONNABORTED (the client left first) go back to the caller.
inline native_handle accept_handle(native_handle h, void* addr, socklen* len, std::error_code& ec) noexcept {
  const native_handle c = ::accept(h, static_cast<::sockaddr*>(addr), len);
  if (c == invalid_handle) {
    ec = last_error();
    return invalid_handle;
  }
  ec = after_create(c);
  if (ec) {
    close_handle(c);
    return invalid_handle;
  }
  return c;
}

/// Starts a connect on a non-blocking socket: success, operation_in_progress, or the error.
inline std::error_code connect_handle(native_handle h, const void* addr, socklen len) noexcept {
  if (::connect(h, static_cast<const ::sockaddr*>(addr), len) == 0) return {};
  // A non-blocking connect under way is WSAEWOULDBLOCK on Windows, EINPROGRESS on POSIX.
  if (::WSAGetLastError() == WSAEWOULDBLOCK) return make_errc(std::errc::operation_in_progress);
  return last_error();
}

inline std::size_t recv_some(native_handle h, void* buf, std::size_t n, int flags, std::error_code& ec) noexcept {
  const int r = ::recv(h, static_cast<char*>(buf), io_length(n), flags);
  if (r >= 0) return static_cast<std::size_t>(r);
  ec = last_error();
  return 0;
}

// Winsock has no per-call MSG_DONTWAIT, so a blocking SOCKET would make every call block:
// connections keep waiting in WSAPoll, and these three exist only so that code compiles.
inline constexpr bool kernel_wait_supported = false;
inline std::size_t recv_waiting(native_handle h, void* buf, std::size_t n, std::error_code& ec) noexcept {
  return recv_some(h, buf, n, 0, ec);
}
inline std::error_code set_blocking(native_handle, bool) noexcept { return make_errc(std::errc::not_supported); }
inline std::error_code set_receive_timeout(native_handle, std::chrono::microseconds) noexcept {
  return make_errc(std::errc::not_supported);
}

inline std::size_t send_some(native_handle h, const void* buf, std::size_t n, std::error_code& ec) noexcept {
  const int r = ::send(h, static_cast<const char*>(buf), io_length(n), send_flags);
  if (r >= 0) return static_cast<std::size_t>(r);
  ec = last_error();
  return 0;
}

inline std::size_t send_to(native_handle h, const void* buf, std::size_t n, const void* addr, socklen len,
                           std::error_code& ec) noexcept {
  const int r = ::sendto(h, static_cast<const char*>(buf), io_length(n), send_flags,
                         static_cast<const ::sockaddr*>(addr), len);
  if (r >= 0) return static_cast<std::size_t>(r);
  ec = last_error();
  return 0;
}

/// A datagram larger than the buffer fills it and fails with WSAEMSGSIZE (message_size):
/// the caller reports the truncation, with the buffer's worth of bytes and the sender.
inline std::size_t recv_from(native_handle h, void* buf, std::size_t n, void* addr, socklen* len,
                             std::error_code& ec) noexcept {
  const int r = ::recvfrom(h, static_cast<char*>(buf), io_length(n), 0, static_cast<::sockaddr*>(addr), len);
  if (r >= 0) return static_cast<std::size_t>(r);
  ec = last_error();
  return ec == std::errc::message_size ? n : 0;
}

inline constexpr int shut_receive = SD_RECEIVE;
inline constexpr int shut_send = SD_SEND;
inline constexpr int shut_both = SD_BOTH;

inline std::error_code set_option(native_handle h, int level, int name, const void* value, socklen len) noexcept {
  if (::setsockopt(h, level, name, static_cast<const char*>(value), len) != 0) return last_error();
  return {};
}

inline std::error_code get_option(native_handle h, int level, int name, void* value, socklen* len) noexcept {
  if (::getsockopt(h, level, name, static_cast<char*>(value), len) != 0) return last_error();
  return {};
}
#endif

inline std::error_code shutdown_handle(native_handle h, int how) noexcept {
  if (::shutdown(h, how) != 0) return last_error();
  return {};
}

/// How many descriptors this process may hold (RLIMIT_NOFILE's soft limit; unlimited or unknown
/// gives a large or a common value). Windows has no such per-process limit on sockets: a fixed number.
inline std::size_t descriptor_limit() noexcept {
#if defined(SOCKPAT_POSIX)
  ::rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t{1} << 20)) return std::size_t{1} << 20;
  return static_cast<std::size_t>(rl.rlim_cur);
#else
  return 8192;
#endif
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
  return os_error(err);
}

inline std::error_code local_address(native_handle h, void* addr, socklen* len) noexcept {
  if (::getsockname(h, static_cast<::sockaddr*>(addr), len) != 0) return last_error();
  return {};
}

inline std::error_code peer_address(native_handle h, void* addr, socklen* len) noexcept {
  if (::getpeername(h, static_cast<::sockaddr*>(addr), len) != 0) return last_error();
  return {};
}

/// The peer's address for an error message, also after a reset: getpeername then fails (not
/// connected), but Linux keeps the address, and SO_PEERNAME still reads it.
inline std::error_code last_peer_address(native_handle h, void* addr, socklen* len) noexcept {
  const socklen room = *len;
  auto ec = peer_address(h, addr, len);
#if defined(SOCKPAT_LINUX) && defined(SO_PEERNAME)
  if (!ec) return ec;
  // SO_PEERNAME wants the exact size of the address (a larger buffer is EINVAL): the family's.
  *len = room;
  if (local_address(h, addr, len)) return ec;
  const int family = static_cast<const ::sockaddr*>(addr)->sa_family;
  socklen size = family == AF_INET ? sizeof(::sockaddr_in) : family == AF_INET6 ? sizeof(::sockaddr_in6) : 0;
  if (size == 0 || size > room) return ec;
  if (::getsockopt(h, SOL_SOCKET, SO_PEERNAME, addr, &size) != 0) return ec;
  *len = size;
  return {};
#else
  (void)room;
  return ec;
#endif
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
#if defined(SOCKPAT_WINDOWS)
// Windows' SO_REUSEADDR lets a second socket bind a port another one is listening on (port
// stealing), unlike POSIX's. Listeners take this instead, as Microsoft advises for servers, so
// that a bound port is theirs alone; ListenOptions::reuse_address is not applied on Windows.
inline constexpr SocketOption exclusive_address{SOL_SOCKET, SO_EXCLUSIVEADDRUSE, "SO_EXCLUSIVEADDRUSE"};
#endif
}  // namespace option

inline std::error_code set_int_option(native_handle h, const SocketOption& o, int value) noexcept {
  return set_int_option(h, o.level, o.name, value);
}

inline int get_int_option(native_handle h, const SocketOption& o, std::error_code& ec) noexcept {
  return get_int_option(h, o.level, o.name, ec);
}

/// The address-reuse policy of a listening socket: SO_REUSEADDR when asked on POSIX;
/// SO_EXCLUSIVEADDRUSE always on Windows, whose SO_REUSEADDR allows port stealing.
inline std::error_code set_listener_reuse(native_handle h, bool reuse_address) noexcept {
#if defined(SOCKPAT_WINDOWS)
  (void)reuse_address;
  return set_int_option(h, option::exclusive_address, 1);
#else
  return reuse_address ? set_int_option(h, option::reuse_address, 1) : std::error_code{};
#endif
}

/// SO_REUSEPORT on, or operation_not_supported where the platform has no such option (Windows),
/// so that asking for it is never silently ignored.
inline std::error_code set_reuse_port(native_handle h) noexcept {
#if defined(SOCKPAT_HAS_REUSE_PORT)
  return set_int_option(h, option::reuse_port, 1);
#else
  (void)h;
  return make_errc(std::errc::operation_not_supported);
#endif
}

/// SO_LINGER: off, or on with a timeout in seconds (0: close() resets the connection).
inline std::error_code set_linger(native_handle h, bool on, int seconds) noexcept {
  ::linger l{};
  l.l_onoff = static_cast<decltype(l.l_onoff)>(on ? 1 : 0);
  l.l_linger = static_cast<decltype(l.l_linger)>(on ? seconds : 0);
  return set_option(h, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

inline constexpr int default_backlog = SOMAXCONN;

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_SYSCALL_HPP

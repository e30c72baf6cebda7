// sockpat: Socket<P>, the RAII owner of one socket, with options and datagram I/O.
#ifndef SOCKPAT_SOCKET_HPP
#define SOCKPAT_SOCKET_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::seconds
#include <concepts>      // std::same_as
#include <cstddef>       // std::byte, std::size_t
#include <optional>      // std::optional
#include <span>          // std::span
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code, std::system_error
#include <utility>       // std::move

#include "sockpat/deadline.hpp"
#include "sockpat/detail/async_io.hpp"
#include "sockpat/detail/blocking.hpp"
#include "sockpat/detail/unique_handle.hpp"
#include "sockpat/endpoint.hpp"
#include "sockpat/error.hpp"
#include "sockpat/protocol.hpp"

namespace sockpat {

using native_handle_type = detail::native_handle;

namespace detail {

inline Bound bound_of(const Deadline& d) noexcept {
  return {d.time(), d.stop_token().stop_possible() ? &d.stop_token() : nullptr};
}

inline std::string describe(std::string_view op, const Endpoint& e) {
  std::string s(op);
  if (!e.empty()) {
    s += ' ';
    s += e.to_string();
  }
  return s;
}

/// The shorter of a call's own timeout and its connection's (zero: neither is known).
inline std::chrono::steady_clock::duration waited(const Deadline& d,
                                                  std::optional<std::chrono::steady_clock::duration> also = {}) noexcept {
  auto t = d.timeout();
  if (also && *also > also->zero() && (t == t.zero() || *also < t)) t = *also;
  return t;
}

/// A throwing call's message, built only when it throws: "read from 127.0.0.1:80", and for a
/// timeout how long the call waited, "read from 127.0.0.1:80 after 50 ms" (then ": Connection
/// timed out"). `waited` is zero when the deadline was a time point.
inline std::string describe(std::string_view op, const Endpoint& e, std::error_code ec,
                            std::chrono::steady_clock::duration waited) {
  std::string s = describe(op, e);
  return append_waited(s, ec, waited);
}

/// A stream or connected datagram call's message: "read from PEER", or, when the peer's address
/// is unknown (after a reset, on an OS that forgets it), "read on LOCAL".
inline std::string describe(std::string_view op, std::string_view to_from, const Endpoint& peer, const Endpoint& local,
                            std::error_code ec, std::chrono::steady_clock::duration waited) {
  std::string s(op);
  if (!peer.empty()) {
    s += ' ';
    s += to_from;
    return describe(s, peer, ec, waited);
  }
  s += " on";
  return describe(s, local, ec, waited);
}

inline std::span<const std::byte> bytes_of(std::string_view s) noexcept {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

}  // namespace detail

/// An owned socket of protocol P: closed when destroyed, move-only, never copied.
/// Blocking calls take a Deadline (a timeout, a time point and/or a stop token); the
/// throwing form raises std::system_error naming the operation and the endpoint, and the
/// std::error_code& twin is noexcept. Sockets are non-blocking underneath: native_handle()
/// users see O_NONBLOCK set.
template <Protocol P>
class Socket {
 public:
  using protocol_type = P;

  /// A socket that is not open.
  Socket() noexcept = default;

  /// Opens a socket of protocol P for `family` (a Unix protocol needs Family::unix_domain).
  explicit Socket(Family family) {
    std::error_code ec;
    *this = Socket(family, ec);
    if (ec) detail::throw_error(ec, "socket");
  }
  Socket(Family family, std::error_code& ec) noexcept : family_(family) {
    if ((family == Family::unix_domain) != P::local) {
      ec = detail::make_errc(std::errc::address_family_not_supported);
      return;
    }
    handle_ = detail::UniqueHandle(detail::open_socket(detail::native_family(family), detail::native_type(P::type), 0, ec));
  }

  /// Takes ownership of an open handle of this protocol and family. It should be non-blocking.
  Socket(detail::UniqueHandle handle, Family family) noexcept : handle_(std::move(handle)), family_(family) {}

  /// A datagram socket bound to `local` (port 0 picks a free port).
  [[nodiscard]] static Socket bound(const Endpoint& local)
    requires DatagramProtocol<P>
  {
    Socket s(local.family());
    s.bind(local);
    return s;
  }
  [[nodiscard]] static Socket bound(const Endpoint& local, std::error_code& ec) noexcept
    requires DatagramProtocol<P>
  {
    Socket s(local.family(), ec);
    if (!ec) s.bind(local, ec);
    return ec ? Socket{} : std::move(s);
  }

  [[nodiscard]] bool is_open() const noexcept { return handle_.valid(); }
  [[nodiscard]] Family family() const noexcept { return family_; }
  [[nodiscard]] native_handle_type native_handle() const noexcept { return handle_.get(); }
  /// Gives up ownership: the caller closes the returned handle.
  [[nodiscard]] native_handle_type release() noexcept { return handle_.release(); }

  /// Closes the socket and reports what the OS said; the socket is closed either way.
  void close() {
    if (auto ec = handle_.close()) detail::throw_error(ec, "close");
  }
  void close(std::error_code& ec) noexcept { ec = handle_.close(); }

  void bind(const Endpoint& local) {
    std::error_code ec;
    bind(local, ec);
    if (ec) detail::throw_error(ec, detail::describe("bind", local));
  }
  void bind(const Endpoint& local, std::error_code& ec) noexcept {
    ec = open_check();
    if (!ec) ec = detail::bind_handle(native_handle(), local.raw().data(), local.raw().size);
  }

  [[nodiscard]] Endpoint local_endpoint() const {
    std::error_code ec;
    auto e = local_endpoint(ec);
    if (ec) detail::throw_error(ec, "local_endpoint");
    return e;
  }
  [[nodiscard]] Endpoint local_endpoint(std::error_code& ec) const noexcept {
    detail::RawAddress a;
    a.size = sizeof a.storage;
    ec = open_check();
    if (!ec) ec = detail::local_address(native_handle(), a.data(), &a.size);
    return ec ? Endpoint{} : Endpoint::from_native(a.data(), a.size);
  }
  [[nodiscard]] Endpoint remote_endpoint() const {
    std::error_code ec;
    auto e = remote_endpoint(ec);
    if (ec) detail::throw_error(ec, "remote_endpoint");
    return e;
  }
  [[nodiscard]] Endpoint remote_endpoint(std::error_code& ec) const noexcept {
    detail::RawAddress a;
    a.size = sizeof a.storage;
    ec = open_check();
    if (!ec) ec = detail::peer_address(native_handle(), a.data(), &a.size);
    return ec ? Endpoint{} : Endpoint::from_native(a.data(), a.size);
  }

  // --- options: each setter throws std::system_error naming the option ---

  void set_reuse_address(bool on) { set_flag(detail::option::reuse_address, on); }
  [[nodiscard]] bool reuse_address() const { return get_flag(detail::option::reuse_address); }
#if defined(SOCKPAT_HAS_REUSE_PORT)
  /// Lets several sockets bind the same port (the kernel spreads connections among them).
  void set_reuse_port(bool on) { set_flag(detail::option::reuse_port, on); }
  [[nodiscard]] bool reuse_port() const { return get_flag(detail::option::reuse_port); }
#endif
  void set_keep_alive(bool on)
    requires StreamProtocol<P>
  {
    set_flag(detail::option::keep_alive, on);
  }
  [[nodiscard]] bool keep_alive() const
    requires StreamProtocol<P>
  {
    return get_flag(detail::option::keep_alive);
  }
  void set_no_delay(bool on)
    requires std::same_as<P, Tcp>
  {
    set_flag(detail::option::no_delay, on);
  }
  [[nodiscard]] bool no_delay() const
    requires std::same_as<P, Tcp>
  {
    return get_flag(detail::option::no_delay);
  }
  /// std::nullopt: close() returns at once and the OS sends what is queued (the default);
  /// a duration: close() waits up to that long; 0 s: close() resets the connection (RST).
  void set_linger(std::optional<std::chrono::seconds> linger)
    requires StreamProtocol<P>
  {
    check_option(this->open_check(), "SO_LINGER");
    check_option(detail::set_linger(native_handle(), linger.has_value(), linger ? static_cast<int>(linger->count()) : 0),
                 "SO_LINGER");
  }
  void set_send_buffer_size(int bytes) { set_int(detail::option::send_buffer, bytes); }
  [[nodiscard]] int send_buffer_size() const { return get_int(detail::option::send_buffer); }
  void set_receive_buffer_size(int bytes) { set_int(detail::option::receive_buffer, bytes); }
  [[nodiscard]] int receive_buffer_size() const { return get_int(detail::option::receive_buffer); }
  /// An IPv6 socket that accepts IPv6 only (on) or IPv4-mapped addresses too (off).
  void set_v6_only(bool on)
    requires InternetProtocol<P>
  {
    set_flag(detail::option::v6_only, on);
  }
  [[nodiscard]] bool v6_only() const
    requires InternetProtocol<P>
  {
    return get_flag(detail::option::v6_only);
  }
  void set_broadcast(bool on)
    requires std::same_as<P, Udp>
  {
    set_flag(detail::option::broadcast, on);
  }
  [[nodiscard]] bool broadcast() const
    requires std::same_as<P, Udp>
  {
    return get_flag(detail::option::broadcast);
  }

  // --- datagrams ---

  /// Sends one datagram to `to`; returns the bytes sent (all of them, for a datagram).
  std::size_t send_to(std::span<const std::byte> data, const Endpoint& to, Deadline d = {})
    requires DatagramProtocol<P>
  {
    std::error_code ec;
    const auto n = send_to(data, to, d, ec);
    if (ec) detail::throw_error(ec, detail::describe("send_to", to, ec, d.timeout()));
    return n;
  }
  std::size_t send_to(std::span<const std::byte> data, const Endpoint& to, Deadline d, std::error_code& ec) noexcept
    requires DatagramProtocol<P>
  {
    ec = open_check();
    if (ec) return 0;
    return detail::blocking_send_to(native_handle(), data.data(), data.size(), to.raw(), detail::bound_of(d), ec);
  }
  std::size_t send_to(std::string_view data, const Endpoint& to, Deadline d = {})
    requires DatagramProtocol<P>
  {
    return send_to(detail::bytes_of(data), to, d);
  }
  std::size_t send_to(std::string_view data, const Endpoint& to, Deadline d, std::error_code& ec) noexcept
    requires DatagramProtocol<P>
  {
    return send_to(detail::bytes_of(data), to, d, ec);
  }

  /// Receives one datagram into `buffer` and its sender into `from`. A datagram larger than
  /// the buffer fills it and fails with std::errc::message_size (no silent truncation).
  std::size_t receive_from(std::span<std::byte> buffer, Endpoint& from, Deadline d = {})
    requires DatagramProtocol<P>
  {
    std::error_code ec;
    const auto n = receive_from(buffer, from, d, ec);
    if (ec) detail::throw_error(ec, detail::describe("receive_from on", local_endpoint_or_empty(), ec, d.timeout()));
    return n;
  }
  std::size_t receive_from(std::span<std::byte> buffer, Endpoint& from, Deadline d, std::error_code& ec) noexcept
    requires DatagramProtocol<P>
  {
    ec = open_check();
    if (ec) return 0;
    detail::RawAddress a;
    const auto n = detail::blocking_recv_from(native_handle(), buffer.data(), buffer.size(), &a, detail::bound_of(d), ec);
    if (!ec || ec == std::errc::message_size) from = Endpoint::from_native(a.data(), a.size);
    return n;
  }
  std::size_t receive_from(std::span<char> buffer, Endpoint& from, Deadline d = {})
    requires DatagramProtocol<P>
  {
    return receive_from(std::as_writable_bytes(buffer), from, d);
  }
  std::size_t receive_from(std::span<char> buffer, Endpoint& from, Deadline d, std::error_code& ec) noexcept
    requires DatagramProtocol<P>
  {
    return receive_from(std::as_writable_bytes(buffer), from, d, ec);
  }

  /// Fixes the peer of a datagram socket: send() and receive() then talk to it alone.
  void connect(const Endpoint& peer)
    requires DatagramProtocol<P>
  {
    std::error_code ec;
    connect(peer, ec);
    if (ec) detail::throw_error(ec, detail::describe("connect", peer));
  }
  void connect(const Endpoint& peer, std::error_code& ec) noexcept
    requires DatagramProtocol<P>
  {
    ec = open_check();
    // A datagram connect completes at once: it only records the peer.
    if (!ec) ec = detail::blocking_connect(native_handle(), peer.raw(), {});
  }
  std::size_t send(std::span<const std::byte> data, Deadline d = {})
    requires DatagramProtocol<P>
  {
    std::error_code ec;
    const auto n = send(data, d, ec);
    if (ec) detail::throw_error(ec, datagram_where("send on", " to", ec, d));
    return n;
  }
  std::size_t send(std::span<const std::byte> data, Deadline d, std::error_code& ec) noexcept
    requires DatagramProtocol<P>
  {
    ec = open_check();
    if (ec) return 0;
    return detail::blocking_send(native_handle(), data.data(), data.size(), detail::bound_of(d), ec);
  }
  std::size_t send(std::string_view data, Deadline d = {})
    requires DatagramProtocol<P>
  {
    return send(detail::bytes_of(data), d);
  }
  std::size_t send(std::string_view data, Deadline d, std::error_code& ec) noexcept
    requires DatagramProtocol<P>
  {
    return send(detail::bytes_of(data), d, ec);
  }
  std::size_t receive(std::span<std::byte> buffer, Deadline d = {})
    requires DatagramProtocol<P>
  {
    std::error_code ec;
    const auto n = receive(buffer, d, ec);
    if (ec) detail::throw_error(ec, datagram_where("receive on", " from", ec, d));
    return n;
  }
  std::size_t receive(std::span<std::byte> buffer, Deadline d, std::error_code& ec) noexcept
    requires DatagramProtocol<P>
  {
    ec = open_check();
    if (ec) return 0;
    return detail::blocking_recv_from(native_handle(), buffer.data(), buffer.size(), nullptr, detail::bound_of(d), ec);
  }
  std::size_t receive(std::span<char> buffer, Deadline d = {})
    requires DatagramProtocol<P>
  {
    return receive(std::as_writable_bytes(buffer), d);
  }
  std::size_t receive(std::span<char> buffer, Deadline d, std::error_code& ec) noexcept
    requires DatagramProtocol<P>
  {
    return receive(std::as_writable_bytes(buffer), d, ec);
  }

  // --- awaited datagrams (on the running EventLoop; see event_loop.hpp) ---

  /// Awaits one datagram into `buffer` and its sender into `from` (which must outlive the
  /// co_await). Throws std::system_error when awaited; the error_code& form stores the error.
  [[nodiscard]] detail::IoAwaiter<detail::RecvFromOp> async_receive_from(std::span<std::byte> buffer, Endpoint& from,
                                                                        Deadline d = {}) noexcept
    requires DatagramProtocol<P>
  {
    return {native_handle(), detail::RecvFromOp{buffer.data(), buffer.size(), &from}, d, nullptr};
  }
  [[nodiscard]] detail::IoAwaiter<detail::RecvFromOp> async_receive_from(std::span<std::byte> buffer, Endpoint& from,
                                                                        Deadline d, std::error_code& ec) noexcept
    requires DatagramProtocol<P>
  {
    return {native_handle(), detail::RecvFromOp{buffer.data(), buffer.size(), &from}, d, &ec};
  }
  [[nodiscard]] detail::IoAwaiter<detail::RecvFromOp> async_receive_from(std::span<char> buffer, Endpoint& from,
                                                                        Deadline d = {}) noexcept
    requires DatagramProtocol<P>
  {
    return async_receive_from(std::as_writable_bytes(buffer), from, d);
  }
  [[nodiscard]] detail::IoAwaiter<detail::RecvFromOp> async_receive_from(std::span<char> buffer, Endpoint& from,
                                                                        Deadline d, std::error_code& ec) noexcept
    requires DatagramProtocol<P>
  {
    return async_receive_from(std::as_writable_bytes(buffer), from, d, ec);
  }
  /// Awaits sending one datagram to `to`.
  [[nodiscard]] detail::IoAwaiter<detail::SendToOp> async_send_to(std::span<const std::byte> data, const Endpoint& to,
                                                                 Deadline d = {}) noexcept
    requires DatagramProtocol<P>
  {
    return {native_handle(), detail::SendToOp{data.data(), data.size(), to.raw()}, d, nullptr};
  }
  [[nodiscard]] detail::IoAwaiter<detail::SendToOp> async_send_to(std::span<const std::byte> data, const Endpoint& to,
                                                                 Deadline d, std::error_code& ec) noexcept
    requires DatagramProtocol<P>
  {
    return {native_handle(), detail::SendToOp{data.data(), data.size(), to.raw()}, d, &ec};
  }
  [[nodiscard]] detail::IoAwaiter<detail::SendToOp> async_send_to(std::string_view data, const Endpoint& to,
                                                                 Deadline d = {}) noexcept
    requires DatagramProtocol<P>
  {
    return async_send_to(detail::bytes_of(data), to, d);
  }
  [[nodiscard]] detail::IoAwaiter<detail::SendToOp> async_send_to(std::string_view data, const Endpoint& to, Deadline d,
                                                                 std::error_code& ec) noexcept
    requires DatagramProtocol<P>
  {
    return async_send_to(detail::bytes_of(data), to, d, ec);
  }

 protected:
  [[nodiscard]] std::error_code open_check() const noexcept {
    return is_open() ? std::error_code{} : make_error_code(errc::not_connected);
  }
  [[nodiscard]] Endpoint local_endpoint_or_empty() const noexcept {
    std::error_code ignored;
    return local_endpoint(ignored);
  }
  /// For messages: the peer also after a reset, where remote_endpoint() fails (not connected).
  [[nodiscard]] Endpoint remote_endpoint_or_empty() const noexcept {
    detail::RawAddress a;
    a.size = sizeof a.storage;
    if (open_check() || detail::last_peer_address(native_handle(), a.data(), &a.size)) return {};
    return Endpoint::from_native(a.data(), a.size);
  }

 private:
  /// "receive on LOCAL from PEER" (either left out when unknown), and how long a timeout waited.
  [[nodiscard]] std::string datagram_where(std::string_view op, std::string_view to_from, std::error_code ec,
                                           const Deadline& d) const {
    std::string s = detail::describe(op, local_endpoint_or_empty());
    const Endpoint peer = remote_endpoint_or_empty();
    if (!peer.empty()) s += to_from;
    return detail::describe(s, peer, ec, d.timeout());
  }

  static void check_option(std::error_code ec, const char* name) {
    if (ec) detail::throw_error(ec, std::string("socket option ") + name);
  }
  void set_int(const detail::SocketOption& o, int value) {
    check_option(open_check(), o.label);
    check_option(detail::set_int_option(native_handle(), o, value), o.label);
  }
  [[nodiscard]] int get_int(const detail::SocketOption& o) const {
    check_option(open_check(), o.label);
    std::error_code ec;
    const int v = detail::get_int_option(native_handle(), o, ec);
    check_option(ec, o.label);
    return v;
  }
  void set_flag(const detail::SocketOption& o, bool on) { set_int(o, on ? 1 : 0); }
  [[nodiscard]] bool get_flag(const detail::SocketOption& o) const { return get_int(o) != 0; }

  detail::UniqueHandle handle_;
  Family family_ = Family::unspecified;
};

using TcpSocket = Socket<Tcp>;
using UdpSocket = Socket<Udp>;
using UnixSocket = Socket<Unix>;
using UnixDatagramSocket = Socket<UnixDatagram>;

}  // namespace sockpat

#endif  // SOCKPAT_SOCKET_HPP

// sockpat: Connection<P>, a connected byte stream (TCP or Unix-domain).
#ifndef SOCKPAT_CONNECTION_HPP
#define SOCKPAT_CONNECTION_HPP

#include <chrono>        // std::chrono::steady_clock
#include <cstddef>       // std::byte, std::size_t
#include <optional>      // std::optional
#include <span>          // std::span
#include <stop_token>    // std::stop_token
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code
#include <utility>       // std::pair, std::move
#include <vector>        // std::vector

#include "sockpat/socket.hpp"
#include "sockpat/task.hpp"

namespace sockpat {

/// Which direction(s) shutdown() ends.
enum class Shutdown { receive, send, both };

/// How Connection::connect dials.
struct ConnectOptions {
  /// When set, the socket is bound here first (the seed's peer binds its own port, then connects).
  Endpoint local = {};
  /// SO_REUSEADDR on the socket before binding `local`, so a restarted peer can rebind its port.
  bool reuse_address = true;
  /// SO_REUSEPORT before binding `local`, so the socket can dial from a port that a listener
  /// (with reuse_port too) holds: the rendezvous of two peers uses it. Windows has no
  /// SO_REUSEPORT: there the connect fails with operation_not_supported.
  bool reuse_port = false;
  /// Bounds the whole connect, over every address tried.
  Deadline deadline = {};

  [[nodiscard]] static ConnectOptions with_deadline(Deadline d) noexcept {
    ConnectOptions o;
    o.deadline = std::move(d);
    return o;
  }
};

/// A connected stream socket. read_some returning 0 means the peer closed its side.
/// Moves, never copies; one thread may read while another writes; Deadline bounds every call.
template <StreamProtocol P>
class Connection : private Socket<P> {
  using Base = Socket<P>;

 public:
  using protocol_type = P;
  using Base::close;
  using Base::family;
  using Base::is_open;
  using Base::local_endpoint;
  using Base::native_handle;
  using Base::receive_buffer_size;
  using Base::release;
  using Base::remote_endpoint;
  using Base::send_buffer_size;
  using Base::set_keep_alive;
  using Base::set_linger;
  using Base::set_receive_buffer_size;
  using Base::set_send_buffer_size;
  using Base::keep_alive;

  Connection() noexcept = default;
  /// Adopts a connected socket.
  explicit Connection(Socket<P>&& s) noexcept : Base(std::move(s)) {}

  void set_no_delay(bool on)
    requires std::same_as<P, Tcp>
  {
    Base::set_no_delay(on);
  }
  [[nodiscard]] bool no_delay() const
    requires std::same_as<P, Tcp>
  {
    return Base::no_delay();
  }

  /// The underlying socket, for options Connection does not forward.
  [[nodiscard]] Socket<P>& socket() noexcept { return *this; }
  [[nodiscard]] const Socket<P>& socket() const noexcept { return *this; }

  /// Connects to `remote`. Throws std::system_error ("connect 127.0.0.1:9: Connection refused",
  /// timed_out when the deadline passes, operation_canceled on stop).
  [[nodiscard]] static Connection connect(const Endpoint& remote, Deadline d = {}) {
    return connect(remote, ConnectOptions::with_deadline(std::move(d)));
  }
  [[nodiscard]] static Connection connect(const Endpoint& remote, Deadline d, std::error_code& ec) noexcept {
    return connect(remote, ConnectOptions::with_deadline(std::move(d)), ec);
  }
  [[nodiscard]] static Connection connect(const Endpoint& remote, const ConnectOptions& options) {
    std::error_code ec;
    auto c = connect(remote, options, ec);
    if (ec) detail::throw_error(ec, detail::describe("connect", remote, ec, options.deadline.timeout()));
    return c;
  }
  [[nodiscard]] static Connection connect(const Endpoint& remote, const ConnectOptions& options,
                                          std::error_code& ec) noexcept {
    ec.clear();
    Socket<P> s(remote.family(), ec);
    if (ec) return {};
    if (!options.local.empty()) {
      if (options.reuse_address) ec = detail::set_int_option(s.native_handle(), detail::option::reuse_address, 1);
      if (!ec && options.reuse_port) ec = detail::set_reuse_port(s.native_handle());
      if (!ec) s.bind(options.local, ec);
      if (ec) return {};
    }
    ec = detail::blocking_connect(s.native_handle(), remote.raw(), detail::bound_of(options.deadline));
    if (ec) return {};
    return Connection(std::move(s));
  }

  /// Resolves `host` and connects to each address in turn until one answers, all within `d`.
  [[nodiscard]] static Connection connect(std::string_view host, int port, Deadline d = {})
    requires InternetProtocol<P>
  {
    return connect(host, port, ConnectOptions::with_deadline(std::move(d)));
  }
  [[nodiscard]] static Connection connect(std::string_view host, int port, Deadline d, std::error_code& ec) noexcept
    requires InternetProtocol<P>
  {
    return connect(host, port, ConnectOptions::with_deadline(std::move(d)), ec);
  }
  [[nodiscard]] static Connection connect(std::string_view host, int port, const ConnectOptions& options)
    requires InternetProtocol<P>
  {
    const auto addresses = resolve(host, port);
    std::error_code ec;
    auto c = connect_any(addresses, options, ec);
    if (ec) {
      std::string what = "connect " + std::string(host) + ':' + std::to_string(port) + " (tried";
      for (const auto& a : addresses) what += ' ' + a.to_string();
      detail::throw_error(ec, detail::describe(what + ')', {}, ec, options.deadline.timeout()));
    }
    return c;
  }
  [[nodiscard]] static Connection connect(std::string_view host, int port, const ConnectOptions& options,
                                          std::error_code& ec) noexcept
    requires InternetProtocol<P>
  {
    const auto addresses = resolve(host, port, ec);
    if (ec) return {};
    return connect_any(addresses, options, ec);
  }

  /// Tries each endpoint in order; the error is the last one met (timed_out once the deadline passed).
  [[nodiscard]] static Connection connect_any(std::span<const Endpoint> endpoints, const ConnectOptions& options,
                                              std::error_code& ec) noexcept {
    ec = detail::make_errc(std::errc::host_unreachable);
    for (const auto& e : endpoints) {
      if (!options.local.empty() && options.local.family() != e.family()) continue;
      auto c = connect(e, options, ec);
      if (!ec) return c;
      if (ec == std::errc::timed_out || ec == std::errc::operation_canceled) break;
    }
    return {};
  }

  /// Two connected Unix-domain streams (socketpair).
  [[nodiscard]] static std::pair<Connection, Connection> pair()
    requires LocalProtocol<P>
  {
    detail::native_handle h[2];
    if (auto ec = detail::socket_pair(detail::native_family(Family::unix_domain), detail::native_type(P::type), h)) detail::throw_error(ec, "socketpair");
    return {Connection(Socket<P>(detail::UniqueHandle(h[0]), Family::unix_domain)),
            Connection(Socket<P>(detail::UniqueHandle(h[1]), Family::unix_domain))};
  }

  // --- bounds of the connection itself, applied to every blocking call ---

  /// Bounds each later blocking call by `timeout` from the moment it starts (the earlier of this
  /// and the call's own Deadline wins), like Python's socket.settimeout; std::nullopt removes it.
  /// A silent peer then makes a read fail with timed_out instead of holding a thread.
  void set_timeout(std::optional<std::chrono::steady_clock::duration> timeout) noexcept { timeout_ = timeout; }
  [[nodiscard]] std::optional<std::chrono::steady_clock::duration> timeout() const noexcept { return timeout_; }

  /// Once `stop` is requested, pending and later blocking calls end with operation_canceled,
  /// whatever Deadline they were given: how another thread (a Server) cancels a handler's I/O
  /// without touching the descriptor. Set it before sharing the connection with other threads.
  void set_stop_token(std::stop_token stop) noexcept { stop_ = std::move(stop); }
  [[nodiscard]] const std::stop_token& stop_token() const noexcept { return stop_; }

  /// `d` capped by this connection's timeout counted from now: the bound a call starting now gets.
  /// Composite operations (FramedConnection::read_line) fix it once, so the timeout bounds all of it.
  [[nodiscard]] Deadline bounded(Deadline d) const noexcept {
    if (!timeout_) return d;
    return d.capped(detail::time_after(*timeout_));
  }

  // --- reading ---

  /// Reads what is there, up to buffer.size(), waiting for at least one byte.
  /// Returns 0 at end of stream (the peer shut down its sending side).
  std::size_t read_some(std::span<std::byte> buffer, Deadline d = {}) {
    std::error_code ec;
    const auto n = read_some(buffer, d, ec);
    if (ec) detail::throw_error(ec, where("read", "from", ec, d));
    return n;
  }
  std::size_t read_some(std::span<std::byte> buffer, Deadline d, std::error_code& ec) noexcept {
    ec = this->open_check();
    if (ec) return 0;
    return detail::blocking_recv(native_handle(), buffer.data(), buffer.size(), bound(d), ec);
  }
  std::size_t read_some(std::span<char> buffer, Deadline d = {}) { return read_some(std::as_writable_bytes(buffer), d); }
  std::size_t read_some(std::span<char> buffer, Deadline d, std::error_code& ec) noexcept {
    return read_some(std::as_writable_bytes(buffer), d, ec);
  }

  /// Fills the whole buffer. End of stream first throws TransferError (sockpat::errc::end_of_stream)
  /// whose bytes_transferred() says how many bytes did arrive; the twin returns that count.
  std::size_t read_exactly(std::span<std::byte> buffer, Deadline d = {}) {
    std::error_code ec;
    const auto n = read_exactly(buffer, d, ec);
    if (ec) throw TransferError(ec, where("read_exactly", "from", ec, d), n);
    return n;
  }
  std::size_t read_exactly(std::span<std::byte> buffer, Deadline d, std::error_code& ec) noexcept {
    ec = this->open_check();
    if (ec) return 0;
    bool eof = false;
    const auto n = detail::blocking_recv_all(native_handle(), buffer.data(), buffer.size(), bound(d), ec, eof);
    if (eof) ec = make_error_code(errc::end_of_stream);
    return n;
  }
  std::size_t read_exactly(std::span<char> buffer, Deadline d = {}) {
    return read_exactly(std::as_writable_bytes(buffer), d);
  }
  std::size_t read_exactly(std::span<char> buffer, Deadline d, std::error_code& ec) noexcept {
    return read_exactly(std::as_writable_bytes(buffer), d, ec);
  }

  // --- writing ---

  /// Writes what the socket takes now (at least one byte, waiting if need be).
  std::size_t write_some(std::span<const std::byte> data, Deadline d = {}) {
    std::error_code ec;
    const auto n = write_some(data, d, ec);
    if (ec) detail::throw_error(ec, where("write", "to", ec, d));
    return n;
  }
  std::size_t write_some(std::span<const std::byte> data, Deadline d, std::error_code& ec) noexcept {
    ec = this->open_check();
    if (ec) return 0;
    return detail::blocking_send(native_handle(), data.data(), data.size(), bound(d), ec);
  }
  std::size_t write_some(std::string_view data, Deadline d = {}) { return write_some(detail::bytes_of(data), d); }
  std::size_t write_some(std::string_view data, Deadline d, std::error_code& ec) noexcept {
    return write_some(detail::bytes_of(data), d, ec);
  }

  /// Writes every byte, through partial writes, within one deadline. Throws TransferError
  /// (with bytes_transferred()) on failure; the twin returns the count written.
  std::size_t write_all(std::span<const std::byte> data, Deadline d = {}) {
    std::error_code ec;
    const auto n = write_all(data, d, ec);
    if (ec) throw TransferError(ec, where("write_all", "to", ec, d), n);
    return n;
  }
  std::size_t write_all(std::span<const std::byte> data, Deadline d, std::error_code& ec) noexcept {
    ec = this->open_check();
    if (ec) return 0;
    return detail::blocking_send_all(native_handle(), data.data(), data.size(), bound(d), ec);
  }
  std::size_t write_all(std::string_view data, Deadline d = {}) { return write_all(detail::bytes_of(data), d); }
  std::size_t write_all(std::string_view data, Deadline d, std::error_code& ec) noexcept {
    return write_all(detail::bytes_of(data), d, ec);
  }

  // --- awaited I/O, on the running EventLoop (event_loop.hpp) ---
  // Each tries the system call first and waits only if it would block. The awaiters throw
  // when awaited (async_read_exactly and async_write_all throw TransferError, with the count);
  // the error_code& forms store the error instead. A Deadline bounds each (timed_out, or
  // operation_canceled from its stop token); closing the connection on the loop's thread
  // finishes them with operation_canceled. One reader and one writer at a time.
  // The buffer must live until the co_await ends.

  /// Awaits what is there, up to buffer.size(); 0 means end of stream.
  [[nodiscard]] detail::IoAwaiter<detail::RecvSomeOp> async_read_some(std::span<std::byte> buffer, Deadline d = {}) noexcept {
    return {native_handle(), detail::RecvSomeOp{buffer.data(), buffer.size()}, d, nullptr};
  }
  [[nodiscard]] detail::IoAwaiter<detail::RecvSomeOp> async_read_some(std::span<std::byte> buffer, Deadline d,
                                                                     std::error_code& ec) noexcept {
    return {native_handle(), detail::RecvSomeOp{buffer.data(), buffer.size()}, d, &ec};
  }
  [[nodiscard]] detail::IoAwaiter<detail::RecvSomeOp> async_read_some(std::span<char> buffer, Deadline d = {}) noexcept {
    return async_read_some(std::as_writable_bytes(buffer), d);
  }
  [[nodiscard]] detail::IoAwaiter<detail::RecvSomeOp> async_read_some(std::span<char> buffer, Deadline d,
                                                                     std::error_code& ec) noexcept {
    return async_read_some(std::as_writable_bytes(buffer), d, ec);
  }

  /// Awaits the whole buffer; end of stream first is errc::end_of_stream.
  [[nodiscard]] detail::IoAwaiter<detail::RecvExactlyOp> async_read_exactly(std::span<std::byte> buffer,
                                                                           Deadline d = {}) noexcept {
    return {native_handle(), detail::RecvExactlyOp{buffer.data(), buffer.size()}, d, nullptr};
  }
  [[nodiscard]] detail::IoAwaiter<detail::RecvExactlyOp> async_read_exactly(std::span<std::byte> buffer, Deadline d,
                                                                           std::error_code& ec) noexcept {
    return {native_handle(), detail::RecvExactlyOp{buffer.data(), buffer.size()}, d, &ec};
  }
  [[nodiscard]] detail::IoAwaiter<detail::RecvExactlyOp> async_read_exactly(std::span<char> buffer,
                                                                           Deadline d = {}) noexcept {
    return async_read_exactly(std::as_writable_bytes(buffer), d);
  }
  [[nodiscard]] detail::IoAwaiter<detail::RecvExactlyOp> async_read_exactly(std::span<char> buffer, Deadline d,
                                                                           std::error_code& ec) noexcept {
    return async_read_exactly(std::as_writable_bytes(buffer), d, ec);
  }

  /// Awaits writing what the socket takes (at least one byte).
  [[nodiscard]] detail::IoAwaiter<detail::SendSomeOp> async_write_some(std::span<const std::byte> data,
                                                                      Deadline d = {}) noexcept {
    return {native_handle(), detail::SendSomeOp{data.data(), data.size()}, d, nullptr};
  }
  [[nodiscard]] detail::IoAwaiter<detail::SendSomeOp> async_write_some(std::span<const std::byte> data, Deadline d,
                                                                      std::error_code& ec) noexcept {
    return {native_handle(), detail::SendSomeOp{data.data(), data.size()}, d, &ec};
  }
  [[nodiscard]] detail::IoAwaiter<detail::SendSomeOp> async_write_some(std::string_view data, Deadline d = {}) noexcept {
    return async_write_some(detail::bytes_of(data), d);
  }
  [[nodiscard]] detail::IoAwaiter<detail::SendSomeOp> async_write_some(std::string_view data, Deadline d,
                                                                      std::error_code& ec) noexcept {
    return async_write_some(detail::bytes_of(data), d, ec);
  }

  /// Awaits writing every byte.
  [[nodiscard]] detail::IoAwaiter<detail::SendAllOp> async_write_all(std::span<const std::byte> data,
                                                                    Deadline d = {}) noexcept {
    return {native_handle(), detail::SendAllOp{data.data(), data.size()}, d, nullptr};
  }
  [[nodiscard]] detail::IoAwaiter<detail::SendAllOp> async_write_all(std::span<const std::byte> data, Deadline d,
                                                                    std::error_code& ec) noexcept {
    return {native_handle(), detail::SendAllOp{data.data(), data.size()}, d, &ec};
  }
  [[nodiscard]] detail::IoAwaiter<detail::SendAllOp> async_write_all(std::string_view data, Deadline d = {}) noexcept {
    return async_write_all(detail::bytes_of(data), d);
  }
  [[nodiscard]] detail::IoAwaiter<detail::SendAllOp> async_write_all(std::string_view data, Deadline d,
                                                                    std::error_code& ec) noexcept {
    return async_write_all(detail::bytes_of(data), d, ec);
  }

  /// Connects to `remote` on the running loop. Throws std::system_error ("connect 127.0.0.1:9").
  static Task<Connection> async_connect(Endpoint remote, Deadline d = {}) {
    std::error_code ec;
    Socket<P> s(remote.family(), ec);
    if (!ec) {
      co_await detail::IoAwaiter<detail::ConnectOp>(s.native_handle(), detail::ConnectOp{remote.raw()}, d, &ec);
    }
    if (ec) detail::throw_error(ec, detail::describe("connect", remote, ec, d.timeout()));
    co_return Connection(std::move(s));
  }

  /// Resolves `host` (blocking, as getaddrinfo is) and tries each address in turn, all within `d`.
  static Task<Connection> async_connect(std::string host, int port, Deadline d = {})
    requires InternetProtocol<P>
  {
    const std::vector<Endpoint> addresses = resolve(host, port);
    std::error_code ec = detail::make_errc(std::errc::host_unreachable);
    for (const auto& remote : addresses) {
      Socket<P> s(remote.family(), ec);
      if (ec) continue;
      co_await detail::IoAwaiter<detail::ConnectOp>(s.native_handle(), detail::ConnectOp{remote.raw()}, d, &ec);
      if (!ec) co_return Connection(std::move(s));
      if (ec == std::errc::timed_out || ec == std::errc::operation_canceled) break;
    }
    std::string what = "connect " + host + ':' + std::to_string(port) + " (tried";
    for (const auto& a : addresses) what += ' ' + a.to_string();
    detail::throw_error(ec, detail::describe(what + ')', {}, ec, d.timeout()));
  }

  /// Ends one or both directions; Shutdown::send tells the peer "end of stream" (a half-close).
  void shutdown(Shutdown how = Shutdown::send) {
    std::error_code ec;
    shutdown(how, ec);
    if (ec) detail::throw_error(ec, "shutdown");
  }
  void shutdown(Shutdown how, std::error_code& ec) noexcept {
    ec = this->open_check();
    if (ec) return;
    const int native = how == Shutdown::receive ? detail::shut_receive
                       : how == Shutdown::send  ? detail::shut_send
                                                : detail::shut_both;
    ec = detail::shutdown_handle(native_handle(), native);
  }

 private:
  /// The message a call on this connection throws with: "read from PEER" ("read on LOCAL" once
  /// a reset made the peer's address unknown), and for a timeout "after N ms" (the call's
  /// timeout or the connection's, the shorter). Built only when throwing.
  [[nodiscard]] std::string where(std::string_view op, std::string_view to_from, std::error_code ec,
                                  const Deadline& d) const {
    return detail::describe(op, to_from, this->remote_endpoint_or_empty(), this->local_endpoint_or_empty(), ec,
                            detail::waited(d, timeout_));
  }

  [[nodiscard]] detail::Bound bound(const Deadline& d) const noexcept {
    detail::Bound b = detail::bound_of(d);
    if (timeout_) {
      const auto t = detail::time_after(*timeout_);
      if (t < b.deadline) b.deadline = t;
    }
    if (stop_.stop_possible()) b.also = &stop_;
    return b;
  }

  std::optional<std::chrono::steady_clock::duration> timeout_;
  std::stop_token stop_;
};

using TcpConnection = Connection<Tcp>;
using UnixConnection = Connection<Unix>;

}  // namespace sockpat

#endif  // SOCKPAT_CONNECTION_HPP

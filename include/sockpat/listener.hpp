// sockpat: Listener<P>, a bound and listening stream socket that accepts Connections.
#ifndef SOCKPAT_LISTENER_HPP
#define SOCKPAT_LISTENER_HPP

#include <optional>      // std::optional
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code
#include <utility>       // std::move, std::exchange

#include "sockpat/connection.hpp"

namespace sockpat {

struct ListenOptions {
  /// The kernel's queue of connections not yet accepted (clamped by the OS, e.g. somaxconn).
  int backlog = detail::default_backlog;
  /// SO_REUSEADDR, so a restarted server can bind its port while old connections linger.
  /// Not applied on Windows, where SO_REUSEADDR allows port stealing: listeners there take
  /// SO_EXCLUSIVEADDRUSE instead.
  bool reuse_address = true;
  /// SO_REUSEPORT before bind: this listener joins a port that listeners of the same user
  /// already share (one per thread), or shares a free one. It never fails for a port in use by
  /// such listeners, so the first listener of a program should claim_port instead. Windows has
  /// no SO_REUSEPORT: there bind fails with operation_not_supported.
  bool reuse_port = false;
  /// Binds without SO_REUSEPORT, so that a port in use fails (address_in_use) even when its
  /// holders share it, then sets SO_REUSEPORT once listening, so that the program's other
  /// listeners join with reuse_port. A second copy of the program then fails as it claims.
  /// Takes precedence over reuse_port. Windows: operation_not_supported, as reuse_port.
  bool claim_port = false;
  /// For an IPv6 listener: IPv6 only (true), also IPv4-mapped (false), or the OS default.
  std::optional<bool> v6_only = {};
};

/// A listening stream socket. accept() can be bounded by a timeout and stopped from another
/// thread through the Deadline's stop token.
namespace detail {
template <class P>
struct AcceptOp : AcceptHandleOp {
  Family family;
  [[nodiscard]] Connection<P> result() noexcept {
    if (accepted == invalid_handle) return {};
    return Connection<P>(Socket<P>(UniqueHandle(std::exchange(accepted, invalid_handle)), family));
  }
};
}  // namespace detail

template <StreamProtocol P>
class Listener : private Socket<P> {
  using Base = Socket<P>;

 public:
  using protocol_type = P;
  using Base::close;
  using Base::family;
  using Base::is_open;
  using Base::local_endpoint;
  using Base::native_handle;
  using Base::release;

  Listener() noexcept = default;

  /// Binds `local` (port 0 picks a free port: read it back with local_endpoint()) and listens.
  /// Throws std::system_error ("bind 127.0.0.1:80: Permission denied").
  [[nodiscard]] static Listener bind(const Endpoint& local, const ListenOptions& options = {}) {
    std::error_code ec;
    auto l = bind(local, options, ec);
    if (ec) detail::throw_error(ec, detail::describe("bind", local));
    return l;
  }
  [[nodiscard]] static Listener bind(const Endpoint& local, const ListenOptions& options,
                                     std::error_code& ec) noexcept {
    Listener l;
    static_cast<Base&>(l) = Base(local.family(), ec);
    if (ec) return {};
    const auto h = l.native_handle();
    if (!P::local) {
      ec = detail::set_listener_reuse(h, options.reuse_address);
      if (!ec && options.reuse_port && !options.claim_port) ec = detail::set_reuse_port(h);
      if (!ec && options.v6_only && local.is_v6()) {
        ec = detail::set_int_option(h, detail::option::v6_only, *options.v6_only ? 1 : 0);
      }
    }
    if (!ec) ec = detail::bind_handle(h, local.raw().data(), local.raw().size);
    if (!ec) ec = detail::listen_handle(h, options.backlog);
    // SO_REUSEPORT is checked against the sockets already bound when another one binds: set
    // now, it lets later listeners of the same user join the port this bind took alone.
    if (!ec && !P::local && options.claim_port) ec = detail::set_reuse_port(h);
    if (ec) return {};
    return l;
  }

  /// Resolves `host` and listens on the first address that binds ("localhost" works).
  [[nodiscard]] static Listener bind(std::string_view host, int port, const ListenOptions& options = {})
    requires InternetProtocol<P>
  {
    std::error_code ec;
    for (const auto& e : resolve(host, port)) {
      auto l = bind(e, options, ec);
      if (!ec) return l;
    }
    detail::throw_error(ec, "bind " + detail::host_port(host, port));
  }
  [[nodiscard]] static Listener bind(std::string_view host, int port, const ListenOptions& options,
                                     std::error_code& ec) noexcept
    requires InternetProtocol<P>
  {
    const auto addresses = resolve(host, port, ec);
    if (ec) return {};
    ec = detail::make_errc(std::errc::host_unreachable);  // when the name resolves to no address
    for (const auto& e : addresses) {
      auto l = bind(e, options, ec);
      if (!ec) return l;
    }
    return {};
  }

  /// Accepts one connection; blocks until one arrives, the deadline passes or stop is requested.
  /// Throws std::system_error (timed_out, operation_canceled, or the OS error such as
  /// too_many_files_open, after which the listener still works).
  [[nodiscard]] Connection<P> accept(Deadline d = {}) {
    std::error_code ec;
    auto c = accept(d, ec);
    if (ec) detail::throw_error(ec, detail::describe("accept on", this->local_endpoint_or_empty(), ec, d.timeout()));
    return c;
  }
  [[nodiscard]] Connection<P> accept(Deadline d, std::error_code& ec) noexcept {
    ec = this->open_check();
    if (ec) return {};
    detail::RawAddress peer;
    const auto h = detail::blocking_accept(native_handle(), peer, detail::bound_of(d), ec);
    if (ec) return {};
    return Connection<P>(Socket<P>(detail::UniqueHandle(h), family()));
  }

  /// Awaits one connection on the running loop. Throws std::system_error when awaited
  /// (timed_out, operation_canceled when the listener is closed or the stop token fires, or the
  /// OS error such as too_many_files_open, after which the listener still works).
  [[nodiscard]] detail::IoAwaiter<detail::AcceptOp<P>> async_accept(Deadline d = {}) noexcept {
    return {native_handle(), detail::AcceptOp<P>{{}, family()}, d, nullptr};
  }
  [[nodiscard]] detail::IoAwaiter<detail::AcceptOp<P>> async_accept(Deadline d, std::error_code& ec) noexcept {
    return {native_handle(), detail::AcceptOp<P>{{}, family()}, d, &ec};
  }
};

using TcpListener = Listener<Tcp>;
using UnixListener = Listener<Unix>;

}  // namespace sockpat

#endif  // SOCKPAT_LISTENER_HPP

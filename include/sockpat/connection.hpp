// sockpat: Connection<P>, a connected byte stream (TCP or Unix-domain).
#ifndef SOCKPAT_CONNECTION_HPP
#define SOCKPAT_CONNECTION_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock
#include <cstddef>       // std::byte, std::size_t
#include <memory>        // std::unique_ptr: the stop callback of kernel waits
#include <optional>      // std::optional
#include <span>          // std::span
#include <stop_token>    // std::stop_token, std::stop_callback
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code
#include <type_traits>   // std::void_t
#include <utility>       // std::pair, std::move
#include <vector>        // std::vector

#include "sockpat/detail/happy_eyeballs.hpp"  // interleave, wait_any_connected, describe_attempts
#include "sockpat/resolver.hpp"                // resolve within the deadline, Resolver
#include "sockpat/socket.hpp"

namespace sockpat {

/// Which direction(s) shutdown() ends.
enum class Shutdown { receive, send, both };

namespace detail {
// RFC 8305's recommended Connection Attempt Delay. A constant copied into ConnectOptions, not
// duration{250} there: duration's converting constructor is not noexcept, its copy is.
inline constexpr std::chrono::milliseconds connection_attempt_delay{250};
}  // namespace detail

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
  /// Bounds the whole connect: the resolution and every address tried. A Deadline made from a
  /// duration is a time point fixed when it is made (`o.deadline = 5s` ends 5 s after that
  /// line): options kept for later connects take `timeout` instead.
  Deadline deadline = {};
  /// Bounds each connect made with these options, counted from when it starts; with `deadline`
  /// too, the earlier end wins.
  std::optional<std::chrono::steady_clock::duration> timeout = {};
  /// Happy Eyeballs (RFC 8305) over several addresses: how long an attempt runs alone before the
  /// next address is tried beside it (a failed attempt starts the next at once); zero tries one
  /// address at a time.
  std::chrono::milliseconds attempt_delay = detail::connection_attempt_delay;
  /// The family tried first when a name resolves to both; unspecified: the first address's.
  Family prefer = Family::unspecified;
  /// Resolves a host name on a helper thread, within `deadline`; empty: default_resolver().
  Resolver resolver = {};

  [[nodiscard]] static ConnectOptions with_deadline(Deadline d) noexcept {
    ConnectOptions o;
    o.deadline = std::move(d);
    return o;
  }

  /// The bound of a connect starting now: `deadline`, capped by `timeout` counted from now.
  [[nodiscard]] Deadline bound() const noexcept {
    if (!timeout) return deadline;
    Deadline from_now(*timeout, deadline.stop_token());
    return deadline.has_time() && deadline.time() < from_now.time() ? deadline : from_now;
  }
};

template <StreamProtocol P>
class Connection;

// async_connect returns a Task, defined in task.hpp: a program that awaits one runs a loop and so
// includes event_loop.hpp, which brings it; a program that only blocks does not compile it.
template <class T>
class Task;

namespace detail {
/// Connect by name with the list of addresses tried, for callers that build their own message
/// (connect_with_retry).
template <StreamProtocol P>
struct NamedConnect {
  static Connection<P> run(std::string_view host, int port, const ConnectOptions& options,
                           std::vector<AttemptError>& tried, std::error_code& ec) noexcept;
};

/// The awaited connect by name (resolution, then the Happy Eyeballs race as tasks). Defined in
/// detail/async_connect.hpp, which event_loop.hpp includes: a call to
/// Connection::async_connect(host, port) that fails here needs #include <sockpat/event_loop.hpp>.
template <StreamProtocol P>
struct AsyncConnect;

// Only for async_connect's static_assert, checked once per protocol (a completeness trait
// remembers its first answer).
template <class T, class = void>
inline constexpr bool is_defined = false;
template <class T>
inline constexpr bool is_defined<T, std::void_t<decltype(sizeof(T))>> = true;
}  // namespace detail

namespace detail {
/// The cancel of a connection whose reads wait in the kernel: the stop token's callback shuts the
/// socket down, which ends a recv sleeping on it. A base of Connection placed before its socket,
/// so a move-assignment disarms the old callback before the old descriptor closes (a callback
/// left armed could shut down whatever socket reuses the number).
class KernelWaitStop {
 public:
  void arm(const std::stop_token& stop, native_handle h) {
    cb_.reset();
    if (stop.stop_possible()) cb_ = std::make_unique<std::stop_callback<Shut>>(stop, Shut{h});
  }
  void disarm() noexcept { cb_.reset(); }

 private:
  struct Shut {
    native_handle h;
    void operator()() const noexcept { (void)shutdown_handle(h, shut_both); }
  };
  std::unique_ptr<std::stop_callback<Shut>> cb_;
};
}  // namespace detail

/// A connected stream socket. read_some returning 0 means the peer closed its side.
/// Moves, never copies; one thread may read while another writes; Deadline bounds every call.
template <StreamProtocol P>
class Connection : private detail::KernelWaitStop, private Socket<P> {
  using Base = Socket<P>;

 public:
  using protocol_type = P;
  using Base::family;
  using Base::is_open;
  using Base::local_endpoint;
  using Base::native_handle;
  using Base::receive_buffer_size;
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
  Connection(Connection&&) noexcept = default;
  Connection& operator=(Connection&&) noexcept = default;
  ~Connection() { this->disarm(); }  // the kernel-wait stop callback goes before the descriptor closes

  /// Closes the socket. Throws std::system_error if the OS reports an error; the twin does not.
  void close() {
    this->disarm();
    Base::close();
  }
  void close(std::error_code& ec) noexcept {
    this->disarm();
    Base::close(ec);
  }
  /// Gives up ownership of the descriptor (non-blocking again if kernel waits had made it blocking).
  [[nodiscard]] native_handle_type release() noexcept {
    if (kernel_wait_) leave_kernel_wait();
    return Base::release();
  }

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
    if (ec) detail::throw_error(ec, detail::describe("connect", remote, ec, detail::waited(options.deadline, options.timeout)));
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
    ec = detail::blocking_connect(s.native_handle(), remote.raw(), detail::bound_of(options.bound()));
    if (ec) return {};
    return Connection(std::move(s));
  }

  /// Resolves `host` (on a helper thread, within the deadline) and races its addresses by Happy
  /// Eyeballs (ConnectOptions::attempt_delay): the first to connect wins, the others are closed.
  /// Throws std::invalid_argument for a bad port or an empty host; std::system_error for a
  /// resolution that fails or times out ("resolve \"host\""), and when every address fails,
  /// one naming each with its own error ("connect host:80 (tried [::1]:80: Connection refused;
  /// 127.0.0.1:80: Connection timed out)"), whose code is the last error met.
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
    const Deadline d = options.bound();
    const auto order = detail::interleave(resolve(host, port, d, options.resolver), options.prefer);
    std::vector<detail::AttemptError> tried;
    std::error_code ec;
    auto c = race(order, options, d, tried, ec);
    if (ec) detail::throw_error(ec, detail::describe_attempts("connect", host, port, tried));
    return c;
  }
  [[nodiscard]] static Connection connect(std::string_view host, int port, const ConnectOptions& options,
                                          std::error_code& ec) noexcept
    requires InternetProtocol<P>
  {
    std::vector<detail::AttemptError> tried;
    return detail::NamedConnect<P>::run(host, port, options, tried, ec);
  }

  /// Races the endpoints, in the order given, by Happy Eyeballs (ConnectOptions::attempt_delay);
  /// endpoints of another family than `options.local` are skipped. The error is the last one met
  /// (timed_out once the deadline passed; host_unreachable when there was nothing to try).
  [[nodiscard]] static Connection connect_any(std::span<const Endpoint> endpoints, const ConnectOptions& options,
                                              std::error_code& ec) noexcept {
    try {
      std::vector<detail::AttemptError> tried;
      return race(endpoints, options, options.bound(), tried, ec);
    } catch (const std::bad_alloc&) {
      ec = detail::make_errc(std::errc::not_enough_memory);
      return {};
    }
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
  void set_timeout(std::optional<std::chrono::steady_clock::duration> timeout) noexcept {
    timeout_ = timeout;
    if (kernel_wait_ && detail::set_receive_timeout(native_handle(), receive_timeout())) leave_kernel_wait();
  }
  [[nodiscard]] std::optional<std::chrono::steady_clock::duration> timeout() const noexcept { return timeout_; }

  /// Once `stop` is requested, pending and later blocking calls end with operation_canceled,
  /// whatever Deadline they were given: how another thread (a Server) cancels a handler's I/O
  /// without touching the descriptor. Set it before sharing the connection with other threads.
  void set_stop_token(std::stop_token stop) noexcept {
    stop_ = std::move(stop);
    if (!kernel_wait_) return;
    try {
      this->arm(stop_, native_handle());
    } catch (...) {  // no memory for the callback: back to waiting in poll(), which needs none
      leave_kernel_wait();
    }
  }
  [[nodiscard]] const std::stop_token& stop_token() const noexcept { return stop_; }

  /// Lets read_some and read_exactly calls without a Deadline of their own sleep in recv itself,
  /// as a blocking socket does, instead of trying recv, polling and trying again: a third of the
  /// system calls for a thread per connection (Server turns it on for its clients). The
  /// connection's timeout becomes SO_RCVTIMEO, and its stop token now shuts the socket down: a
  /// canceled connection cannot be used again. Writes and calls with their own Deadline still
  /// wait in poll(); awaited calls never block. Where the platform cannot (Windows) this does
  /// nothing. Throws std::system_error if the socket refuses; the twin reports it and leaves the
  /// connection as it was.
  void set_kernel_wait(bool on) {
    std::error_code ec;
    set_kernel_wait(on, ec);
    if (ec) detail::throw_error(ec, "set_kernel_wait");
  }
  void set_kernel_wait(bool on, std::error_code& ec) noexcept {
    ec = this->open_check();
    if (ec || !detail::kernel_wait_supported || on == kernel_wait_) return;
    if (!on) {
      leave_kernel_wait();
      return;
    }
    const auto h = native_handle();
    ec = detail::set_receive_timeout(h, receive_timeout());
    if (!ec) ec = detail::set_blocking(h, true);
    if (ec) return;
    try {
      this->arm(stop_, h);
    } catch (...) {
      (void)detail::set_blocking(h, false);
      ec = std::make_error_code(std::errc::not_enough_memory);
      return;
    }
    kernel_wait_ = true;
  }
  [[nodiscard]] bool kernel_wait() const noexcept { return kernel_wait_; }

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
    if (kernel_wait_ && !d.has_time() && !d.stop_token().stop_possible()) return recv_in_kernel(buffer, ec);
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
    std::size_t first = 0;
    // A kernel wait for the first bytes only: SO_RCVTIMEO bounds one recv, and the rest must
    // arrive within what is left of the timeout, as without kernel waits (a dribbling peer).
    const auto b = bound(d);
    if (kernel_wait_ && !d.has_time() && !d.stop_token().stop_possible() && !buffer.empty()) {
      first = recv_in_kernel(buffer, ec);
      if (ec) return 0;
      if (first == 0) {
        ec = make_error_code(errc::end_of_stream);
        return 0;
      }
    }
    const auto n = first + detail::blocking_recv_all(native_handle(), buffer.data() + first, buffer.size() - first, b,
                                                     ec, eof);
    if (eof) ec = make_error_code(errc::end_of_stream);
    if (ec && kernel_wait_ && stop_.stop_requested()) ec = detail::make_errc(std::errc::operation_canceled);
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
    const auto n = detail::blocking_send(native_handle(), data.data(), data.size(), bound(d), ec);
    if (ec && kernel_wait_ && stop_.stop_requested()) ec = detail::make_errc(std::errc::operation_canceled);
    return n;
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
    const auto n = detail::blocking_send_all(native_handle(), data.data(), data.size(), bound(d), ec);
    // A kernel-wait cancel shut the socket down: the write sees a broken pipe, which is the cancel.
    if (ec && kernel_wait_ && stop_.stop_requested()) ec = detail::make_errc(std::errc::operation_canceled);
    return n;
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

  /// Resolves `host` on a helper thread (the loop runs on meanwhile) and races its addresses by
  /// Happy Eyeballs, all within the deadline: as the blocking connect by name, awaited. Errors
  /// are std::system_error (a bad port or an empty host as invalid_argument).
  static Task<Connection> async_connect(std::string host, int port, Deadline d = {})
    requires InternetProtocol<P>
  {
    co_return co_await async_connect(std::move(host), port, ConnectOptions::with_deadline(std::move(d)));
  }
  static Task<Connection> async_connect(std::string host, int port, ConnectOptions options)
    requires InternetProtocol<P>
  {
    static_assert(detail::is_defined<detail::AsyncConnect<P>>,
                  "Connection::async_connect(host, port) runs on a loop: #include <sockpat/event_loop.hpp>");
    return detail::AsyncConnect<P>::run(std::move(host), port, std::move(options));
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
  /// The message a call on this connection throws with: "read from PEER" (also after a reset;
  /// "read on LOCAL" where the OS then forgets the peer), and for a timeout "after N ms" (the
  /// call's timeout or the connection's, the shorter). Built only when throwing.
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

  // One recv sleeping in the kernel (set_kernel_wait): SO_RCVTIMEO ends it with would_block, and
  // the stop token's shutdown with an end of stream that is really the cancel.
  std::size_t recv_in_kernel(std::span<std::byte> buffer, std::error_code& ec) noexcept {
    if (stop_.stop_requested()) {
      ec = detail::make_errc(std::errc::operation_canceled);
      return 0;
    }
    const auto n = detail::recv_waiting(native_handle(), buffer.data(), buffer.size(), ec);
    if ((ec || n == 0) && stop_.stop_requested()) {
      ec = detail::make_errc(std::errc::operation_canceled);
      return 0;
    }
    if (ec && detail::would_block(ec)) ec = detail::make_errc(std::errc::timed_out);
    return n;
  }

  [[nodiscard]] std::chrono::microseconds receive_timeout() const noexcept {
    if (!timeout_) return std::chrono::microseconds::zero();
    const auto t = std::chrono::ceil<std::chrono::microseconds>(*timeout_);
    return t.count() > 0 ? t : std::chrono::microseconds(1);  // SO_RCVTIMEO's 0 would mean forever
  }

  void leave_kernel_wait() noexcept {
    this->disarm();
    if (is_open()) (void)detail::set_blocking(native_handle(), false);
    kernel_wait_ = false;
  }

  std::optional<std::chrono::steady_clock::duration> timeout_;
  std::stop_token stop_;
  bool kernel_wait_ = false;

  friend struct detail::NamedConnect<P>;
  friend struct detail::AsyncConnect<P>;

  // --- Happy Eyeballs (RFC 8305 section 5): one attempt per address, a new one every
  // attempt_delay while the earlier ones are pending, the next at once when one fails; the
  // first to connect wins and the others are closed (their sockets go with the race's state).

  /// A socket for `remote`, bound to `o.local` when set.
  static Socket<P> open_for(const Endpoint& remote, const ConnectOptions& o, std::error_code& ec) noexcept {
    Socket<P> s(remote.family(), ec);
    if (ec || o.local.empty()) return s;
    if (o.reuse_address) ec = detail::set_int_option(s.native_handle(), detail::option::reuse_address, 1);
    if (!ec && o.reuse_port) ec = detail::set_reuse_port(s.native_handle());
    if (!ec) s.bind(o.local, ec);
    return s;
  }

  static bool skipped(const Endpoint& e, const ConnectOptions& o) noexcept {
    return !o.local.empty() && o.local.family() != e.family();
  }

  /// The blocking race: the pending connects wait together in one poll.
  static Connection race(std::span<const Endpoint> order, const ConnectOptions& o, const Deadline& d,
                         std::vector<detail::AttemptError>& tried, std::error_code& ec) {
    struct Attempt {
      Socket<P> socket;
      Endpoint remote;
    };
    std::vector<Attempt> live;
    std::vector<detail::native_handle> handles;
    const auto deadline = d.time();
    const auto& stop = d.stop_token();
    const auto end = [&](std::errc why) {
      for (const auto& a : live) tried.push_back({a.remote, detail::make_errc(why)});
      ec = detail::make_errc(why);
      return Connection();
    };
    std::size_t next = 0;
    auto next_start = std::chrono::steady_clock::now();
    for (;;) {
      const auto now = std::chrono::steady_clock::now();
      if (stop.stop_requested()) return end(std::errc::operation_canceled);
      if (now >= deadline) return end(std::errc::timed_out);
      if (next < order.size() && (live.empty() || (o.attempt_delay.count() > 0 && now >= next_start))) {
        const Endpoint& remote = order[next++];
        if (skipped(remote, o)) continue;
        std::error_code aec;
        auto s = open_for(remote, o, aec);
        if (!aec) aec = detail::connect_handle(s.native_handle(), remote.raw().data(), remote.raw().size);
        if (!aec) {
          ec.clear();
          return Connection(std::move(s));  // connected at once (loopback may)
        }
        if (aec == std::errc::operation_in_progress || detail::would_block(aec)) {
          live.push_back({std::move(s), remote});
          next_start = now + o.attempt_delay;
        } else {
          tried.push_back({remote, aec});
        }
        continue;
      }
      if (live.empty()) {
        ec = tried.empty() ? detail::make_errc(std::errc::host_unreachable) : tried.back().error;
        return {};
      }
      const bool more = next < order.size() && o.attempt_delay.count() > 0;
      const auto until = more && next_start < deadline ? next_start : deadline;
      handles.clear();
      for (const auto& a : live) handles.push_back(a.socket.native_handle());
      std::size_t ready = 0;
      const auto wec = detail::wait_any_connected(handles, until, stop, ready);
      if (wec == std::errc::timed_out || wec == std::errc::operation_canceled) continue;  // seen above
      if (wec) {
        ec = wec;
        return {};
      }
      if (const auto failed = detail::pending_error(handles[ready])) {
        tried.push_back({live[ready].remote, failed});
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(ready));
        continue;
      }
      ec.clear();
      return Connection(std::move(live[ready].socket));
    }
  }
};

template <StreamProtocol P>
Connection<P> detail::NamedConnect<P>::run(std::string_view host, int port, const ConnectOptions& options,
                                           std::vector<AttemptError>& tried, std::error_code& ec) noexcept {
  const Deadline d = options.bound();
  const auto addresses = resolve(host, port, d, ec, options.resolver);
  if (ec) return {};
  try {
    return Connection<P>::race(interleave(addresses, options.prefer), options, d, tried, ec);
  } catch (const std::bad_alloc&) {
    ec = make_errc(std::errc::not_enough_memory);
    return {};
  }
}

using TcpConnection = Connection<Tcp>;
using UnixConnection = Connection<Unix>;

}  // namespace sockpat

#endif  // SOCKPAT_CONNECTION_HPP

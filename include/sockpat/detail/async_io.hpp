// sockpat: the one awaiter behind every async_ member: try the system call first, and only when
// it would block, wait on the running event loop (bounded by a Deadline), then try again.
#ifndef SOCKPAT_DETAIL_ASYNC_IO_HPP
#define SOCKPAT_DETAIL_ASYNC_IO_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock
#include <coroutine>     // std::coroutine_handle
#include <cstddef>       // std::byte, std::size_t
#include <string>        // std::string: error messages
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code, std::system_error
#include <utility>       // std::move

#include "sockpat/deadline.hpp"
#include "sockpat/detail/address.hpp"
#include "sockpat/detail/blocking.hpp"
#include "sockpat/detail/reactor.hpp"
#include "sockpat/detail/waiter.hpp"  // Waiter: IoAwaiter
#include "sockpat/endpoint.hpp"
#include "sockpat/error.hpp"

namespace sockpat::detail {

/// An awaited call's error message, built only when it throws: "async_read_some from PEER", or
/// "async_accept on LOCAL" (no `to_from`, or no peer address: after a reset, on an unconnected
/// datagram socket).
inline std::string describe_io(std::string_view op, native_handle h, std::string_view to_from = {}) {
  std::string s(op);
  RawAddress a;
  a.size = sizeof a.storage;
  if (!to_from.empty() && !last_peer_address(h, a.data(), &a.size)) {
    const std::string name = Endpoint::from_native(a.data(), a.size).to_string();
    if (!name.empty()) return s.append(1, ' ').append(to_from).append(1, ' ').append(name);
  }
  a.size = sizeof a.storage;
  if (!local_address(h, a.data(), &a.size)) {
    const std::string name = Endpoint::from_native(a.data(), a.size).to_string();
    if (!name.empty()) return s.append(" on ").append(name);
  }
  return s;
}
/// The same, and for a timeout how long the call waited: "async_read_some from PEER after 50 ms".
inline std::string describe_io(std::string_view op, native_handle h, std::string_view to_from, std::error_code ec,
                               std::chrono::steady_clock::duration waited) {
  std::string s = describe_io(op, h, to_from);
  return append_waited(s, ec, waited);
}

/// The deadline part of an awaiter made from a Deadline.
inline DeadlinePart part_of(const Deadline& d) noexcept { return {d.time(), d.stop_token(), d.timeout()}; }

/// Awaits one operation `Op` on descriptor `h`. Op provides `direction`, `perform(h, ec)`
/// (true once finished, successfully or not; false when it would block), `result()` and
/// `raise(ec, h, waited)` (or `raise(ec, waited)`; `waited` is the deadline's timeout, zero for a
/// time point, for the message). With an error_code* the error is stored there instead of thrown.
/// It lives in the awaiting coroutine's frame: no allocation per operation.
template <class Op>
class [[nodiscard]] IoAwaiter final : private Waiter {
 public:
  IoAwaiter(native_handle h, Op op, const Deadline& d, std::error_code* out) noexcept
      : op_(std::move(op)), fd_(h), bound_(part_of(d)), out_(out) {}
  IoAwaiter(const IoAwaiter&) = delete;
  IoAwaiter& operator=(const IoAwaiter&) = delete;
  ~IoAwaiter() = default;
  using Waiter::cancel_before_start;

  bool await_ready() {
    if (begin()) return true;  // the loop is closing: operation_canceled
    if (fd_ == invalid_handle) {
      set_error(make_error_code(errc::not_connected));
      return true;
    }
    if (bound_.stop_requested()) {
      set_error(canceled());
      return true;
    }
    // A direction found drained and not reported ready since would only say EAGAIN: wait first.
    if (!reactor().maybe_ready(fd_, Op::direction)) return false;
    if (!perform()) return false;  // would block: wait
    if (reactor().spend_inline()) return true;  // the fast path: no suspension when the kernel is ready
    yield_ = true;  // done, but its coroutine has run long enough: let the others run first
    return false;
  }

  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
    if (yield_) {  // finished already: only a turn in the ready queue, even if cancelled since
      attach(h);
      complete();
      return true;
    }
    if (!arm(h)) return false;
    if (bound_.passed()) {
      (void)finish(make_errc(std::errc::timed_out));
      return false;
    }
    if (auto ec = reactor().wait_io(fd_, Op::direction, this)) {
      (void)finish(ec);
      return false;
    }
    bound_.watch(*this, reactor());
    return true;
  }

  decltype(auto) await_resume() {
    bound_.release();
    if (out_ != nullptr) {
      *out_ = error();
    } else if (error()) {
      if constexpr (requires { op_.raise(error(), fd_, bound_.timeout()); }) {
        op_.raise(error(), fd_, bound_.timeout());
      } else {
        op_.raise(error(), bound_.timeout());
      }
    }
    return op_.result();
  }

 private:
  bool perform() noexcept {
    std::error_code& ec = error_slot();
    if (!op_.perform(fd_, ec)) return false;
    if constexpr (requires { op_.drained(); }) {
      if (!ec && op_.drained()) reactor().drained(fd_, Op::direction);
    }
    return true;
  }
  void on_ready() noexcept override {
    if (!perform()) return;
    IoAwaiter::unlink();  // not through the vtable: this is the hot path
    complete();
  }
  void on_timer() noexcept override {
    unlink();
    complete(make_errc(std::errc::timed_out));
  }
  void unlink() noexcept override {
    reactor().unwait_io(fd_, Op::direction, this);
    DeadlinePart::unwatch(*this, reactor());
  }

  Op op_;
  native_handle fd_;
  DeadlinePart bound_;
  std::error_code* out_;
  bool yield_ = false;
};

// --- the operations ---

struct RecvSomeOp {
  static constexpr Direction direction = Direction::read;
  std::byte* data;
  std::size_t size;
  std::size_t done = 0;
  bool perform(native_handle h, std::error_code& ec) noexcept {
    ec.clear();
    done = recv_some(h, data, size, 0, ec);
    return !would_block(ec);
  }
  /// A short read emptied the socket (0, end of stream, does not count: it stays readable).
  [[nodiscard]] bool drained() const noexcept { return done > 0 && done < size; }
  [[nodiscard]] std::size_t result() const noexcept { return done; }
  [[noreturn]] static void raise(std::error_code ec, native_handle h, std::chrono::steady_clock::duration waited) {
    throw std::system_error(ec, describe_io("async_read_some", h, "from", ec, waited));
  }
};

struct RecvExactlyOp {
  static constexpr Direction direction = Direction::read;
  std::byte* data;
  std::size_t size;
  std::size_t done = 0;
  bool perform(native_handle h, std::error_code& ec) noexcept {
    ec.clear();
    while (done < size) {
      const auto n = recv_some(h, data + done, size - done, 0, ec);
      if (ec) return !would_block(ec);
      if (n == 0) {
        ec = make_error_code(errc::end_of_stream);
        return true;
      }
      done += n;
    }
    return true;
  }
  [[nodiscard]] std::size_t result() const noexcept { return done; }
  [[noreturn]] void raise(std::error_code ec, native_handle h, std::chrono::steady_clock::duration waited) const {
    throw TransferError(ec, describe_io("async_read_exactly", h, "from", ec, waited), done);
  }
};

struct SendSomeOp {
  static constexpr Direction direction = Direction::write;
  const std::byte* data;
  std::size_t size;
  std::size_t done = 0;
  bool perform(native_handle h, std::error_code& ec) noexcept {
    ec.clear();
    done = send_some(h, data, size, ec);
    return !would_block(ec);
  }
  /// A short write filled the socket's buffer.
  [[nodiscard]] bool drained() const noexcept { return done < size; }
  [[nodiscard]] std::size_t result() const noexcept { return done; }
  [[noreturn]] static void raise(std::error_code ec, native_handle h, std::chrono::steady_clock::duration waited) {
    throw std::system_error(ec, describe_io("async_write_some", h, "to", ec, waited));
  }
};

struct SendAllOp {
  static constexpr Direction direction = Direction::write;
  const std::byte* data;
  std::size_t size;
  std::size_t done = 0;
  bool perform(native_handle h, std::error_code& ec) noexcept {
    ec.clear();
    while (done < size) {
      const auto n = send_some(h, data + done, size - done, ec);
      if (ec) return !would_block(ec);
      done += n;
    }
    return true;
  }
  [[nodiscard]] std::size_t result() const noexcept { return done; }
  [[noreturn]] void raise(std::error_code ec, native_handle h, std::chrono::steady_clock::duration waited) const {
    throw TransferError(ec, describe_io("async_write_all", h, "to", ec, waited), done);
  }
};

/// connect() is started by the first perform; the socket turning writable ends it.
struct ConnectOp {
  static constexpr Direction direction = Direction::write;
  RawAddress to;
  bool started = false;
  bool perform(native_handle h, std::error_code& ec) noexcept {
    if (started) {
      ec = pending_error(h);
      return true;
    }
    started = true;
    ec = connect_handle(h, to.data(), to.size);
    return !(ec == std::errc::operation_in_progress || would_block(ec));
  }
  static void result() noexcept {}
  [[noreturn]] void raise(std::error_code ec, std::chrono::steady_clock::duration waited) const {
    std::string s = "async_connect " + Endpoint::from_native(to.data(), to.size).to_string();
    throw std::system_error(ec, append_waited(s, ec, waited));
  }
};

struct AcceptHandleOp {
  static constexpr Direction direction = Direction::read;
  native_handle accepted = invalid_handle;
  bool perform(native_handle h, std::error_code& ec) noexcept {
    for (;;) {
      ec.clear();
      RawAddress peer;
      peer.size = sizeof peer.storage;
      accepted = accept_handle(h, peer.data(), &peer.size, ec);
      if (!ec) return true;
      if (!transient_accept_error(ec)) return !would_block(ec);
    }
  }
  [[noreturn]] static void raise(std::error_code ec, native_handle h, std::chrono::steady_clock::duration waited) {
    throw std::system_error(ec, describe_io("async_accept", h, {}, ec, waited));
  }
};

struct RecvFromOp {
  static constexpr Direction direction = Direction::read;
  std::byte* data;
  std::size_t size;
  Endpoint* from;
  RawAddress addr{};
  std::size_t done = 0;
  bool perform(native_handle h, std::error_code& ec) noexcept {
    ec.clear();
    addr.size = sizeof addr.storage;
    done = recv_from(h, data, size, addr.data(), &addr.size, ec);
    if (ec) return !would_block(ec);
    if (done > size) {  // Linux's MSG_TRUNC told the real length: report, do not truncate silently
      done = size;
      ec = make_errc(std::errc::message_size);
    }
    return true;
  }
  [[nodiscard]] std::size_t result() const {
    if (from != nullptr && addr.size != 0) *from = Endpoint::from_native(addr.data(), addr.size);
    return done;
  }
  [[noreturn]] static void raise(std::error_code ec, native_handle h, std::chrono::steady_clock::duration waited) {
    throw std::system_error(ec, describe_io("async_receive_from", h, {}, ec, waited));
  }
};

struct SendToOp {
  static constexpr Direction direction = Direction::write;
  const std::byte* data;
  std::size_t size;
  RawAddress to;
  std::size_t done = 0;
  bool perform(native_handle h, std::error_code& ec) noexcept {
    ec.clear();
    done = send_to(h, data, size, to.data(), to.size, ec);
    return !would_block(ec);
  }
  [[nodiscard]] std::size_t result() const noexcept { return done; }
  [[noreturn]] void raise(std::error_code ec, native_handle h, std::chrono::steady_clock::duration waited) const {
    std::string s = describe_io("async_send_to", h) + " to " + Endpoint::from_native(to.data(), to.size).to_string();
    throw std::system_error(ec, append_waited(s, ec, waited));
  }
};

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_ASYNC_IO_HPP

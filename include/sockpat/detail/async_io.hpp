// sockpat: the one awaiter behind every async_ member: try the system call first, and only when
// it would block, wait on the running event loop (bounded by a Deadline), then try again.
#ifndef SOCKPAT_DETAIL_ASYNC_IO_HPP
#define SOCKPAT_DETAIL_ASYNC_IO_HPP

#include <chrono>        // std::chrono::steady_clock
#include <coroutine>     // std::coroutine_handle
#include <cstddef>       // std::byte, std::size_t
#include <optional>      // std::optional
#include <stop_token>    // std::stop_token, std::stop_callback
#include <system_error>  // std::error_code, std::system_error
#include <utility>       // std::move

#include "sockpat/deadline.hpp"
#include "sockpat/detail/address.hpp"
#include "sockpat/detail/blocking.hpp"
#include "sockpat/detail/reactor.hpp"
#include "sockpat/endpoint.hpp"
#include "sockpat/error.hpp"

namespace sockpat::detail {

struct NotifyStop {
  Reactor* reactor;
  void operator()() const noexcept { reactor->notify_stop(); }
};

/// Awaits one operation `Op` on descriptor `h`. Op provides `direction`, `perform(h, ec)`
/// (true once finished, successfully or not; false when it would block), `result()` and
/// `raise(ec)`. With an error_code* the error is stored there instead of thrown.
/// It lives in the awaiting coroutine's frame: no allocation per operation.
template <class Op>
class [[nodiscard]] IoAwaiter final : private Pending {
 public:
  IoAwaiter(native_handle h, Op op, const Deadline& d, std::error_code* out) noexcept
      : op_(std::move(op)), fd_(h), at_(d.time()), stop_(d.stop_token()), out_(out) {}
  IoAwaiter(const IoAwaiter&) = delete;
  IoAwaiter& operator=(const IoAwaiter&) = delete;
  ~IoAwaiter() = default;

  bool await_ready() {
    reactor_ = &current_reactor();
    if (fd_ == invalid_handle) {
      ec_ = make_error_code(errc::not_connected);
      return true;
    }
    if (reactor_->closing() || stop_.stop_requested()) {
      ec_ = make_errc(std::errc::operation_canceled);
      return true;
    }
    // A direction found drained and not reported ready since would only say EAGAIN: wait first.
    if (!reactor_->maybe_ready(fd_, Op::direction)) return false;
    if (!perform()) return false;  // would block: wait
    if (reactor_->spend_inline()) return true;  // the fast path: no suspension when the kernel is ready
    yield_ = true;  // done, but its coroutine has run long enough: let the others run first
    return false;
  }

  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
    if (yield_) {  // finished already: only a turn in the ready queue, whatever else happens
      reactor_->schedule(h);
      return true;
    }
    scope_ = scope_of(h);
    if (scope_ != nullptr && scope_->cancelled()) {
      ec_ = make_errc(std::errc::operation_canceled);
      return false;
    }
    if (at_ != no_deadline && std::chrono::steady_clock::now() >= at_) {
      ec_ = make_errc(std::errc::timed_out);
      return false;
    }
    if (auto ec = reactor_->wait_io(fd_, Op::direction, this)) {
      ec_ = ec;
      return false;
    }
    handle_ = h;
    if (at_ != no_deadline) {
      when = at_;
      reactor_->add_timer(this);
    }
    if (stop_.stop_possible()) {
      stop = &stop_;
      reactor_->add_stoppable(this);
      on_stop_.emplace(stop_, NotifyStop{reactor_});
    }
    if (scope_ != nullptr) scope_->leaf = this;
    return true;
  }

  decltype(auto) await_resume() {
    on_stop_.reset();
    if (out_ != nullptr) {
      *out_ = ec_;
    } else if (ec_) {
      op_.raise(ec_);
    }
    return op_.result();
  }

 private:
  bool perform() noexcept {
    if (!op_.perform(fd_, ec_)) return false;
    if constexpr (requires { op_.drained(); }) {
      if (!ec_ && op_.drained()) reactor_->drained(fd_, Op::direction);
    }
    return true;
  }
  void on_ready() noexcept override {
    if (perform()) complete();
  }
  void on_timer() noexcept override {
    ec_ = make_errc(std::errc::timed_out);
    complete();
  }
  void cancel(std::error_code why) noexcept override {
    ec_ = why;
    complete();
  }
  void complete() noexcept {
    reactor_->unwait_io(fd_, Op::direction, this);
    if (heap_index != not_in_heap) reactor_->remove_timer(this);
    if (stop != nullptr) {
      reactor_->remove_stoppable(this);
      stop = nullptr;
    }
    if (scope_ != nullptr) scope_->leaf = nullptr;
    reactor_->schedule(handle_);
  }

  Op op_;
  native_handle fd_;
  steady_time at_;
  std::stop_token stop_;
  std::error_code* out_;
  std::error_code ec_;
  Reactor* reactor_ = nullptr;
  CancelScope* scope_ = nullptr;
  std::coroutine_handle<> handle_;
  std::optional<std::stop_callback<NotifyStop>> on_stop_;
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
  [[noreturn]] static void raise(std::error_code ec) { throw std::system_error(ec, "async_read_some"); }
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
  [[noreturn]] void raise(std::error_code ec) const { throw TransferError(ec, "async_read_exactly", done); }
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
  [[noreturn]] static void raise(std::error_code ec) { throw std::system_error(ec, "async_write_some"); }
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
  [[noreturn]] void raise(std::error_code ec) const { throw TransferError(ec, "async_write_all", done); }
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
  [[noreturn]] static void raise(std::error_code ec) { throw std::system_error(ec, "async_connect"); }
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
  [[noreturn]] static void raise(std::error_code ec) { throw std::system_error(ec, "async_accept"); }
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
  [[noreturn]] static void raise(std::error_code ec) { throw std::system_error(ec, "async_receive_from"); }
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
  [[noreturn]] static void raise(std::error_code ec) { throw std::system_error(ec, "async_send_to"); }
};

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_ASYNC_IO_HPP

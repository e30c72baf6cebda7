// sockpat: the blocking operations, written once over non-blocking sockets: try the call,
// and when it would block, wait in poll() bounded by a deadline and a stop token.
#ifndef SOCKPAT_DETAIL_BLOCKING_HPP
#define SOCKPAT_DETAIL_BLOCKING_HPP

#include <cstddef>       // std::size_t, std::byte
#include <stop_token>    // std::stop_token
#include <system_error>  // std::error_code

#include "sockpat/detail/address.hpp"
#include "sockpat/detail/wait.hpp"

namespace sockpat::detail {

struct Bound {
  steady_time deadline = no_deadline;
  const std::stop_token* stop = nullptr;
  /// The object's own cancel token (Connection::set_stop_token), watched as well as `stop`.
  const std::stop_token* also = nullptr;
};

inline std::error_code canceled_if_stopped(const Bound& b) noexcept {
  if ((b.stop != nullptr && b.stop->stop_requested()) || (b.also != nullptr && b.also->stop_requested())) {
    return make_errc(std::errc::operation_canceled);
  }
  return {};
}

inline std::error_code wait_for(native_handle h, Readiness what, const Bound& b) noexcept {
  static const std::stop_token never;
  return wait_ready(h, what, b.deadline, b.stop != nullptr ? *b.stop : never, b.also != nullptr ? *b.also : never);
}

// Errors after which accept() should simply try again: the connection died in the queue
// (Winsock reports a client that reset before the accept as WSAECONNRESET, Wine 8 as
// WSAENOTCONN; accept on a listening socket has no other reason to say "not connected").
inline bool transient_accept_error(const std::error_code& ec) noexcept {
  return ec == std::errc::connection_aborted || ec == std::errc::protocol_error ||
         ec == std::errc::interrupted || ec == std::errc::connection_reset || ec == std::errc::not_connected;
}

inline native_handle blocking_accept(native_handle h, RawAddress& peer, const Bound& b, std::error_code& ec) noexcept {
  ec = canceled_if_stopped(b);
  while (!ec) {
    peer.size = sizeof peer.storage;
    const native_handle c = accept_handle(h, peer.data(), &peer.size, ec);
    if (!ec) return c;
    if (transient_accept_error(ec)) {
      ec.clear();
      continue;
    }
    if (!would_block(ec)) break;
    ec = wait_for(h, Readiness::read, b);
  }
  return invalid_handle;
}

/// Connects a non-blocking socket and waits for the handshake to finish.
inline std::error_code blocking_connect(native_handle h, const RawAddress& to, const Bound& b) noexcept {
  if (auto ec = canceled_if_stopped(b)) return ec;
  std::error_code ec = connect_handle(h, to.data(), to.size);
  if (ec != std::errc::operation_in_progress && !would_block(ec)) return ec;
  static const std::stop_token never;
  ec = wait_connected(h, b.deadline, b.stop != nullptr ? *b.stop : never, b.also != nullptr ? *b.also : never);
  if (ec) return ec;
  return pending_error(h);
}

inline std::size_t blocking_recv(native_handle h, void* buf, std::size_t n, const Bound& b,
                                 std::error_code& ec) noexcept {
  ec = canceled_if_stopped(b);
  while (!ec) {
    const std::size_t r = recv_some(h, buf, n, 0, ec);
    if (!ec || !would_block(ec)) return r;
    ec = wait_for(h, Readiness::read, b);
  }
  return 0;
}

inline std::size_t blocking_send(native_handle h, const void* buf, std::size_t n, const Bound& b,
                                 std::error_code& ec) noexcept {
  ec = canceled_if_stopped(b);
  while (!ec) {
    const std::size_t r = send_some(h, buf, n, ec);
    if (!ec || !would_block(ec)) return r;
    ec = wait_for(h, Readiness::write, b);
  }
  return 0;
}

/// Reads until `n` bytes arrived; end of stream first is sockpat's end_of_stream (set by the caller).
inline std::size_t blocking_recv_all(native_handle h, std::byte* buf, std::size_t n, const Bound& b,
                                     std::error_code& ec, bool& eof) noexcept {
  std::size_t done = 0;
  eof = false;
  ec.clear();
  while (done < n) {
    const std::size_t r = blocking_recv(h, buf + done, n - done, b, ec);
    if (ec) break;
    if (r == 0) {
      eof = true;
      break;
    }
    done += r;
  }
  return done;
}

inline std::size_t blocking_send_all(native_handle h, const std::byte* buf, std::size_t n, const Bound& b,
                                     std::error_code& ec) noexcept {
  std::size_t done = 0;
  ec.clear();
  while (done < n) {
    done += blocking_send(h, buf + done, n - done, b, ec);
    if (ec) break;
  }
  return done;
}

inline std::size_t blocking_send_to(native_handle h, const void* buf, std::size_t n, const RawAddress& to,
                                    const Bound& b, std::error_code& ec) noexcept {
  ec = canceled_if_stopped(b);
  while (!ec) {
    const std::size_t r = send_to(h, buf, n, to.data(), to.size, ec);
    if (!ec || !would_block(ec)) return r;
    ec = wait_for(h, Readiness::write, b);
  }
  return 0;
}

/// Receives one datagram. A datagram larger than the buffer fills it and reports
/// message_size (where the platform says so), so a truncation is never silent.
inline std::size_t blocking_recv_from(native_handle h, void* buf, std::size_t n, RawAddress* from, const Bound& b,
                                      std::error_code& ec) noexcept {
  ec = canceled_if_stopped(b);
  while (!ec) {
    RawAddress scratch;
    RawAddress& addr = from != nullptr ? *from : scratch;
    addr.size = sizeof addr.storage;
    const std::size_t r = recv_from(h, buf, n, addr.data(), &addr.size, ec);
    if (!ec) {
      if (r > n) {
        ec = make_errc(std::errc::message_size);
        return n;
      }
      return r;
    }
    if (ec == std::errc::message_size) return n;  // Winsock: WSAEMSGSIZE with the buffer filled
    if (!would_block(ec)) return 0;
    ec = wait_for(h, Readiness::read, b);
  }
  return 0;
}

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_BLOCKING_HPP

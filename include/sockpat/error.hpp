// sockpat: the library's own error codes, and the exceptions it throws.
#ifndef SOCKPAT_ERROR_HPP
#define SOCKPAT_ERROR_HPP

#include <cstddef>       // std::size_t
#include <string>        // std::string
#include <system_error>  // std::error_code, std::error_category, std::system_error
#include <type_traits>   // std::true_type

#include "sockpat/detail/config.hpp"

namespace sockpat {

/// Errors sockpat raises that the OS does not. Compare with `ec == sockpat::errc::end_of_stream`.
enum class errc {
  end_of_stream = 1,  ///< the peer closed before the requested bytes arrived
  frame_too_large,    ///< a frame or line is longer than the configured maximum
  malformed_frame,    ///< bytes that no frame of the protocol can start with
  buffer_full,        ///< a bounded buffer or queue has no room left
  protocol_error,     ///< the peer broke the protocol (a bad handshake, a wrong version)
  not_connected,      ///< the object has no open socket
  closed,             ///< the queue (or other object) was closed while the call waited on it
};

class ErrorCategory final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "sockpat"; }
  [[nodiscard]] std::string message(int code) const override {
    switch (static_cast<errc>(code)) {
      case errc::end_of_stream: return "end of stream";
      case errc::frame_too_large: return "frame too large";
      case errc::malformed_frame: return "malformed frame";
      case errc::buffer_full: return "buffer full";
      case errc::protocol_error: return "protocol error";
      case errc::not_connected: return "not connected";
      case errc::closed: return "closed";
    }
    return "unknown sockpat error";
  }
};

inline const std::error_category& error_category() noexcept {
  static const ErrorCategory category;
  return category;
}

inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

/// Thrown by calls that move a byte count (read_exactly, write_all) when they stop early:
/// the bytes before the error did arrive, and bytes_transferred() says how many.
class TransferError : public std::system_error {
 public:
  TransferError(std::error_code ec, const std::string& what, std::size_t transferred)
      : std::system_error(ec, what), transferred_(transferred) {}
  [[nodiscard]] std::size_t bytes_transferred() const noexcept { return transferred_; }

 private:
  std::size_t transferred_;
};

namespace detail {
[[noreturn]] inline void throw_error(std::error_code ec, const std::string& what) { throw std::system_error(ec, what); }

/// How an error that ended a connection's handler is counted by the servers: the normal ways a
/// connection ends (its peer left, a timeout, a cancel) apart from failures.
enum class Ending : unsigned char { failure, timed_out, peer_closed, canceled };
inline Ending ending_of(std::error_code ec) noexcept {
  if (ec == std::errc::operation_canceled) return Ending::canceled;
  if (ec == std::errc::timed_out) return Ending::timed_out;
  if (ec == std::errc::connection_reset || ec == std::errc::broken_pipe || ec == std::errc::connection_aborted ||
      ec == make_error_code(errc::end_of_stream)) {
    return Ending::peer_closed;
  }
  return Ending::failure;
}
}  // namespace detail

}  // namespace sockpat

template <>
struct std::is_error_code_enum<sockpat::errc> : std::true_type {};

#endif  // SOCKPAT_ERROR_HPP

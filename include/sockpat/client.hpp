// sockpat: client helpers. Connecting with retries until a deadline (for a client that starts
// before its server), and a one-call request/response exchange over a framing.
#ifndef SOCKPAT_CLIENT_HPP
#define SOCKPAT_CLIENT_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock
#include "sockpat/detail/function.hpp"  // std::function
#include <new>                 // std::bad_alloc
#include <stdexcept>           // std::invalid_argument
#include <string>              // std::string
#include <string_view>         // std::string_view
#include <system_error>        // std::error_code
#include <utility>             // std::move
#include <vector>              // std::vector: the addresses an attempt tried

#include "sockpat/backoff.hpp"  // Backoff, BackoffSequence: the pauses between attempts
#include "sockpat/connection.hpp"
#include "sockpat/deadline.hpp"
#include "sockpat/framing.hpp"

namespace sockpat {

struct RetryOptions {
  /// The pauses after failed attempts: 50 ms doubled up to 2 s, each shortened by up to a quarter
  /// so that clients that failed together do not retry together.
  Backoff backoff{.initial = std::chrono::milliseconds(50), .max = std::chrono::seconds(2), .multiplier = 2.0, .jitter = 0.25};
  /// Called after each failed attempt that will be retried, with its error and its number (1, 2, ...).
  /// It must not throw.
  std::function<void(const std::error_code&, int attempt)> on_retry = {};
  /// How each attempt by host name dials (Happy Eyeballs delay, family, resolver, local address);
  /// its deadline is not used: the Deadline given to connect_with_retry bounds every attempt.
  ConnectOptions connect = {};
};

namespace detail {

/// Errors that mean "no server there yet" rather than "this will never work".
inline bool worth_retrying(const std::error_code& ec) noexcept {
  return ec == std::errc::connection_refused || ec == std::errc::connection_reset ||
         ec == std::errc::connection_aborted || ec == std::errc::host_unreachable ||
         ec == std::errc::network_unreachable || ec == std::errc::no_such_file_or_directory ||  // a Unix path not made yet
         ec == std::errc::resource_unavailable_try_again;  // a Unix listener with a full backlog
}

/// Waits until `until` or a stop request; false on the stop. (poll() ignores the invalid handle,
/// so this is the stop-aware wait of every blocking call, with nothing to wait for.)
inline bool pause_until(steady_time until, const std::stop_token& stop) noexcept {
  return wait_ready(invalid_handle, Readiness::read, until, stop) != std::errc::operation_canceled;
}

}  // namespace detail

namespace detail {

// The loop of connect_with_retry by name; `tried` holds the last attempt's addresses and errors.
template <StreamProtocol P>
Connection<P> retry_by_name(std::string_view host, int port, const Deadline& d, const RetryOptions& retry,
                            std::vector<AttemptError>& tried, std::error_code& ec) noexcept {
  ConnectOptions options = retry.connect;
  options.deadline = d;
  BackoffSequence delays(retry.backoff);
  for (int attempt = 1;; ++attempt) {
    tried.clear();
    auto c = NamedConnect<P>::run(host, port, options, tried, ec);
    if (!ec) return c;
    if (tried.empty() || !worth_retrying(ec)) return {};  // no address to retry (or a bad name)
    const auto now = std::chrono::steady_clock::now();
    const auto delay = delays.next();
    if (d.has_time() && now + delay >= d.time()) return {};
    if (retry.on_retry) retry.on_retry(ec, attempt);
    if (!pause_until(now + delay, d.stop_token())) {
      ec = make_errc(std::errc::operation_canceled);
      return {};
    }
  }
}

}  // namespace detail

/// Connects to `remote`, retrying with exponential backoff while the attempt fails with a
/// "not there yet" error (connection refused, a Unix path not yet made, ...), until `d`. Throws
/// std::system_error with the last attempt's error (timed_out if none failed in time; other
/// errors at once; operation_canceled on stop). The twin reports the same through `ec`.
template <StreamProtocol P>
[[nodiscard]] Connection<P> connect_with_retry(const Endpoint& remote, Deadline d = {}, const RetryOptions& retry = {}) {
  std::error_code ec;
  auto c = connect_with_retry<P>(remote, std::move(d), retry, ec);
  if (ec) detail::throw_error(ec, detail::describe("connect (with retries)", remote, ec, d.timeout()));
  return c;
}
template <StreamProtocol P>
[[nodiscard]] Connection<P> connect_with_retry(const Endpoint& remote, Deadline d, const RetryOptions& retry,
                                               std::error_code& ec) noexcept {
  BackoffSequence delays(retry.backoff);
  for (int attempt = 1;; ++attempt) {
    auto c = Connection<P>::connect(remote, ConnectOptions::with_deadline(d), ec);
    if (!ec) return c;
    if (!detail::worth_retrying(ec)) return {};
    const auto now = std::chrono::steady_clock::now();
    const auto delay = delays.next();
    if (d.has_time() && now + delay >= d.time()) return {};  // no time left for another attempt
    if (retry.on_retry) retry.on_retry(ec, attempt);
    if (!detail::pause_until(now + delay, d.stop_token())) {
      ec = detail::make_errc(std::errc::operation_canceled);
      return {};
    }
  }
}

/// As above, by host name: each attempt resolves `host` (within `d`) and races its addresses by
/// Happy Eyeballs (retry.connect); a name that does not resolve is not retried. Throws
/// std::system_error naming every address of the last attempt with its error.
template <StreamProtocol P>
  requires InternetProtocol<P>
[[nodiscard]] Connection<P> connect_with_retry(std::string_view host, int port, Deadline d = {},
                                               const RetryOptions& retry = {}) {
  (void)detail::checked_port(port, host);
  if (host.empty()) throw std::invalid_argument("sockpat: cannot connect to an empty host");
  std::vector<detail::AttemptError> tried;
  std::error_code ec;
  auto c = detail::retry_by_name<P>(host, port, d, retry, tried, ec);
  if (ec && tried.empty()) detail::throw_error(ec, "connect " + detail::host_port(host, port));
  if (ec) detail::throw_error(ec, detail::describe_attempts("connect (with retries)", host, port, tried));
  return c;
}
template <StreamProtocol P>
  requires InternetProtocol<P>
[[nodiscard]] Connection<P> connect_with_retry(std::string_view host, int port, Deadline d, const RetryOptions& retry,
                                               std::error_code& ec) noexcept {
  try {
    std::vector<detail::AttemptError> tried;
    return detail::retry_by_name<P>(host, port, d, retry, tried, ec);
  } catch (const std::bad_alloc&) {
    ec = detail::make_errc(std::errc::not_enough_memory);
    return {};
  }
}

/// One exchange: connects to `remote`, sends `payload` as one frame of `framing`, and returns the
/// one-frame reply, all within `d` (the framing before the payload, as in FramedConnection::request).
/// Throws std::system_error (the connect's or the exchange's error; end_of_stream if the server
/// closes without a reply).
template <StreamProtocol P, Framing F>
[[nodiscard]] std::string request(const Endpoint& remote, const F& framing, std::string_view payload, Deadline d = {}) {
  auto connection = Connection<P>::connect(remote, d);
  FramedConnection<P> framed(connection);
  return framed.request(framing, payload, d);
}

}  // namespace sockpat

#endif  // SOCKPAT_CLIENT_HPP

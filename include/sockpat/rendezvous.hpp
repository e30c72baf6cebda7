// sockpat: rendezvous, the seed's peer done right: two peers that each know the other's endpoint
// end with one connection, whichever starts first, or both at once.
#ifndef SOCKPAT_RENDEZVOUS_HPP
#define SOCKPAT_RENDEZVOUS_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock, milliseconds, seconds
#include <system_error>  // std::error_code

#include "sockpat/backoff.hpp"  // Backoff, BackoffSequence: the waits between dials
#include "sockpat/listener.hpp"

namespace sockpat {

struct RendezvousOptions {
  /// The waits between two dials: 20 ms doubled up to 1 s, each somewhere in [wait / 2, wait]
  /// so that two peers started together do not dial in lockstep.
  Backoff backoff{.initial = std::chrono::milliseconds(20), .max = std::chrono::seconds(1), .multiplier = 2.0, .jitter = 0.5};
};

/// Connects this peer at `local` with the peer at `remote`, as the seed's peer does by binding its
/// own port and then connecting, but so that the start order does not matter: it listens on
/// `local` and dials `remote` from that same port (SO_REUSEPORT), retrying refusals with
/// exponential backoff and jitter, until a connection exists or `d` runs out. The port is
/// claimed (ListenOptions::claim_port): one already in use fails with address_in_use at once.
///
/// Both directions use the same pair of endpoints, and TCP allows one connection per pair, so the
/// two peers always end with the same, single connection, be it the one this side dialed, the one
/// it accepted, or a TCP simultaneous open. Only a connection from `remote` itself is accepted;
/// another caller is closed. A peer that only dials from `remote` (the seed's Python peer) works too.
/// Throws std::system_error (timed_out, operation_canceled) naming both endpoints.
///
/// The overloads taking a `listener` use one the caller bound with ListenOptions::claim_port (or
/// reuse_port; without either every dial fails with address_in_use), so a program can report
/// the port it listens on, or a bind error, before the rendezvous starts.
[[nodiscard]] inline TcpConnection rendezvous(TcpListener& listener, const Endpoint& remote, Deadline d,
                                              std::error_code& ec, const RendezvousOptions& options = {}) noexcept {
  const auto here = listener.local_endpoint(ec);  // the real port when it was bound to port 0
  if (ec) return {};
  BackoffSequence waits(options.backoff);
  for (;;) {
    // One dial, bounded by a second so that a lost SYN does not hold the loop.
    ConnectOptions co;
    co.local = here;
    co.reuse_port = true;
    co.deadline = d.capped(std::chrono::steady_clock::now() + std::chrono::seconds(1));
    auto dialed = TcpConnection::connect(remote, co, ec);
    if (!ec) return dialed;
    // Refused: nobody there yet. address_not_available: the pair of endpoints is taken, which
    // means the other side's dial reached our listener. Anything else ends the rendezvous.
    if (ec != std::errc::connection_refused && ec != std::errc::address_not_available &&
        ec != std::errc::timed_out) {
      return {};
    }
    if (ec == std::errc::timed_out && d.expired()) return {};
    // Wait for the other side's dial for the backoff time, then dial again.
    const auto until = std::chrono::steady_clock::now() + waits.next();
    while (true) {
      auto accepted = listener.accept(d.capped(until), ec);
      if (!ec) {
        if (accepted.remote_endpoint(ec) == remote && !ec) return accepted;
        continue;  // a stranger, or a connection already gone: keep waiting for the peer
      }
      if (ec != std::errc::timed_out) return {};
      if (d.expired()) return {};
      break;
    }
  }
}

[[nodiscard]] inline TcpConnection rendezvous(const Endpoint& local, const Endpoint& remote, Deadline d,
                                              std::error_code& ec, const RendezvousOptions& options = {}) noexcept {
  ListenOptions lo;
  lo.claim_port = true;
  auto listener = TcpListener::bind(local, lo, ec);
  if (ec) return {};
  return rendezvous(listener, remote, d, ec, options);
}

[[nodiscard]] inline TcpConnection rendezvous(TcpListener& listener, const Endpoint& remote, Deadline d = {},
                                              const RendezvousOptions& options = {}) {
  std::error_code ec;
  auto c = rendezvous(listener, remote, d, ec, options);
  if (ec) {
    std::error_code ignored;
    const auto local = listener.local_endpoint(ignored);
    detail::throw_error(ec, "rendezvous " + local.to_string() + " <-> " + remote.to_string());
  }
  return c;
}

[[nodiscard]] inline TcpConnection rendezvous(const Endpoint& local, const Endpoint& remote, Deadline d = {},
                                              const RendezvousOptions& options = {}) {
  std::error_code ec;
  auto c = rendezvous(local, remote, d, ec, options);
  if (ec) detail::throw_error(ec, "rendezvous " + local.to_string() + " <-> " + remote.to_string());
  return c;
}

}  // namespace sockpat

#endif  // SOCKPAT_RENDEZVOUS_HPP

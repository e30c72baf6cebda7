// sockpat: how the servers report a handler's failure: the user's hook, or one line on stderr
// naming the server and the peer. Shared by Server (server.hpp) and StreamServer (streams.hpp).
#ifndef SOCKPAT_DETAIL_REPORT_HPP
#define SOCKPAT_DETAIL_REPORT_HPP

#include <cstdio>      // std::fprintf, stderr: the default report, as socketserver's handle_error
#include <exception>   // std::exception_ptr, std::rethrow_exception
#include "sockpat/detail/function.hpp"  // std::function: the hook

#include "sockpat/endpoint.hpp"

namespace sockpat::detail {

using FailureHook = std::function<void(std::exception_ptr error, const Endpoint& peer)>;

/// Gives `error` to `hook`, or without one prints "sockpat SERVER LOCAL: PEER: what". Never
/// throws: a hook that throws, or a report that cannot allocate, must not stop a server.
inline void report_failure(const FailureHook& hook, const char* server, const Endpoint& local,
                           std::exception_ptr error, const Endpoint& peer) noexcept {
  try {
    if (hook) {
      hook(error, peer);
      return;
    }
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sockpat %s %s: %s%s%s\n", server, local.to_string().c_str(),
                   peer.empty() ? "" : peer.to_string().c_str(), peer.empty() ? "" : ": ", e.what());
    } catch (...) {
      std::fprintf(stderr, "sockpat %s %s: a handler threw a non-standard exception\n", server,
                   local.to_string().c_str());
    }
  } catch (...) {
  }
}

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_REPORT_HPP

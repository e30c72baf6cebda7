// sockpat: the awaited connect by name: the resolution on a helper thread, then the Happy Eyeballs
// race, each attempt a task of one group reporting to a queue. Connection::async_connect(host, port)
// runs it; event_loop.hpp includes this header, so connection.hpp alone stays free of the task group.
#ifndef SOCKPAT_DETAIL_ASYNC_CONNECT_HPP
#define SOCKPAT_DETAIL_ASYNC_CONNECT_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock
#include <cstddef>       // std::size_t
#include <optional>      // std::optional
#include <string>        // std::string
#include <system_error>  // std::error_code
#include <utility>       // std::move
#include <vector>        // std::vector

#include "sockpat/connection.hpp"
#include "sockpat/detail/happy_eyeballs.hpp"  // interleave, describe_attempts
#include "sockpat/resolver.hpp"               // async_resolve
#include "sockpat/sync.hpp"                   // Queue: the attempts report to the race
#include "sockpat/task.hpp"                   // Task, wait_for, as_result
#include "sockpat/task_group.hpp"             // with_task_group: the attempts

namespace sockpat::detail {

template <StreamProtocol P>
struct AsyncConnect {
  using Connection = sockpat::Connection<P>;

  static Task<Connection> run(std::string host, int port, ConnectOptions options) {
    options.deadline = options.bound();  // the timeout counts from here, once
    options.timeout.reset();
    const auto addresses = co_await async_resolve(host, port, options.deadline, options.resolver);
    std::vector<detail::AttemptError> tried;
    std::error_code ec;
    auto c = co_await async_race(detail::interleave(addresses, options.prefer), options, tried, ec);
    if (ec) detail::throw_error(ec, detail::describe_attempts("connect", host, port, tried));
    co_return c;
  }

  /// How one async attempt ended: its index in the order, its error, its socket.
  struct Attempted {
    std::size_t index;
    std::error_code error;
    Socket<P> socket;
  };

  static Task<void> attempt(Endpoint remote, std::size_t index, const ConnectOptions& o, Queue<Attempted>& done) {
    std::error_code ec;
    auto s = Connection::open_for(remote, o, ec);
    if (!ec) co_await detail::IoAwaiter<detail::ConnectOp>(s.native_handle(), detail::ConnectOp{remote.raw()}, o.deadline, &ec);
    (void)done.try_put(Attempted{index, ec, std::move(s)});  // the queue has room for every attempt
  }

  /// The awaited race: each attempt is a task of one group and reports to a queue; the race
  /// waits on the queue for at most the time left until the next attempt is due.
  /// `o.deadline` is the bound (async_connect turned its timeout into it).
  static Task<Connection> async_race(std::vector<Endpoint> order, ConnectOptions o,
                                     std::vector<detail::AttemptError>& tried, std::error_code& ec) {
    Queue<Attempted> done(order.size() + 1);
    std::optional<Connection> won;
    std::error_code cancelled;
    // The losers have ended when with_task_group returns, whatever way the body ends; their
    // sockets close with `done`. What the attempts use (`o`, `done`) is this frame's.
    co_await with_task_group([&](TaskGroup& attempts) -> Task<void> {
      std::size_t next = 0;
      std::size_t live = 0;
      auto next_start = std::chrono::steady_clock::now();
      while (!won) {
        const auto now = std::chrono::steady_clock::now();
        if (o.deadline.stop_token().stop_requested() || now >= o.deadline.time()) next = order.size();  // start no more
        if (next < order.size() && (live == 0 || (o.attempt_delay.count() > 0 && now >= next_start))) {
          const std::size_t i = next++;
          if (Connection::skipped(order[i], o)) continue;
          attempts.create_task(attempt(order[i], i, o, done));
          ++live;
          next_start = now + o.attempt_delay;
          continue;
        }
        if (live == 0) break;
        std::optional<Attempted> got;
        if (next < order.size() && o.attempt_delay.count() > 0) {
          auto r = co_await as_result(wait_for(done.get(), next_start - now));
          if (r) {
            got.emplace(std::move(*r));
          } else if (r.error() != std::errc::timed_out) {
            cancelled = r.error();
            break;
          }
        } else {
          auto r = co_await as_result(done.get());
          if (!r) {
            cancelled = r.error();
            break;
          }
          got.emplace(std::move(*r));
        }
        if (!got) continue;
        --live;
        if (got->error) {
          tried.push_back({order[got->index], got->error});
        } else {
          won.emplace(std::move(got->socket));
        }
      }
      attempts.cancel();
    });
    if (cancelled) detail::throw_error(cancelled, "connect");
    if (won) {
      ec.clear();
      co_return std::move(*won);
    }
    ec = tried.empty() ? detail::make_errc(std::errc::host_unreachable) : tried.back().error;
    co_return Connection();
  }
};

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_ASYNC_CONNECT_HPP

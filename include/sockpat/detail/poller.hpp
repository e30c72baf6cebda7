// sockpat: the one place that picks the event loop's backend. Define SOCKPAT_USE_POLL (the CMake
// option SOCKPAT_POLLER=poll does) to use poll() on Linux too.
#ifndef SOCKPAT_DETAIL_POLLER_HPP
#define SOCKPAT_DETAIL_POLLER_HPP

#include "sockpat/detail/config.hpp"

#if defined(SOCKPAT_LINUX) && !defined(SOCKPAT_USE_POLL)
#include "sockpat/detail/epoll.hpp"
namespace sockpat::detail {
using Poller = EpollPoller;
}
#else
#include "sockpat/detail/poll.hpp"
namespace sockpat::detail {
using Poller = PollPoller;
}
#endif

#endif  // SOCKPAT_DETAIL_POLLER_HPP

// sockpat: the only header that includes operating-system headers.
#ifndef SOCKPAT_DETAIL_OS_HPP
#define SOCKPAT_DETAIL_OS_HPP

#include "sockpat/detail/config.hpp"

#if defined(SOCKPAT_POSIX)
#include <arpa/inet.h>    // inet_pton, inet_ntop
#include <fcntl.h>        // fcntl, O_NONBLOCK, FD_CLOEXEC
#include <net/if.h>       // if_nametoindex, if_indextoname
#include <netdb.h>        // getaddrinfo, gai_strerror
#include <netinet/in.h>   // sockaddr_in, sockaddr_in6
#include <netinet/tcp.h>  // TCP_NODELAY
#include <poll.h>         // poll
#include <signal.h>       // sigaction
#include <sys/socket.h>   // socket, bind, listen, accept, connect, send, recv
#include <sys/un.h>       // sockaddr_un
#include <unistd.h>       // close, pipe, write, read
#if defined(SOCKPAT_LINUX)
#include <sys/epoll.h>    // epoll: the event loop's Linux backend
#include <sys/eventfd.h>  // eventfd: the stop-token and event-loop wake-up
#endif
#endif

#endif  // SOCKPAT_DETAIL_OS_HPP

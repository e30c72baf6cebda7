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
#include <pthread.h>      // pthread_key_create: per-thread objects (per_thread.hpp)
#include <signal.h>       // sigaction
#include <sys/resource.h> // getrlimit: the descriptor limit that bounds a Server's connections
#include <sys/socket.h>   // socket, bind, listen, accept, connect, send, recv
#include <sys/time.h>     // timeval: SO_RCVTIMEO
#include <sys/un.h>       // sockaddr_un
#include <unistd.h>       // close, pipe, write, read
#if defined(SOCKPAT_LINUX)
#include <sched.h>        // SCHED_BATCH: the request server's poller thread (batch_thread.hpp)
#include <sys/epoll.h>    // epoll: the event loop's Linux backend
#include <sys/eventfd.h>  // eventfd: the stop-token and event-loop wake-up
#endif
#endif

#if defined(SOCKPAT_WINDOWS)
// <winsock2.h> pulls in <windows.h>. When sockpat is the first to include it, it asks for the
// lean form without the min/max and GDI macros (ERROR, ...) and takes its requests back after,
// so nothing of that leaks into user code. When the user included <windows.h> first, it is
// already configured the user's way and these defines change nothing; they are never redefined.
#if !defined(_WINDOWS_)
#if !defined(WIN32_LEAN_AND_MEAN)
#define WIN32_LEAN_AND_MEAN
#define SOCKPAT_DEFINED_WIN32_LEAN_AND_MEAN
#endif
#if !defined(NOMINMAX)
#define NOMINMAX
#define SOCKPAT_DEFINED_NOMINMAX
#endif
#if !defined(NOGDI)
#define NOGDI
#define SOCKPAT_DEFINED_NOGDI
#endif
#endif
// <windows.h> without WIN32_LEAN_AND_MEAN includes the old <winsock.h>, which MSVC's <winsock2.h>
// cannot follow (MinGW's copes, with a warning of its own). INVALID_SOCKET, not _WINSOCKAPI_,
// tells that <winsock.h> really came in: some code defines _WINSOCKAPI_ itself to keep it out.
#if defined(_MSC_VER) && defined(INVALID_SOCKET) && !defined(_WINSOCK2API_)
#error "sockpat: <winsock.h> was included (by <windows.h> without WIN32_LEAN_AND_MEAN); define WIN32_LEAN_AND_MEAN or include <winsock2.h> before <windows.h>"
#endif
#include <winsock2.h>  // SOCKET, WSAPoll, WSASocketW, ioctlsocket, closesocket, WSAGetLastError
#include <ws2tcpip.h>  // getaddrinfo, inet_pton, inet_ntop, sockaddr_in6, socklen_t
#include <windows.h>   // SetConsoleCtrlHandler, SetHandleInformation, FormatMessageA
#include <signal.h>    // SIGINT, SIGTERM, SIGBREAK: the numbers SignalStop::signal() reports
#if defined(__has_include)
#if __has_include(<afunix.h>)
#include <afunix.h>  // sockaddr_un (Windows 10 SDK and MinGW-w64 8+)
#define SOCKPAT_HAS_AFUNIX_H 1
#endif
#endif
#if defined(SOCKPAT_DEFINED_WIN32_LEAN_AND_MEAN)
#undef WIN32_LEAN_AND_MEAN
#undef SOCKPAT_DEFINED_WIN32_LEAN_AND_MEAN
#endif
#if defined(SOCKPAT_DEFINED_NOMINMAX)
#undef NOMINMAX
#undef SOCKPAT_DEFINED_NOMINMAX
#endif
#if defined(SOCKPAT_DEFINED_NOGDI)
#undef NOGDI
#undef SOCKPAT_DEFINED_NOGDI
#endif
#endif

#endif  // SOCKPAT_DETAIL_OS_HPP

// epoll_echo_server: the reference for "as fast as hand-written epoll": what a careful person writes by
// hand on one thread. Run: epoll_echo_server [--host 127.0.0.1] [--port 0] [--edge]
//
// Level-triggered by default (one read per readiness event, so connections share the thread fairly);
// --edge registers each socket once for EPOLLIN|EPOLLOUT|EPOLLET and never calls epoll_ctl again.
// One shared read buffer; a connection owns memory only while the kernel refuses part of a reply,
// and while it does, that connection is not read (back-pressure instead of buffering).
#include <arpa/inet.h>     // inet_pton, inet_ntop
#include <fcntl.h>         // open
#include <netinet/in.h>    // sockaddr_in
#include <netinet/tcp.h>   // TCP_NODELAY
#include <sys/epoll.h>     // epoll_*
#include <sys/signalfd.h>  // signalfd: SIGINT/SIGTERM arrive as a readable descriptor
#include <sys/socket.h>    // socket, accept4, recv, send
#include <unistd.h>        // close

#include <cerrno>    // errno
#include <csignal>   // sigset_t, sigprocmask
#include <cstdio>    // std::printf, std::fprintf
#include <cstdlib>   // std::strtol
#include <cstring>   // std::memcpy, std::strerror
#include <memory>    // std::unique_ptr
#include <string>    // std::string
#include <vector>    // std::vector

namespace {

constexpr std::size_t kBufferSize = 64 * 1024;

// The bytes of a reply that the kernel did not take yet. Empty for almost every connection.
struct Pending {
  std::unique_ptr<char[]> data;
  std::size_t size = 0;
  std::size_t sent = 0;
};

class EchoServer {
 public:
  EchoServer(int listener, int signals, bool edge) : listener_(listener), signals_(signals), edge_(edge) {
    ep_ = ::epoll_create1(EPOLL_CLOEXEC);
    add(listener_, EPOLLIN);
    add(signals_, EPOLLIN);
    // A spare descriptor: when accept fails with EMFILE, closing it lets us accept and drop the
    // client instead of spinning on a listener that stays readable.
    spare_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;
  ~EchoServer() {
    for (std::size_t fd = 0; fd < open_.size(); ++fd) {
      if (open_[fd]) ::close(static_cast<int>(fd));
    }
    if (spare_ >= 0) ::close(spare_);
    ::close(ep_);
  }

  // The serving loop; returns when SIGINT or SIGTERM arrives.
  [[gnu::noinline]] void serve() {
    epoll_event events[256];
    for (;;) {
      const int n = ::epoll_wait(ep_, events, 256, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        std::fprintf(stderr, "epoll_wait: %s\n", std::strerror(errno));
        return;
      }
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (fd == listener_) {
          accept_all();
        } else if (fd == signals_) {
          return;
        } else {
          on_ready(fd, events[i].events);
        }
      }
    }
  }

 private:
  void add(int fd, std::uint32_t what) {
    epoll_event ev{};
    ev.events = what;
    ev.data.fd = fd;
    ::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  }
  void modify(int fd, std::uint32_t what) {
    epoll_event ev{};
    ev.events = what;
    ev.data.fd = fd;
    ::epoll_ctl(ep_, EPOLL_CTL_MOD, fd, &ev);
  }

  void accept_all() {
    for (;;) {
      const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if ((errno == EMFILE || errno == ENFILE) && spare_ >= 0) {
          ::close(spare_);
          const int drop = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
          if (drop >= 0) ::close(drop);
          spare_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
          continue;
        }
        return;  // EAGAIN: the queue is empty
      }
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      const auto i = static_cast<std::size_t>(fd);
      if (i >= open_.size()) {
        open_.resize(i + 1024);
        pending_.resize(i + 1024);
      }
      open_[i] = true;
      add(fd, edge_ ? (EPOLLIN | EPOLLOUT | EPOLLET) : EPOLLIN);
    }
  }

  void close_conn(int fd) {
    // close() removes the descriptor from the epoll set: no EPOLL_CTL_DEL needed.
    ::close(fd);
    open_[static_cast<std::size_t>(fd)] = false;
    pending_[static_cast<std::size_t>(fd)] = Pending{};
  }

  // Sends what is pending; returns false if the connection failed, and leaves the rest pending.
  bool flush(int fd, Pending& p) {
    while (p.sent < p.size) {
      const ssize_t w = ::send(fd, p.data.get() + p.sent, p.size - p.sent, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
      }
      p.sent += static_cast<std::size_t>(w);
    }
    p = Pending{};
    return true;
  }

  // Echoes one buffer; returns false if the connection failed. A remainder becomes pending.
  bool echo(int fd, std::size_t n) {
    std::size_t sent = 0;
    while (sent < n) {
      const ssize_t w = ::send(fd, buffer_ + sent, n - sent, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
        break;
      }
      sent += static_cast<std::size_t>(w);
    }
    if (sent < n) {
      Pending& p = pending_[static_cast<std::size_t>(fd)];
      p.size = n - sent;
      p.sent = 0;
      p.data = std::make_unique_for_overwrite<char[]>(p.size);
      std::memcpy(p.data.get(), buffer_ + sent, p.size);
      if (!edge_) modify(fd, EPOLLOUT);  // stop reading until the reply is out
    }
    return true;
  }

  void on_ready(int fd, std::uint32_t what) {
    Pending& p = pending_[static_cast<std::size_t>(fd)];
    if (p.size != 0) {
      if ((what & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return;
      if (!flush(fd, p)) return close_conn(fd);
      if (p.size != 0) return;  // still blocked
      if (!edge_) {
        modify(fd, EPOLLIN);
        return;
      }
      // Edge-triggered: input that arrived meanwhile raised no new edge, so read it now.
    }
    if (!edge_ && (what & (EPOLLIN | EPOLLERR | EPOLLHUP)) == 0) return;
    do {
      const ssize_t r = ::recv(fd, buffer_, kBufferSize, 0);
      if (r == 0) return close_conn(fd);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        return close_conn(fd);
      }
      if (!echo(fd, static_cast<std::size_t>(r))) return close_conn(fd);
    } while (edge_ && pending_[static_cast<std::size_t>(fd)].size == 0);
  }

  int ep_ = -1;
  int listener_;
  int signals_;
  bool edge_;
  int spare_ = -1;
  std::vector<bool> open_;
  std::vector<Pending> pending_;
  char buffer_[kBufferSize];
};

[[noreturn]] void usage(const char* why) {
  if (why != nullptr) std::fprintf(stderr, "error: %s\n", why);
  std::fprintf(stderr, "usage: epoll_echo_server [--host 127.0.0.1] [--port 0] [--edge]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  long port = 0;
  bool edge = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--edge") {
      edge = true;
    } else if ((a == "--host" || a == "--port") && i + 1 < argc) {
      const char* v = argv[++i];
      if (a == "--host") {
        host = v;
      } else {
        char* end = nullptr;
        port = std::strtol(v, &end, 10);
        if (*end != '\0' || port < 0 || port > 65535) usage("--port needs a number in [0, 65535]");
      }
    } else {
      usage(("unexpected argument " + a).c_str());
    }
  }

  // Signals become a readable descriptor in the same epoll set: no handler, no flag, no race.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  const int signals = ::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) usage("--host needs an IPv4 address");
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(listener, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, SOMAXCONN) != 0) {
    std::fprintf(stderr, "epoll_echo_server: bind %s:%ld: %s\n", host.c_str(), port, std::strerror(errno));
    return 1;
  }
  socklen_t len = sizeof addr;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  char text[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &addr.sin_addr, text, sizeof text);
  std::printf("listening on %s:%u\n", text, static_cast<unsigned>(ntohs(addr.sin_port)));
  std::fflush(stdout);

  {
    // On the heap: the server holds its 64 KiB read buffer inline.
    auto server = std::make_unique<EchoServer>(listener, signals, edge);
    server->serve();
  }
  ::close(listener);
  ::close(signals);
  return 0;
}

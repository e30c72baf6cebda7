// raw_threaded_echo_server: the reference for sockpat's blocking servers: what a careful person
// writes by hand with one std::thread per connection. Run: raw_threaded_echo_server [--host 127.0.0.1] [--port 0]
//
// No library: blocking sockets, recv/send, TCP_NODELAY, a thread per client. The accept loop also
// watches SIGINT/SIGTERM (signalfd); on one it shuts every connection down, joins every thread and
// exits 0. Finished threads are joined at the next accept.
#include <arpa/inet.h>     // inet_pton, inet_ntop
#include <netinet/in.h>    // sockaddr_in
#include <netinet/tcp.h>   // TCP_NODELAY
#include <poll.h>          // poll
#include <sys/signalfd.h>  // signalfd: SIGINT/SIGTERM arrive as a readable descriptor
#include <sys/socket.h>    // socket, accept4, recv, send, shutdown
#include <unistd.h>        // close

#include <atomic>   // std::atomic: a thread's "finished" flag
#include <cerrno>   // errno
#include <csignal>  // sigset_t, pthread_sigmask
#include <cstdint>  // std::uint16_t
#include <cstdio>   // std::printf, std::fprintf
#include <cstdlib>  // std::strtol
#include <cstring>  // std::strcmp, std::strerror
#include <functional>  // std::ref
#include <list>     // std::list: live connections, stable while their threads run
#include <string>   // std::string
#include <system_error>  // std::system_error: a thread that does not start
#include <thread>   // std::thread

namespace {

struct Client {
  int fd = -1;
  std::atomic<bool> done{false};
  std::thread thread;
};

void serve_client(Client& c) {
  char buf[64 * 1024];
  for (;;) {
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    ssize_t sent = 0;
    while (sent < n) {
      const ssize_t m = ::send(c.fd, buf + sent, static_cast<std::size_t>(n - sent), MSG_NOSIGNAL);
      if (m < 0 && errno == EINTR) continue;
      if (m <= 0) {
        c.done = true;
        return;
      }
      sent += m;
    }
  }
  c.done = true;
}

int usage(const char* what) {
  std::fprintf(stderr, "raw_threaded_echo_server: %s\nusage: raw_threaded_echo_server [--host HOST] [--port PORT]\n",
               what);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  long port = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0) {
      std::printf("usage: raw_threaded_echo_server [--host HOST] [--port PORT]\n");
      return 0;
    }
    if (i + 1 >= argc) return usage("an option without a value");
    if (std::strcmp(argv[i], "--host") == 0) {
      host = argv[++i];
    } else if (std::strcmp(argv[i], "--port") == 0) {
      char* end = nullptr;
      port = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || port < 0 || port > 65535) return usage("--port wants 0..65535");
    } else {
      return usage("unknown option");
    }
  }

  // Blocked in every thread (the client threads inherit the mask): they arrive on the signalfd.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const int sfd = ::signalfd(-1, &signals, SFD_CLOEXEC);

  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) return usage("--host wants an IPv4 address");
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (sfd < 0 || lfd < 0 || ::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(lfd, SOMAXCONN) != 0) {
    std::fprintf(stderr, "raw_threaded_echo_server: %s\n", std::strerror(errno));
    return 1;
  }
  socklen_t len = sizeof addr;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len);
  char text[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &addr.sin_addr, text, sizeof text);
  std::printf("listening on %s:%d\n", text, ntohs(addr.sin_port));
  std::fflush(stdout);

  std::list<Client> clients;
  for (;;) {
    pollfd fds[2] = {{lfd, POLLIN, 0}, {sfd, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents != 0) break;  // SIGINT or SIGTERM
    const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    for (auto it = clients.begin(); it != clients.end();) {  // join the threads that finished
      if (!it->done) {
        ++it;
        continue;
      }
      it->thread.join();
      ::close(it->fd);
      it = clients.erase(it);
    }
    if (fd < 0) continue;  // a client that left before the accept, or out of descriptors
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Client& c = clients.emplace_back();
    c.fd = fd;
    try {
      c.thread = std::thread(serve_client, std::ref(c));
    } catch (const std::system_error& e) {
      std::fprintf(stderr, "raw_threaded_echo_server: no thread: %s\n", e.what());
      ::close(fd);
      clients.pop_back();
    }
  }
  // Stop: every blocked recv returns 0 after the shutdown; then join and close.
  for (auto& c : clients) ::shutdown(c.fd, SHUT_RDWR);
  for (auto& c : clients) {
    c.thread.join();
    ::close(c.fd);
  }
  ::close(lfd);
  ::close(sfd);
  return 0;
}

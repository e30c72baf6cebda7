// ping_pong: a tiny ping-pong load generator over raw epoll (no sockpat, so it cannot flatter it).
// Each of C connections sends an S-byte message and waits for the same bytes back, checking
// them, for D seconds after a warm-up. Prints round trips per second.
// Run: ping_pong PORT [CONNECTIONS=100] [SIZE=64] [SECONDS=3]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

struct Conn {
  int fd;
  std::size_t got = 0;
  unsigned char tag = 0;
};

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: ping_pong PORT [CONNECTIONS] [SIZE] [SECONDS]\n");
    return 2;
  }
  const int port = std::atoi(argv[1]);
  const int conns = argc > 2 ? std::atoi(argv[2]) : 100;
  const std::size_t size = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 64;
  const double seconds = argc > 4 ? std::atof(argv[4]) : 3.0;

  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int ep = epoll_create1(0);
  std::vector<Conn> cs(static_cast<std::size_t>(conns));
  std::vector<unsigned char> msg(size), in(size);
  for (int i = 0; i < conns; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      std::perror("connect");
      return 1;
    }
    cs[static_cast<std::size_t>(i)].fd = fd;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(i);
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  auto send_msg = [&](Conn& c) {
    std::memset(msg.data(), c.tag, size);
    if (write(c.fd, msg.data(), size) != static_cast<ssize_t>(size)) {
      std::perror("write");
      std::exit(1);
    }
  };
  for (auto& c : cs) send_msg(c);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto measure_from = start + std::chrono::milliseconds(500);
  const auto end = measure_from + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  long long trips = 0;
  long long mismatches = 0;
  epoll_event events[256];
  for (;;) {
    const auto now = Clock::now();
    if (now >= end) break;
    const int n = epoll_wait(ep, events, 256, 100);
    for (int i = 0; i < n; ++i) {
      Conn& c = cs[events[i].data.u32];
      const ssize_t r = read(c.fd, in.data() + c.got, size - c.got);
      if (r <= 0) {
        std::fprintf(stderr, "server closed a connection\n");
        return 1;
      }
      c.got += static_cast<std::size_t>(r);
      if (c.got < size) continue;
      for (std::size_t k = 0; k < size; ++k) mismatches += in[k] != c.tag;
      c.got = 0;
      ++c.tag;
      if (Clock::now() >= measure_from) ++trips;
      send_msg(c);
    }
  }
  std::printf("%.0f round trips/s (%d connections, %zu bytes, %lld mismatches)\n", static_cast<double>(trips) / seconds,
              conns, size, mismatches);
  return mismatches == 0 ? 0 : 1;
}

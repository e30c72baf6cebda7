// tls_loadgen: the TLS benchmark's client, on OpenSSL and blocking POSIX sockets (no sockpat, so
// it flatters no server). Prints one JSON line.
//   tls_loadgen --port P --mode stream [--seconds S] [--size 65536] [--window 4]
//       one connection, messages of `size` bytes written while the echo is read back (at most
//       `window` messages in flight), every byte checked: bytes echoed per second.
//   tls_loadgen --port P --mode handshakes [--seconds S] [--threads T]
//       T threads, each in a loop: connect, full handshake (no resumption), 1 byte echoed,
//       close_notify both ways, close: handshakes per second.
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace {

using Clock = std::chrono::steady_clock;

int dial(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<unsigned short>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

SSL_CTX* client_context() {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);  // the same for every server measured
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);  // every handshake a full one
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  return ctx;
}

struct Conn {
  int fd = -1;
  SSL* ssl = nullptr;
  bool open(SSL_CTX* ctx, int port) {
    fd = dial(port);
    if (fd < 0) return false;
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    return SSL_connect(ssl) == 1;
  }
  bool write_all(const char* p, std::size_t n) {
    while (n > 0) {
      std::size_t w = 0;
      if (SSL_write_ex(ssl, p, n, &w) != 1) return false;
      p += w;
      n -= w;
    }
    return true;
  }
  bool read_exactly(char* p, std::size_t n) {
    while (n > 0) {
      std::size_t r = 0;
      if (SSL_read_ex(ssl, p, n, &r) != 1) return false;
      p += r;
      n -= r;
    }
    return true;
  }
  void close_clean() {
    if (ssl != nullptr && SSL_shutdown(ssl) == 0) {
      char b;
      (void)SSL_read(ssl, &b, 1);  // waits for the server's close_notify
    }
    SSL_free(ssl);
    ssl = nullptr;
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  std::string mode = "stream";
  double seconds = 3;
  double warmup = 0.5;
  std::size_t size = 65536;
  int threads = 2;
  std::size_t window = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const char* v = argv[i + 1];
    if (a == "--port") port = std::atoi(v);
    else if (a == "--mode") mode = v;
    else if (a == "--seconds") seconds = std::atof(v);
    else if (a == "--warmup") warmup = std::atof(v);
    else if (a == "--size") size = static_cast<std::size_t>(std::atol(v));
    else if (a == "--threads") threads = std::atoi(v);
    else if (a == "--window") window = static_cast<std::size_t>(std::atol(v));
  }
  if (port <= 0 || (mode != "stream" && mode != "handshakes")) {
    std::fprintf(stderr, "usage: tls_loadgen --port P --mode stream|handshakes [--seconds S] [--size N] [--threads T]\n");
    return 2;
  }
  SSL_CTX* ctx = client_context();
  if (mode == "stream") {
    Conn c;
    if (!c.open(ctx, port)) {
      std::fprintf(stderr, "tls_loadgen: connect/handshake failed\n");
      return 1;
    }
    // Byte k of the stream is pattern[k % period]: a period prime to the message size, so a
    // lost, repeated or reordered piece shows.
    constexpr std::size_t period = 65521;
    std::vector<char> pattern(period + size);
    for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<char>('a' + (i % period) % 26);
    ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) | O_NONBLOCK);
    std::vector<char> in(size);
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
    std::uint64_t counted = 0;
    long mismatches = 0;
    const auto start = Clock::now();
    const auto measure_from = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(warmup));
    const auto end = measure_from + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    Clock::time_point t0{};
    bool measuring = false;
    for (Clock::time_point now = start; now < end; now = Clock::now()) {
      if (!measuring && now >= measure_from) {
        measuring = true;
        t0 = now;
      }
      bool progress = false;
      short want = 0;
      if (sent - received < window * size) {
        const std::size_t at = sent % period;
        const std::size_t n = size - sent % size;  // whole messages: each write starts one
        std::size_t w = 0;
        if (SSL_write_ex(c.ssl, pattern.data() + at, n, &w) == 1) {
          sent += w;
          progress = true;
        } else {
          const int e = SSL_get_error(c.ssl, 0);
          if (e == SSL_ERROR_WANT_WRITE) want |= POLLOUT;
          else if (e == SSL_ERROR_WANT_READ) want |= POLLIN;
          else return std::fprintf(stderr, "tls_loadgen: write failed\n"), 1;
        }
      }
      std::size_t r = 0;
      if (SSL_read_ex(c.ssl, in.data(), in.size(), &r) == 1) {
        for (std::size_t i = 0; i < r; ++i) {
          if (in[i] != pattern[(received + i) % period]) {
            ++mismatches;
            break;
          }
        }
        received += r;
        if (measuring) counted += r;
        progress = true;
      } else {
        const int e = SSL_get_error(c.ssl, 0);
        if (e == SSL_ERROR_WANT_READ) want |= POLLIN;
        else if (e == SSL_ERROR_WANT_WRITE) want |= POLLOUT;
        else return std::fprintf(stderr, "tls_loadgen: read failed\n"), 1;
      }
      if (!progress) {
        pollfd p{c.fd, want != 0 ? want : static_cast<short>(POLLIN), 0};
        ::poll(&p, 1, 100);
      }
    }
    const double took = std::chrono::duration<double>(Clock::now() - t0).count();
    ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) & ~O_NONBLOCK);
    c.close_clean();
    std::printf("{\"mode\": \"stream\", \"size\": %zu, \"window\": %zu, \"bytes\": %llu, \"seconds\": %.3f, "
                "\"mb_per_s\": %.1f, \"mismatches\": %ld}\n",
                size, window, static_cast<unsigned long long>(counted), took, static_cast<double>(counted) / took / 1e6,
                mismatches);
    return mismatches == 0 ? 0 : 1;
  }
  std::atomic<long> done{0};
  std::atomic<long> errors{0};
  std::atomic<bool> counting{false};
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      while (!stop.load()) {
        Conn c;
        char b = 'x';
        const bool ok = c.open(ctx, port) && c.write_all(&b, 1) && c.read_exactly(&b, 1) && b == 'x';
        c.close_clean();
        if (!ok) ++errors;
        else if (counting.load()) ++done;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup));  // a benchmark's warm-up, not a synchronisation
  counting = true;
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const long count = done.load();
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  stop = true;
  for (auto& w : workers) w.join();
  std::printf("{\"mode\": \"handshakes\", \"threads\": %d, \"handshakes\": %ld, \"seconds\": %.3f, "
              "\"per_s\": %.1f, \"errors\": %ld}\n",
              threads, count, took, static_cast<double>(count) / took, errors.load());
  SSL_CTX_free(ctx);
  return errors.load() == 0 ? 0 : 1;
}

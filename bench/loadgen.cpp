// loadgen: a load generator for echo servers, written on raw epoll so that it shares no code with
// sockpat and cannot flatter it. Targets 127.0.0.1 only. Run: loadgen --port P [--mode pingpong|stream|idle] ...
//
// Every connection sends a byte stream whose content is a function of (connection, offset), so every
// echoed byte is checked. Output: one human line, then one JSON line (the harness reads the JSON).
// Exit status: 0 when every connection worked and every byte matched, 1 otherwise, 2 on bad usage.
#include <arpa/inet.h>     // inet_pton
#include <netinet/in.h>    // sockaddr_in
#include <netinet/tcp.h>   // TCP_NODELAY
#include <sys/epoll.h>     // epoll_*
#include <sys/resource.h>  // getrlimit, setrlimit, getrusage
#include <sys/socket.h>    // socket, connect, send, recv
#include <unistd.h>        // close, sysconf

#include <algorithm>   // std::min, std::max
#include <atomic>      // std::atomic
#include <cerrno>      // errno
#include <chrono>      // std::chrono::steady_clock
#include <cmath>       // std::llround
#include <cstdint>     // std::uint64_t, std::int64_t
#include <cstdio>      // std::printf, std::fprintf
#include <cstdlib>     // std::strtod, std::strtoll
#include <cstring>     // std::memcmp, std::strerror
#include <filesystem>  // std::filesystem::directory_iterator: /proc/PID/task
#include <fstream>     // std::ifstream: /proc
#include <latch>       // std::latch
#include <limits>      // std::numeric_limits
#include <memory>      // std::unique_ptr
#include <mutex>       // std::mutex: the first error messages
#include <string>      // std::string
#include <thread>      // std::jthread, std::this_thread::sleep_until
#include <vector>      // std::vector

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string mode = "pingpong";
  int connections = 1;
  std::size_t size = 64;
  int depth = 1;
  double duration = 3.0;
  double warmup = 1.0;
  int threads = 1;
  long long count = 0;         // > 0: this many round trips in total, then stop (no warm-up, no duration)
  double hold = 2.0;           // idle mode: how long the connections are held
  int watch_pid = 0;           // the server: CPU time and resident memory are read from /proc/PID
  double connect_timeout = 30.0;
  double drain_timeout = 5.0;  // after the window: time for the last echoes to come back
  double time_limit = 120.0;   // count mode: the exchange must finish within this
};

[[noreturn]] void usage(const char* why) {
  if (why != nullptr) std::fprintf(stderr, "loadgen: %s\n", why);
  std::fprintf(stderr,
               "usage: loadgen --port P [--host 127.0.0.1] [--mode pingpong|stream|idle]\n"
               "         [--connections N] [--size BYTES] [--depth D] [--threads T]\n"
               "         [--duration S] [--warmup S] [--count ROUND_TRIPS] [--hold S]\n"
               "         [--watch-pid PID] [--connect-timeout S] [--drain-timeout S] [--time-limit S]\n");
  std::exit(2);
}

double number(const char* name, const char* text, double lo, double hi) {
  char* end = nullptr;
  const double v = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(v >= lo && v <= hi)) {
    usage((std::string("--") + name + " needs a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]")
              .c_str());
  }
  return v;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") usage(nullptr);
    if (i + 1 >= argc) usage(("missing value after " + a).c_str());
    const char* v = argv[++i];
    if (a == "--host") o.host = v;
    else if (a == "--port") o.port = static_cast<int>(number("port", v, 1, 65535));
    else if (a == "--mode") o.mode = v;
    else if (a == "--connections") o.connections = static_cast<int>(number("connections", v, 1, 1'000'000));
    else if (a == "--size") o.size = static_cast<std::size_t>(number("size", v, 1, 64 << 20));
    else if (a == "--depth") o.depth = static_cast<int>(number("depth", v, 1, 4096));
    else if (a == "--threads") o.threads = static_cast<int>(number("threads", v, 1, 256));
    else if (a == "--duration") o.duration = number("duration", v, 0.01, 3600);
    else if (a == "--warmup") o.warmup = number("warmup", v, 0, 3600);
    else if (a == "--count") o.count = static_cast<long long>(number("count", v, 1, 1e12));
    else if (a == "--hold") o.hold = number("hold", v, 0, 3600);
    else if (a == "--watch-pid") o.watch_pid = static_cast<int>(number("watch-pid", v, 1, 1e9));
    else if (a == "--connect-timeout") o.connect_timeout = number("connect-timeout", v, 0.01, 3600);
    else if (a == "--drain-timeout") o.drain_timeout = number("drain-timeout", v, 0.01, 3600);
    else if (a == "--time-limit") o.time_limit = number("time-limit", v, 0.01, 36000);
    else usage(("unknown option " + a).c_str());
  }
  if (o.port == 0) usage("--port is required");
  if (o.mode != "pingpong" && o.mode != "stream" && o.mode != "idle") usage("--mode is pingpong, stream or idle");
  if (o.count > 0 && o.mode == "idle") usage("--count applies to pingpong and stream");
  o.threads = std::min(o.threads, o.connections);
  return o;
}

// ---------------------------------------------------------------------------------------------
// The byte stream: byte k of connection c is pattern[(phase(c) + k) % kPeriod]. Letters only, so an
// upper-casing server shows up as mismatches. The period is a prime, so a message that is dropped,
// repeated or reordered shifts the stream by a non-multiple of it and fails the check.

constexpr std::size_t kPeriod = 4093;
constexpr std::size_t kMaxIo = 256 * 1024;  // largest single send/recv

const std::vector<char>& pattern() {
  static const std::vector<char> table = [] {
    std::vector<char> base(kPeriod);
    std::uint32_t x = 0x9e3779b9u;
    for (auto& b : base) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      b = static_cast<char>('a' + x % 26);
    }
    // Long enough that any send of up to kMaxIo bytes is one contiguous slice: no copy to send.
    std::vector<char> t(kPeriod + kMaxIo);
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = base[i % kPeriod];
    return t;
  }();
  return table;
}

const char* stream_at(std::uint32_t phase, std::uint64_t offset) {
  return pattern().data() + (phase + offset) % kPeriod;
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: log-linear, 64 sub-buckets per power of two (about 1.5 % resolution).

class Histogram {
 public:
  void add(std::int64_t ns) {
    const auto v = static_cast<std::uint64_t>(std::max<std::int64_t>(ns, 0));
    ++buckets_[index(v)];
    ++total_;
    max_ = std::max(max_, v);
  }
  void merge(const Histogram& o) {
    for (std::size_t i = 0; i < kBuckets; ++i) buckets_[i] += o.buckets_[i];
    total_ += o.total_;
    max_ = std::max(max_, o.max_);
  }
  [[nodiscard]] std::uint64_t total() const { return total_; }
  [[nodiscard]] std::uint64_t max() const { return max_; }
  /// The value below which the fraction q of samples fall (the upper edge of that bucket).
  [[nodiscard]] std::uint64_t quantile(double q) const {
    if (total_ == 0) return 0;
    const auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total_)));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += buckets_[i];
      if (seen >= std::max<std::uint64_t>(rank, 1)) return std::min(upper(i), max_);
    }
    return max_;
  }

 private:
  static constexpr std::size_t kSub = 64;
  static constexpr std::size_t kBuckets = kSub + 58 * kSub;
  static std::size_t index(std::uint64_t v) {
    if (v < kSub) return static_cast<std::size_t>(v);
    const int e = 63 - __builtin_clzll(v);  // >= 6
    const std::size_t sub = (v >> (e - 6)) & (kSub - 1);
    return std::min(kSub + static_cast<std::size_t>(e - 6) * kSub + sub, kBuckets - 1);
  }
  static std::uint64_t upper(std::size_t i) {
    if (i < kSub) return i;
    const std::size_t e = (i - kSub) / kSub + 6;
    const std::size_t sub = (i - kSub) % kSub;
    return ((kSub + sub + 1) << (e - 6)) - 1;
  }
  std::vector<std::uint64_t> buckets_ = std::vector<std::uint64_t>(kBuckets);
  std::uint64_t total_ = 0;
  std::uint64_t max_ = 0;
};

// ---------------------------------------------------------------------------------------------
// /proc readers for the watched server.

struct ProcCpu {
  bool ok = false;
  double seconds = 0;
};

ProcCpu read_cpu(int pid) {
  if (pid <= 0) return {};
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return {};
  // The command name may hold spaces and parentheses: fields are counted after the last ')'.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return {};
  std::vector<std::string> fields;
  std::size_t i = close + 2;
  while (i < line.size() && fields.size() < 13) {
    const auto j = line.find(' ', i);
    fields.push_back(line.substr(i, j - i));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  if (fields.size() < 13) return {};
  // fields[0] is field 3 (state); utime is field 14, stime field 15.
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return {true, (std::stod(fields[11]) + std::stod(fields[12])) / ticks};
}

long read_rss_kib(int pid) {
  if (pid <= 0) return -1;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

// Voluntary context switches of every thread of the process: how often the server went to sleep
// waiting for work. Threads that already exited are not counted.
long long read_sleeps(int pid) {
  if (pid <= 0) return -1;
  long long total = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream f(task.path() / "status");
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0) total += std::strtoll(line.c_str() + 24, nullptr, 10);
    }
  }
  return ec ? -1 : total;
}

double self_cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// ---------------------------------------------------------------------------------------------
// Shared run state.

struct Shared {
  explicit Shared(const Options& o, int parties) : opt(o), connected(parties), started(1) {}
  const Options& opt;
  std::latch connected;  // every worker has opened its connections (+ the main thread)
  std::latch started;    // the main thread has set the time line
  std::atomic<std::int64_t> window_begin{0};
  std::atomic<std::int64_t> window_end{kNever};
  std::atomic<std::int64_t> hold_end{0};
  std::mutex error_mutex;
  std::vector<std::string> first_errors;
  sockaddr_in target{};

  void note_error(const std::string& what) {
    const std::lock_guard lock(error_mutex);
    if (first_errors.size() < 8) first_errors.push_back(what);
  }
};

struct Conn {
  int fd = -1;
  std::uint32_t id = 0;
  std::uint32_t phase = 0;
  std::uint64_t tx = 0;                 // bytes handed to the kernel
  std::uint64_t rx = 0;                 // bytes echoed back and checked
  std::uint64_t limit = ~0ull;          // never send past this offset (count mode, end of the run)
  bool out_armed = false;
  bool alive = false;
  bool connecting = false;
  std::vector<std::int64_t> sent_ns;    // when message m's first byte was sent, at m & mask
};

struct Totals {
  Histogram latency;
  std::uint64_t round_trips = 0;  // completed inside the window
  std::uint64_t bytes = 0;        // echoed bytes received inside the window
  std::uint64_t all_round_trips = 0;
  std::uint64_t errors = 0;
  std::uint64_t mismatches = 0;
  std::uint64_t connected = 0;
  std::uint64_t alive_after_hold = 0;
};

class Worker {
 public:
  Worker(Shared& s, std::vector<std::uint32_t> ids) : s_(s), o_(s.opt), stream_(s.opt.mode == "stream") {
    ep_ = ::epoll_create1(EPOLL_CLOEXEC);
    std::size_t ring = 1;
    while (ring < static_cast<std::size_t>(o_.depth) + 2) ring <<= 1;
    mask_ = ring - 1;
    conns_.resize(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      conns_[i].id = ids[i];
      conns_[i].phase = static_cast<std::uint32_t>((ids[i] * 2654435761ull) % kPeriod);
      conns_[i].sent_ns.assign(ring, 0);
    }
    buf_.resize(kMaxIo);
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker() {
    for (auto& c : conns_) {
      if (c.fd >= 0) ::close(c.fd);
    }
    if (ep_ >= 0) ::close(ep_);
  }

  /// Timed or counted exchange (pingpong, stream), in step with the main thread through the latches.
  void run() {
    connect_all();
    s_.connected.arrive_and_wait();
    s_.started.wait();
    if (o_.count > 0) {
      exchange(s_.window_begin.load(), kNever, s_.window_begin.load() + seconds_ns(o_.time_limit), false);
    } else {
      exchange(s_.window_begin.load(), s_.window_end.load(), kNever, true);
    }
  }

  [[nodiscard]] const Totals& totals() const { return t_; }

 private:
  static std::int64_t seconds_ns(double s) { return static_cast<std::int64_t>(s * 1e9); }

  void fail(Conn& c, const std::string& what, bool mismatch = false) {
    if (!c.alive) return;
    c.alive = false;
    c.connecting = false;
    if (mismatch) ++t_.mismatches; else ++t_.errors;
    s_.note_error("connection " + std::to_string(c.id) + ": " + what);
    ::epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    c.fd = -1;
  }
  void fail_errno(Conn& c, const char* op, int err) { fail(c, std::string(op) + ": " + std::strerror(err)); }

  // Non-blocking connects, at most 256 in flight, all bounded by --connect-timeout.
  void connect_all() {
    const std::int64_t deadline = now_ns() + seconds_ns(o_.connect_timeout);
    std::size_t next = 0;
    std::size_t pending = 0;
    std::vector<epoll_event> events(256);
    while (next < conns_.size() || pending > 0) {
      while (next < conns_.size() && pending < 256) {
        Conn& c = conns_[next++];
        c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c.fd < 0) {
          c.alive = true;
          fail_errno(c, "socket", errno);
          c.fd = -1;
          continue;
        }
        c.alive = true;
        const int one = 1;
        ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        const int r = ::connect(c.fd, reinterpret_cast<const sockaddr*>(&s_.target), sizeof s_.target);
        if (r != 0 && errno != EINPROGRESS) {
          fail_errno(c, "connect", errno);
          continue;
        }
        c.connecting = true;
        epoll_event ev{};
        ev.events = EPOLLOUT;
        ev.data.u64 = static_cast<std::uint64_t>(&c - conns_.data());
        ::epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev);
        ++pending;
      }
      if (pending == 0) continue;
      const std::int64_t left = deadline - now_ns();
      if (left <= 0) break;
      const int n = ::epoll_wait(ep_, events.data(), static_cast<int>(events.size()),
                                 static_cast<int>(std::min<std::int64_t>(left / 1'000'000 + 1, 100)));
      for (int i = 0; i < n; ++i) {
        Conn& c = conns_[events[i].data.u64];
        if (!c.connecting) continue;
        --pending;
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          fail_errno(c, "connect", err);
          continue;
        }
        c.connecting = false;
        ++t_.connected;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = events[i].data.u64;
        ::epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
      }
    }
    // Connections still in the handshake when the time ran out: each is an error.
    for (auto& c : conns_) {
      if (c.connecting) fail(c, "connect: timed out");
    }
  }

  [[nodiscard]] std::uint64_t send_limit(const Conn& c) const {
    const std::uint64_t window = static_cast<std::uint64_t>(o_.depth) * o_.size;
    const std::uint64_t l = stream_ ? c.rx + window : (c.rx / o_.size) * o_.size + window;
    return std::min(l, c.limit);
  }

  void arm_out(Conn& c, bool on) {
    if (c.out_armed == on) return;
    epoll_event ev{};
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
    ev.data.u64 = static_cast<std::uint64_t>(&c - conns_.data());
    ::epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
    c.out_armed = on;
  }

  void try_send(Conn& c) {
    while (c.alive) {
      const std::uint64_t lim = send_limit(c);
      if (c.tx >= lim) {
        arm_out(c, false);
        return;
      }
      const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(lim - c.tx, kMaxIo));
      const std::int64_t t = now_ns();
      const ssize_t n = ::send(c.fd, stream_at(c.phase, c.tx), len, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          arm_out(c, true);
          return;
        }
        fail_errno(c, "send", errno);
        return;
      }
      // Stamp every message whose first byte went out in this send.
      const std::uint64_t first = (c.tx + o_.size - 1) / o_.size;
      c.tx += static_cast<std::uint64_t>(n);
      const std::uint64_t end = (c.tx + o_.size - 1) / o_.size;
      for (std::uint64_t m = first; m < end; ++m) c.sent_ns[m & mask_] = t;
      if (static_cast<std::size_t>(n) < len) {
        arm_out(c, true);
        return;
      }
    }
  }

  // Reads once; returns false when the connection failed.
  bool receive(Conn& c, std::int64_t win_begin, std::int64_t win_end) {
    const ssize_t n = ::recv(c.fd, buf_.data(), buf_.size(), 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return true;
      fail_errno(c, "recv", errno);
      return false;
    }
    if (n == 0) {
      fail(c, "the server closed the connection with " + std::to_string(c.tx - c.rx) + " bytes unanswered");
      return false;
    }
    const auto got = static_cast<std::uint64_t>(n);
    if (c.rx + got > c.tx) {
      fail(c, "the server sent " + std::to_string(c.rx + got - c.tx) + " bytes more than it was sent", true);
      return false;
    }
    // The slice of the pattern that starts at rx is contiguous for up to kMaxIo bytes.
    if (std::memcmp(buf_.data(), stream_at(c.phase, c.rx), static_cast<std::size_t>(got)) != 0) {
      std::size_t at = 0;
      const char* want = stream_at(c.phase, c.rx);
      while (at < got && buf_[at] == want[at]) ++at;
      fail(c, "echoed bytes differ at stream offset " + std::to_string(c.rx + at), true);
      return false;
    }
    const std::int64_t t = now_ns();
    const std::uint64_t done_before = c.rx / o_.size;
    c.rx += got;
    const std::uint64_t done_after = c.rx / o_.size;
    t_.all_round_trips += done_after - done_before;
    if (t >= win_begin && t < win_end) {
      t_.bytes += got;
      for (std::uint64_t m = done_before; m < done_after; ++m) {
        t_.latency.add(t - c.sent_ns[m & mask_]);
        ++t_.round_trips;
      }
    }
    return true;
  }

  [[nodiscard]] bool finished(const Conn& c) const { return !c.alive || (c.tx >= c.limit && c.rx >= c.limit); }

  // Runs the exchange. Sending stops at `stop_sending` (the partial message is completed); the
  // loop ends when every connection has its echo back, or fails the ones still waiting at `deadline`.
  void exchange(std::int64_t win_begin, std::int64_t stop_sending, std::int64_t deadline, bool timed) {
    if (!timed) {
      // Count mode: spread the round trips over the connections, the remainder to the first ones.
      const auto total = static_cast<std::uint64_t>(o_.count);
      for (auto& c : conns_) {
        const std::uint64_t per = total / static_cast<std::uint64_t>(o_.connections) +
                                  (c.id < total % static_cast<std::uint64_t>(o_.connections) ? 1 : 0);
        c.limit = c.rx + per * o_.size;
      }
    }
    for (auto& c : conns_) try_send(c);
    std::vector<epoll_event> events(512);
    bool stopping = false;
    std::int64_t drain_deadline = deadline;
    for (;;) {
      std::int64_t t = now_ns();
      if (timed && !stopping && t >= stop_sending) {
        stopping = true;
        drain_deadline = t + seconds_ns(o_.drain_timeout);
        for (auto& c : conns_) {
          if (c.alive) c.limit = (c.tx + o_.size - 1) / o_.size * o_.size;
          try_send(c);
        }
      }
      bool all_done = true;
      for (const auto& c : conns_) all_done = all_done && finished(c);
      if (all_done && (stopping || !timed)) break;
      if (t >= drain_deadline) {
        for (auto& c : conns_) {
          if (!finished(c)) fail(c, "timed out with " + std::to_string(c.tx - c.rx) + " bytes unanswered");
        }
        break;
      }
      const std::int64_t next = stopping ? drain_deadline : std::min(stop_sending, drain_deadline);
      const int ms = static_cast<int>(std::clamp<std::int64_t>((next - t) / 1'000'000 + 1, 0, 50));
      const int n = ::epoll_wait(ep_, events.data(), static_cast<int>(events.size()), ms);
      for (int i = 0; i < n; ++i) {
        Conn& c = conns_[events[i].data.u64];
        if (!c.alive) continue;
        if ((events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0) {
          if (!receive(c, win_begin, stop_sending)) continue;
        }
        try_send(c);
      }
    }
  }

 public:
  // Idle mode, step by step, driven by the main thread through these calls.
  void idle_round_trip() {
    const std::int64_t t0 = now_ns();
    for (auto& c : conns_) {
      if (c.alive) c.limit = c.rx + o_.size;
    }
    for (auto& c : conns_) try_send(c);
    std::vector<epoll_event> events(512);
    const std::int64_t deadline = t0 + seconds_ns(o_.time_limit);
    for (;;) {
      bool all_done = true;
      for (const auto& c : conns_) all_done = all_done && finished(c);
      if (all_done) break;
      const std::int64_t t = now_ns();
      if (t >= deadline) {
        for (auto& c : conns_) {
          if (!finished(c)) fail(c, "round trip timed out");
        }
        break;
      }
      const int n = ::epoll_wait(ep_, events.data(), static_cast<int>(events.size()), 50);
      for (int i = 0; i < n; ++i) {
        Conn& c = conns_[events[i].data.u64];
        if (!c.alive) continue;
        if ((events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0 && !receive(c, t0, kNever)) continue;
        try_send(c);
      }
    }
  }
  // Holds the connections until `until`; any byte or hang-up from the server meanwhile is an error.
  void idle_hold(std::int64_t until) {
    std::vector<epoll_event> events(512);
    for (;;) {
      const std::int64_t t = now_ns();
      if (t >= until) break;
      const int ms = static_cast<int>(std::min<std::int64_t>((until - t) / 1'000'000 + 1, 100));
      const int n = ::epoll_wait(ep_, events.data(), static_cast<int>(events.size()), ms);
      for (int i = 0; i < n; ++i) {
        Conn& c = conns_[events[i].data.u64];
        if (c.alive) receive(c, 0, 0);
      }
    }
  }
  void count_alive() {
    for (const auto& c : conns_) t_.alive_after_hold += c.alive ? 1 : 0;
  }
  void connect_phase() { connect_all(); }

 private:
  Shared& s_;
  const Options& o_;
  bool stream_;  // stream: the window slides by bytes; pingpong: by whole messages
  int ep_ = -1;
  std::size_t mask_ = 0;
  std::vector<Conn> conns_;
  std::vector<char> buf_;
  Totals t_;
};

// ---------------------------------------------------------------------------------------------

std::string json_escape(const std::string& s) {
  std::string out;
  for (const char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) continue;
    out += ch;
  }
  return out;
}

// Raises the soft descriptor limit towards what `needed` asks, up to the hard limit.
long raise_nofile(long needed) {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  if (static_cast<long>(r.rlim_cur) < needed) {
    r.rlim_cur = std::min<rlim_t>(r.rlim_max, static_cast<rlim_t>(needed));
    ::setrlimit(RLIMIT_NOFILE, &r);
    ::getrlimit(RLIMIT_NOFILE, &r);
  }
  return static_cast<long>(r.rlim_cur);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);

  Shared shared(o, o.threads + 1);
  shared.target.sin_family = AF_INET;
  shared.target.sin_port = htons(static_cast<std::uint16_t>(o.port));
  if (::inet_pton(AF_INET, o.host.c_str(), &shared.target.sin_addr) != 1 ||
      (ntohl(shared.target.sin_addr.s_addr) >> 24) != 127) {
    usage("--host must be an IPv4 loopback address (127.x.x.x): this tool never leaves the machine");
  }
  const long nofile = raise_nofile(o.connections + 64L);
  if (nofile < o.connections + 16L) {
    std::fprintf(stderr, "loadgen: %d connections need more descriptors than RLIMIT_NOFILE allows (%ld)\n",
                 o.connections, nofile);
    return 2;
  }

  // Connections are dealt to the threads round-robin.
  std::vector<std::vector<std::uint32_t>> ids(static_cast<std::size_t>(o.threads));
  for (int i = 0; i < o.connections; ++i) ids[static_cast<std::size_t>(i % o.threads)].push_back(static_cast<std::uint32_t>(i));
  std::vector<std::unique_ptr<Worker>> workers;
  for (auto& v : ids) workers.push_back(std::make_unique<Worker>(shared, std::move(v)));

  const long rss_before = read_rss_kib(o.watch_pid);
  const bool idle = o.mode == "idle";
  long rss_after = -1;
  ProcCpu cpu0{};
  ProcCpu cpu1{};
  long long sleeps0 = -1;
  long long sleeps1 = -1;
  double self0 = 0;
  double self1 = 0;
  std::int64_t win_begin = 0;
  std::int64_t win_end = 0;

  {
    std::vector<std::jthread> threads;
    if (idle) {
      // Each step runs on every worker thread at once; the main thread samples between steps.
      auto step = [&](auto&& fn) {
        std::vector<std::jthread> ts;
        for (auto& w : workers) ts.emplace_back([&w, &fn] { fn(*w); });
      };
      step([](Worker& w) { w.connect_phase(); });
      step([](Worker& w) { w.idle_round_trip(); });
      rss_after = read_rss_kib(o.watch_pid);
      win_begin = now_ns();
      const std::int64_t until = win_begin + static_cast<std::int64_t>(o.hold * 1e9);
      step([until](Worker& w) { w.idle_hold(until); });
      step([](Worker& w) { w.idle_round_trip(); });
      step([](Worker& w) { w.count_alive(); });
      win_end = now_ns();
    } else {
      for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
      shared.connected.arrive_and_wait();
      const std::int64_t t0 = now_ns();
      const bool counted = o.count > 0;
      win_begin = counted ? t0 : t0 + static_cast<std::int64_t>(o.warmup * 1e9);
      win_end = counted ? kNever : win_begin + static_cast<std::int64_t>(o.duration * 1e9);
      shared.window_begin = win_begin;
      shared.window_end = win_end;
      shared.started.count_down();
      const auto at = [](std::int64_t ns) { return Clock::time_point(std::chrono::nanoseconds(ns)); };
      // The samples are taken at the window's edges; the workers keep their own clocks.
      if (!counted) std::this_thread::sleep_until(at(win_begin));
      cpu0 = read_cpu(o.watch_pid);
      sleeps0 = read_sleeps(o.watch_pid);
      self0 = self_cpu_seconds();
      if (!counted) {
        std::this_thread::sleep_until(at(win_end));
        cpu1 = read_cpu(o.watch_pid);
        sleeps1 = read_sleeps(o.watch_pid);
        self1 = self_cpu_seconds();
      }
      threads.clear();  // joins
      if (counted) {
        win_end = now_ns();
        cpu1 = read_cpu(o.watch_pid);
        sleeps1 = read_sleeps(o.watch_pid);
        self1 = self_cpu_seconds();
      }
    }
  }

  Totals all;
  for (const auto& w : workers) {
    const Totals& t = w->totals();
    all.latency.merge(t.latency);
    all.round_trips += t.round_trips;
    all.bytes += t.bytes;
    all.all_round_trips += t.all_round_trips;
    all.errors += t.errors;
    all.mismatches += t.mismatches;
    all.connected += t.connected;
    all.alive_after_hold += t.alive_after_hold;
  }

  const double window_s = static_cast<double>(win_end - win_begin) / 1e9;
  const double rts = idle ? 0.0 : static_cast<double>(all.round_trips) / window_s;
  const double mbs = idle ? 0.0 : static_cast<double>(all.bytes) / window_s / 1e6;
  const double us = 1e-3;
  const double p50 = static_cast<double>(all.latency.quantile(0.50)) * us;
  const double p99 = static_cast<double>(all.latency.quantile(0.99)) * us;
  const double p999 = static_cast<double>(all.latency.quantile(0.999)) * us;
  const double pmax = static_cast<double>(all.latency.max()) * us;
  const bool have_cpu = cpu0.ok && cpu1.ok;
  const double server_cpu = have_cpu ? cpu1.seconds - cpu0.seconds : -1;
  const double cpu_per_rt_us = have_cpu && all.round_trips > 0 ? server_cpu / static_cast<double>(all.round_trips) * 1e6 : -1;
  const double sleeps_per_rt = sleeps0 >= 0 && sleeps1 >= 0 && all.round_trips > 0
                                   ? static_cast<double>(sleeps1 - sleeps0) / static_cast<double>(all.round_trips)
                                   : -1;
  const double rss_per_conn = rss_before >= 0 && rss_after >= 0 && all.connected > 0
                                  ? static_cast<double>(rss_after - rss_before) * 1024.0 / static_cast<double>(all.connected)
                                  : -1;

  for (const auto& e : shared.first_errors) std::fprintf(stderr, "loadgen: %s\n", e.c_str());

  if (idle) {
    std::printf("idle: %llu/%d connected, %llu alive after %.1f s; server RSS %ld -> %ld KiB (%.0f B per connection); "
                "errors %llu, mismatches %llu\n",
                static_cast<unsigned long long>(all.connected), o.connections,
                static_cast<unsigned long long>(all.alive_after_hold), o.hold, rss_before, rss_after, rss_per_conn,
                static_cast<unsigned long long>(all.errors), static_cast<unsigned long long>(all.mismatches));
  } else {
    std::printf("%s: %d conns x %zu B, depth %d: %.0f round trips/s, %.1f MB/s, p50 %.1f us, p99 %.1f us, "
                "p99.9 %.1f us; server CPU %.2f us/rt; errors %llu, mismatches %llu\n",
                o.mode.c_str(), o.connections, o.size, o.depth, rts, mbs, p50, p99, p999, cpu_per_rt_us,
                static_cast<unsigned long long>(all.errors), static_cast<unsigned long long>(all.mismatches));
  }
  std::printf(
      "{\"mode\":\"%s\",\"connections\":%d,\"size\":%zu,\"depth\":%d,\"threads\":%d,\"count\":%lld,"
      "\"window_s\":%.6f,\"round_trips\":%llu,\"all_round_trips\":%llu,\"round_trips_per_s\":%.1f,"
      "\"mb_per_s\":%.3f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,\"max_us\":%.2f,"
      "\"server_cpu_s\":%.3f,\"server_cpu_us_per_rt\":%.4f,\"server_sleeps_per_rt\":%.4f,\"client_cpu_s\":%.3f,"
      "\"connected\":%llu,\"alive_after_hold\":%llu,\"server_rss_before_kib\":%ld,\"server_rss_after_kib\":%ld,"
      "\"server_rss_per_conn_bytes\":%.1f,\"nofile\":%ld,\"errors\":%llu,\"mismatches\":%llu,"
      "\"first_error\":\"%s\"}\n",
      o.mode.c_str(), o.connections, o.size, o.depth, o.threads, o.count, window_s,
      static_cast<unsigned long long>(all.round_trips), static_cast<unsigned long long>(all.all_round_trips), rts, mbs,
      p50, p99, p999, pmax, server_cpu, cpu_per_rt_us, sleeps_per_rt, have_cpu ? self1 - self0 : -1.0,
      static_cast<unsigned long long>(all.connected), static_cast<unsigned long long>(all.alive_after_hold), rss_before,
      rss_after, rss_per_conn, nofile, static_cast<unsigned long long>(all.errors),
      static_cast<unsigned long long>(all.mismatches),
      json_escape(shared.first_errors.empty() ? "" : shared.first_errors.front()).c_str());
  std::fflush(stdout);

  const bool complete = all.connected == static_cast<std::uint64_t>(o.connections) &&
                        (!idle || all.alive_after_hold == all.connected) &&
                        (idle || all.round_trips > 0);
  return all.errors == 0 && all.mismatches == 0 && complete ? 0 : 1;
}

// Soak: many messages through many connections on the async server (start_server), every byte
// checked, none lost or duplicated. Opt-in (CMake -DSOCKPAT_BUILD_SOAK=ON, CTest label "soak");
// .ci/run runs it at full size. The size comes from the environment, so it is easy to run smaller:
//   SOCKPAT_SOAK_MESSAGES      messages in all        (default 1,000,000)
//   SOCKPAT_SOAK_CONNECTIONS   connections at once    (default 1,000)
//   SOCKPAT_SOAK_THREADS       client threads         (default 4)
//
// Each message is a 12-byte header (connection id, sequence number, payload length; little
// endian) and a payload that is a function of (id, sequence). The server, a handler on
// start_server's loop thread, checks each message it reads (its connection's id, the next
// sequence number, the payload) and echoes it. The clients are blocking sockpat Connections on a
// few threads of their own (not the code path under test): each sends its connections' messages
// in batches and checks every echoed byte against what it sent, in order; at the end each
// half-closes and must then read end of stream, with no byte more.
#include "sockpat.hpp"

#include <doctest/doctest.h>

#include <sys/resource.h>  // getrlimit/setrlimit: 1,000 connections need ~2,000 descriptors

#include <array>      // std::array
#include <atomic>     // std::atomic
#include <chrono>     // std::chrono::steady_clock
#include <cstdint>    // std::uint32_t
#include <cstdio>     // std::printf: the run's figures
#include <cstdlib>    // std::getenv, std::strtoul
#include <future>     // std::promise
#include <string>     // std::string
#include <thread>     // std::thread: the loop thread and the client threads
#include <vector>     // std::vector

#include "support/printing.hpp"

using namespace std::chrono_literals;

namespace {

constexpr std::size_t header_size = 12;

std::size_t env_size(const char* name, std::size_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return static_cast<std::size_t>(std::strtoull(v, nullptr, 10));
}

std::uint32_t payload_size(std::uint32_t id, std::uint32_t seq) { return (id * 31u + seq * 17u) % 200u; }

std::byte payload_byte(std::uint32_t id, std::uint32_t seq, std::uint32_t i) {
  return static_cast<std::byte>((id * 131u + seq * 7u + i * 13u) & 0xffu);
}

void put_u32(std::byte* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xffu);
}

std::uint32_t get_u32(const std::byte* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(p[i]) << (8 * i);
  return v;
}

void append_message(std::vector<std::byte>& out, std::uint32_t id, std::uint32_t seq) {
  const std::uint32_t n = payload_size(id, seq);
  const std::size_t at = out.size();
  out.resize(at + header_size + n);
  put_u32(&out[at], id);
  put_u32(&out[at + 4], seq);
  put_u32(&out[at + 8], n);
  for (std::uint32_t i = 0; i < n; ++i) out[at + header_size + i] = payload_byte(id, seq, i);
}

/// Whether `p` (header_size + payload bytes) is message `seq` of connection `id`.
bool is_message(const std::byte* p, std::size_t size, std::uint32_t id, std::uint32_t seq) {
  const std::uint32_t n = payload_size(id, seq);
  if (size != header_size + n || get_u32(p) != id || get_u32(p + 4) != seq || get_u32(p + 8) != n) return false;
  for (std::uint32_t i = 0; i < n; ++i) {
    if (p[header_size + i] != payload_byte(id, seq, i)) return false;
  }
  return true;
}

struct ServerCounts {
  std::atomic<std::uint64_t> messages{0};
  std::atomic<std::uint64_t> bad{0};  // messages out of order, of another connection, or corrupted
  std::atomic<std::uint64_t> clean_ends{0};
};

// The server's handler: reads and checks each message, echoes it. A bad message ends the
// connection (the client then fails on what it does not get back).
sockpat::Task<void> check_and_echo(sockpat::StreamReader reader, sockpat::StreamWriter writer, ServerCounts& counts) {
  std::uint32_t id = 0;
  std::uint32_t next = 0;
  for (;;) {
    std::string header;
    try {
      header = co_await reader.read_exactly(header_size);
    } catch (const sockpat::TransferError& e) {
      if (e.code() == sockpat::errc::end_of_stream && e.bytes_transferred() == 0) break;  // the client's half-close
      throw;
    }
    const auto* h = reinterpret_cast<const std::byte*>(header.data());
    if (next == 0) id = get_u32(h);
    const std::uint32_t n = get_u32(h + 8);
    if (get_u32(h) != id || get_u32(h + 4) != next || n != payload_size(id, next)) {
      counts.bad.fetch_add(1);
      co_return;
    }
    std::string message = header + co_await reader.read_exactly(n);
    if (!is_message(reinterpret_cast<const std::byte*>(message.data()), message.size(), id, next)) {
      counts.bad.fetch_add(1);
      co_return;
    }
    co_await writer.write(message);
    ++next;
    counts.messages.fetch_add(1, std::memory_order_relaxed);
  }
  counts.clean_ends.fetch_add(1);
  writer.close();
  co_await writer.wait_closed();
}

struct ClientConn {
  sockpat::TcpConnection conn;
  std::uint32_t id = 0;
  std::uint32_t total = 0;  // messages this connection carries
  std::uint32_t sent = 0;   // next sequence number to send
  std::uint32_t echoed = 0; // next sequence number expected back
};

struct ClientResult {
  std::uint64_t messages = 0;  // echoed messages checked
  std::uint64_t bytes = 0;
  std::string error;           // the first failure, empty if none
};

// One client thread: its connections take turns, each sending a batch and then reading exactly
// that batch's bytes back, so every connection has bytes in flight at once and none can fill
// the server's buffers (a batch is a few kB).
void run_client(std::vector<ClientConn>& conns, std::size_t batch, ClientResult& result) {
  std::vector<std::byte> out;
  std::vector<std::byte> in;
  try {
    for (bool busy = true; busy;) {
      busy = false;
      for (auto& c : conns) {
        if (c.sent == c.total) continue;
        out.clear();
        const std::uint32_t end = c.sent + static_cast<std::uint32_t>((std::min)(batch, std::size_t{c.total - c.sent}));
        for (std::uint32_t s = c.sent; s < end; ++s) append_message(out, c.id, s);
        c.conn.write_all(out, 30s);
        c.sent = end;
        busy = true;
      }
      for (auto& c : conns) {
        std::size_t expected = 0;
        for (std::uint32_t s = c.echoed; s < c.sent; ++s) expected += header_size + payload_size(c.id, s);
        if (expected == 0) continue;
        in.resize(expected);
        c.conn.read_exactly(in, 30s);
        std::size_t at = 0;
        for (; c.echoed < c.sent; ++c.echoed) {
          const std::size_t size = header_size + payload_size(c.id, c.echoed);
          if (!is_message(&in[at], size, c.id, c.echoed)) {
            result.error = "connection " + std::to_string(c.id) + ": echoed message " + std::to_string(c.echoed) +
                           " is wrong (lost, duplicated, reordered or corrupted; header says id " +
                           std::to_string(get_u32(&in[at])) + " seq " + std::to_string(get_u32(&in[at + 4])) + ")";
            return;
          }
          at += size;
          ++result.messages;
        }
        result.bytes += expected;
      }
    }
    // Nothing more may come back: half-close, and the server's echo must end right there.
    for (auto& c : conns) c.conn.shutdown(sockpat::Shutdown::send);
    for (auto& c : conns) {
      std::array<std::byte, 256> extra{};
      const auto n = c.conn.read_some(extra, 30s);
      if (n != 0) {
        result.error = "connection " + std::to_string(c.id) + ": " + std::to_string(n) +
                       " bytes more than were sent came back (a duplicate)";
        return;
      }
    }
  } catch (const std::exception& e) {
    result.error = e.what();
  }
}

}  // namespace

TEST_SUITE("soak" * doctest::timeout(600)) {
TEST_CASE("a million messages through 1,000 connections on start_server: every byte checked, none lost or duplicated") {
  const std::size_t messages = env_size("SOCKPAT_SOAK_MESSAGES", 1'000'000);
  const std::size_t connections = env_size("SOCKPAT_SOAK_CONNECTIONS", 1'000);
  const std::size_t threads = (std::max)(std::size_t{1}, (std::min)(env_size("SOCKPAT_SOAK_THREADS", 4), connections));
  REQUIRE(connections > 0);
  REQUIRE(messages >= connections);
  const std::size_t batch = 8;

  // Both ends of every connection live in this process, plus a margin for the loop, the
  // listener and the runtime.
  const rlim_t need = 2 * connections + 64;
  rlimit lim{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &lim) == 0);
  if (lim.rlim_cur < need) {
    if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < need) {
      FAIL("RLIMIT_NOFILE hard limit is " << lim.rlim_max << ", the soak needs " << need
                                          << " descriptors: raise it (ulimit -Hn) or set SOCKPAT_SOAK_CONNECTIONS lower");
    }
    lim.rlim_cur = need;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &lim) == 0);
  }

  ServerCounts counts;
  std::promise<sockpat::Endpoint> bound;
  std::stop_source stop;
  std::atomic<int> loop_errors{0};
  std::thread loop_thread([&] {
    sockpat::EventLoop loop;
    loop.set_exception_handler([&](std::exception_ptr e) {
      ++loop_errors;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        std::printf("server handler failed: %s\n", x.what());
      }
    });
    loop.stop_when(stop.get_token());
    sockpat::StreamServerOptions options;
    options.listen.backlog = 4096;
    auto server = loop.run_until_complete(sockpat::start_server(
        [&](sockpat::StreamReader r, sockpat::StreamWriter w) { return check_and_echo(std::move(r), std::move(w), counts); },
        "127.0.0.1", 0, options));
    bound.set_value(server.local_endpoint());
    loop.run();
    server.close();
    loop.run_until_complete(server.wait_closed());
  });
  const auto local = bound.get_future().get();

  const auto start = std::chrono::steady_clock::now();
  std::vector<std::vector<ClientConn>> groups(threads);
  std::size_t opened = 0;
  std::string connect_error;
  try {
    for (std::size_t id = 0; id < connections; ++id) {
      ClientConn c;
      c.conn = sockpat::TcpConnection::connect(local, 10s);
      c.id = static_cast<std::uint32_t>(id);
      c.total = static_cast<std::uint32_t>(messages / connections + (id < messages % connections ? 1 : 0));
      groups[id % threads].push_back(std::move(c));
      ++opened;
    }
  } catch (const std::exception& e) {
    connect_error = e.what();
  }
  const auto connected = std::chrono::steady_clock::now();
  std::vector<ClientResult> results(threads);
  if (connect_error.empty()) {
    std::vector<std::thread> clients;
    for (std::size_t t = 0; t < threads; ++t) clients.emplace_back(run_client, std::ref(groups[t]), batch, std::ref(results[t]));
    for (auto& t : clients) t.join();
  }
  const auto done = std::chrono::steady_clock::now();
  groups.clear();  // closes the clients' ends
  stop.request_stop();
  loop_thread.join();

  std::uint64_t echoed = 0;
  std::uint64_t bytes = 0;
  for (const auto& r : results) {
    CHECK_MESSAGE(r.error.empty(), r.error);
    echoed += r.messages;
    bytes += r.bytes;
  }
  const double seconds = std::chrono::duration<double>(done - start).count();
  std::printf("soak: %zu connections (%zu opened), %zu client threads: %llu messages (%llu bytes) echoed and checked "
              "in %.2f s (connecting %.2f s); server checked %llu, bad %llu, clean ends %llu\n",
              connections, opened, threads, static_cast<unsigned long long>(echoed), static_cast<unsigned long long>(bytes),
              seconds, std::chrono::duration<double>(connected - start).count(),
              static_cast<unsigned long long>(counts.messages.load()), static_cast<unsigned long long>(counts.bad.load()),
              static_cast<unsigned long long>(counts.clean_ends.load()));
  REQUIRE_MESSAGE(connect_error.empty(), connect_error);
  CHECK(opened == connections);
  CHECK(echoed == messages);
  CHECK(counts.messages.load() == messages);
  CHECK(counts.bad.load() == 0);
  CHECK(counts.clean_ends.load() == connections);
  CHECK(loop_errors.load() == 0);
}
}

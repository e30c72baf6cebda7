// A steady-state echo makes no heap allocation per message: this executable replaces the
// global operator new to count them.
#include "sockpat/event_loop.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

#include "sockpat/listener.hpp"
#include "sockpat/streams.hpp"

namespace {
std::atomic<std::size_t> allocations{0};
}  // namespace

// Not inlined: once g++ inlines a replacement into a delete-expression it sees std::free given
// a pointer from operator new and, at -O2, warns (-Wmismatched-new-delete) although the pair
// is ours and matched.
[[gnu::noinline]] void* operator new(std::size_t n) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }

using namespace std::chrono_literals;

namespace {

constexpr int warm_up = 100;
constexpr int measured = 2000;

sockpat::Task<void> echo(sockpat::TcpConnection conn) {
  std::array<std::byte, 256> buf{};
  for (;;) {
    const auto n = co_await conn.async_read_some(buf);
    if (n == 0) co_return;
    co_await conn.async_write_all(std::span<const std::byte>(buf.data(), n));
  }
}

sockpat::Task<void> stream_echo(sockpat::StreamReader reader, sockpat::StreamWriter writer) {
  std::array<std::byte, 256> buf{};
  for (;;) {
    const auto n = co_await reader.read_some(buf);
    if (n == 0) co_return;
    co_await writer.write(std::span<const std::byte>(buf.data(), n));
  }
}

/// Ping-pongs 64-byte messages; returns the allocations made during the measured ones.
sockpat::Task<std::size_t> ping_pong(sockpat::TcpConnection& conn) {
  std::array<std::byte, 64> out{};
  std::array<std::byte, 64> in{};
  std::size_t before = 0;
  for (int i = 0; i < warm_up + measured; ++i) {
    if (i == warm_up) before = allocations.load();
    out[0] = static_cast<std::byte>(i);
    co_await conn.async_write_all(out);
    co_await conn.async_read_exactly(in);
    CHECK(in == out);
  }
  co_return allocations.load() - before;
}

}  // namespace

TEST_SUITE("event_loop_alloc") {
TEST_CASE("the counter sees allocations at all") {
  const auto before = allocations.load();
  // A call of the function, not a new-expression: an optimiser may drop a new/delete pair of
  // expressions (clang does at -O1 and above), never a call of a replaceable operator new.
  void* p = ::operator new(sizeof(int));
  ::operator delete(p);
  CHECK(allocations.load() == before + 1);
}

TEST_CASE("a steady-state echo over async_ members makes no heap allocation per message" * doctest::timeout(60)) {
  sockpat::EventLoop loop;
  auto listener = sockpat::TcpListener::bind({"127.0.0.1", 0});
  const auto made = loop.run_until_complete([&]() -> sockpat::Task<std::size_t> {
    auto client = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
    sockpat::create_task(echo(co_await listener.async_accept(5s)));
    co_return co_await ping_pong(client);
  }());
  CHECK(made == 0);
}

TEST_CASE("a steady-state echo through StreamReader/StreamWriter makes no heap allocation per message" *
          doctest::timeout(60)) {
  sockpat::EventLoop loop;
  const auto made = loop.run_until_complete([&]() -> sockpat::Task<std::size_t> {
    auto server = co_await sockpat::start_server(stream_echo, "127.0.0.1", 0);
    auto client = co_await sockpat::TcpConnection::async_connect(server.local_endpoint(), 5s);
    co_return co_await ping_pong(client);
  }());
  CHECK(made == 0);
}
}

// The transport hook under StreamReader / StreamWriter (detail::StreamTransport), proven with a
// test-only transport that needs no TLS: XOR-masked frames with an opening and an ending.
#include "sockpat/streams.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "sockpat/listener.hpp"
#include "sockpat/sync.hpp"
#include "support/loopback.hpp"
#include "support/loop.hpp"

using namespace std::chrono_literals;

namespace {

// Wire: frames of [kind][length, 2 bytes big-endian][payload XOR 0x5a]. Kinds: 'H' the opening
// (each side sends one, then waits for the peer's, whose payload must be "hello"), 'D' data,
// 'E' the ending. The stream's bytes never appear on the wire as they are.
constexpr std::byte mask{0x5a};
constexpr std::size_t max_payload = 1000;

std::string frame(char kind, std::string_view payload) {
  std::string out{kind, static_cast<char>(payload.size() >> 8), static_cast<char>(payload.size() & 0xff)};
  for (char c : payload) out += static_cast<char>(static_cast<std::byte>(c) ^ mask);
  return out;
}

class FrameTransport final : public sockpat::detail::StreamTransport {
 public:
  bool open(std::error_code& ec) noexcept override {
    if (!hello_sent_) {
      put('H', sockpat::detail::bytes_of(std::string_view("hello")));
      hello_sent_ = true;
    }
    while (!hello_seen_) {
      auto f = next_frame(ec);
      if (ec || !f) return false;
      if (f->first != 'H' || f->second != "hello") {
        ec = make_error_code(sockpat::errc::malformed_frame);
        why_ = "expected the peer's hello";
        return false;
      }
      hello_seen_ = true;
    }
    return true;
  }
  std::size_t feed(std::span<const std::byte> wire) noexcept override {
    const std::size_t n = std::min(wire.size(), input_room());
    in_.insert(in_.end(), wire.begin(), wire.begin() + static_cast<std::ptrdiff_t>(n));
    return n;
  }
  [[nodiscard]] std::size_t input_room() const noexcept override {  // bounded, as a TLS engine's is
    return in_.size() >= input_limit ? 0 : input_limit - in_.size();
  }
  static constexpr std::size_t input_limit = 4096;
  std::size_t decode(std::span<std::byte> out, std::error_code& ec) noexcept override {
    if (pending_.empty() && !ended_) {
      auto f = next_frame(ec);
      if (ec || !f) return 0;
      if (f->first == 'E') {
        ended_ = true;
        return 0;
      }
      if (f->first != 'D') {
        ec = make_error_code(sockpat::errc::malformed_frame);
        return 0;
      }
      pending_ = std::move(f->second);
    }
    const std::size_t n = std::min(out.size(), pending_.size());
    std::memcpy(out.data(), pending_.data(), n);
    pending_.erase(0, n);
    return n;
  }
  std::size_t encode(std::span<const std::byte> plain, std::error_code&) noexcept override {
    const std::size_t n = std::min(plain.size(), max_payload);
    put('D', plain.first(n));
    ++frames_encoded;
    return n;
  }
  void end_output(std::error_code&) noexcept override { put('E', {}); }
  void input_ended(std::error_code& ec) noexcept override {
    if (!ended_) ec = std::make_error_code(std::errc::protocol_error);  // "truncated"
  }
  [[nodiscard]] bool input_closed() const noexcept override { return ended_; }
  [[nodiscard]] std::span<const std::byte> output() const noexcept override { return out_; }
  void consume_output(std::size_t n) noexcept override { out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(n)); }
  [[nodiscard]] std::string failure_text() const override { return why_; }
  [[nodiscard]] const char* opening_name() const noexcept override { return "frame opening"; }

  std::size_t frames_encoded = 0;

 private:
  void put(char kind, std::span<const std::byte> payload) {
    out_.push_back(static_cast<std::byte>(kind));
    out_.push_back(static_cast<std::byte>(payload.size() >> 8));
    out_.push_back(static_cast<std::byte>(payload.size() & 0xff));
    for (std::byte b : payload) out_.push_back(b ^ mask);
  }
  std::optional<std::pair<char, std::string>> next_frame(std::error_code& ec) {
    if (in_.size() < 3) return std::nullopt;
    const std::size_t n = (std::to_integer<std::size_t>(in_[1]) << 8) | std::to_integer<std::size_t>(in_[2]);
    if (n > max_payload) {
      ec = make_error_code(sockpat::errc::frame_too_large);
      why_ = "not a frame";
      return std::nullopt;
    }
    if (in_.size() < 3 + n) return std::nullopt;
    std::pair<char, std::string> f{static_cast<char>(in_[0]), std::string(n, '\0')};
    for (std::size_t i = 0; i < n; ++i) f.second[i] = static_cast<char>(in_[3 + i] ^ mask);
    in_.erase(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(3 + n));
    return f;
  }
  std::vector<std::byte> in_;
  std::vector<std::byte> out_;
  std::string pending_;
  std::string why_;
  bool hello_sent_ = false;
  bool hello_seen_ = false;
  bool ended_ = false;
};

std::unique_ptr<sockpat::detail::StreamTransport> make_frame_transport() { return std::make_unique<FrameTransport>(); }

sockpat::StreamServer framed_server(sockpat::StreamHandler handler, sockpat::StreamServerOptions options = {},
                                    std::chrono::milliseconds opening_timeout = 5s) {
  return sockpat::detail::start_stream_server<>(std::move(handler), "127.0.0.1", 0, std::move(options),
                                                [opening_timeout](sockpat::detail::StreamState& stream) {
                                                  return stream.open_transport(make_frame_transport(), opening_timeout);
                                                });
}

// A client stream over the frame transport, opened within 5 s.
sockpat::Task<std::pair<sockpat::StreamReader, sockpat::StreamWriter>> framed_client(int port,
                                                                                     sockpat::StreamOptions o = {}) {
  auto streams = co_await sockpat::open_connection("127.0.0.1", port, 5s, o);
  co_await sockpat::detail::StreamAccess::of(streams.second)->open_transport(make_frame_transport(), 5s);
  co_return streams;
}

sockpat::Task<void> echo(sockpat::StreamReader r, sockpat::StreamWriter w) {
  for (int i = 0; i < 1'000'000; ++i) {
    const auto chunk = co_await r.read_chunk();
    if (chunk.empty()) break;
    co_await w.write(chunk);
  }
  w.close();
  co_await w.wait_closed();
}

// Reads from a raw connection until `want` bytes arrived or the peer ended.
sockpat::Task<std::string> read_raw(sockpat::TcpConnection& c, std::size_t want) {
  std::string got;
  std::array<std::byte, 4096> buf{};
  while (got.size() < want) {
    const auto n = co_await c.async_read_some(buf, 5s);
    if (n == 0) break;
    got.append(reinterpret_cast<const char*>(buf.data()), n);
  }
  co_return got;
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7 + i / 251) & 0xff);
  return s;
}

// Writes `data` in pieces of `piece` bytes (a task of its own: a lambda's captures would die
// with the lambda before the coroutine ends).
sockpat::Task<void> write_in_pieces(sockpat::StreamWriter& writer, const std::string& data, std::size_t piece) {
  for (std::size_t at = 0; at < data.size(); at += piece) co_await writer.write(std::string_view(data).substr(at, piece));
  writer.write_eof();
}

}  // namespace

TEST_SUITE("stream transport") {
TEST_CASE("a stream over a transport echoes 4 MiB byte-exact, through every read form" * doctest::timeout(60)) {
  test::run_bounded(
      []() -> sockpat::Task<void> {
        auto server = framed_server(echo);
        auto streams = co_await framed_client(server.local_endpoint().port());  // a pair: the group's body uses it
        auto& reader = streams.first;
        auto& writer = streams.second;
        co_await writer.write("first line\nsecond line\n");
        CHECK(co_await reader.read_line() == "first line\n");
        CHECK(co_await reader.read_exactly(7) == "second ");
        std::array<std::byte, 3> some{};
        CHECK(co_await reader.read_some(some) == 3);
        CHECK(co_await reader.read(100) == "e\n");
        const std::string big = pattern(4 << 20);
        std::string back;
        co_await sockpat::with_task_group([&](sockpat::TaskGroup& group) -> sockpat::Task<void> {
          (void)group.create_task(write_in_pieces(writer, big, 100'000));
          for (int i = 0; i < 100'000; ++i) {
            const auto chunk = co_await reader.read_chunk();
            if (chunk.empty()) break;
            back.append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
          }
        });
        CHECK(back.size() == big.size());
        CHECK(back == big);
        CHECK(reader.at_eof());  // the server's ending arrived: a clean end
        server.close();
        co_await server.wait_closed();
      },
      50s);
}

TEST_CASE("the bytes on the wire are the transport's, not the stream's" * doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  test::run_bounded([&]() -> sockpat::Task<void> {
    auto raw = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
    auto [reader, writer] = sockpat::make_streams(co_await listener.async_accept(5s));
    // The raw peer's opening and a first data frame arrive in one segment with the opening.
    co_await raw.async_write_all(frame('H', "hello") + frame('D', "early"));
    co_await sockpat::detail::StreamAccess::of(writer)->open_transport(make_frame_transport(), 5s);
    CHECK(co_await read_raw(raw, 8) == frame('H', "hello"));
    CHECK(co_await reader.read(100) == "early");
    co_await writer.write("plain text");
    CHECK(co_await read_raw(raw, 13) == frame('D', "plain text"));
  });
}

TEST_CASE("a peer that ends with its ending is a clean end; one that just closes is an error, not at_eof" *
          doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  for (const bool clean : {true, false}) {
    CAPTURE(clean);
    test::run_bounded([&]() -> sockpat::Task<void> {
      auto raw = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
      auto [reader, writer] = sockpat::make_streams(co_await listener.async_accept(5s));
      std::string wire = frame('H', "hello") + frame('D', "last words");
      if (clean) wire += frame('E', "");  // (a temporary in a conditional inside co_await: GCC 12 frees it twice)
      co_await raw.async_write_all(wire);
      raw.shutdown();  // not close(): a reset could drop the bytes before they are read
      co_await sockpat::detail::StreamAccess::of(writer)->open_transport(make_frame_transport(), 5s);
      CHECK(co_await reader.read(100) == "last words");
      if (clean) {
        CHECK(co_await reader.read(100) == "");
        CHECK(reader.at_eof());
      } else {
        std::error_code got;
        try {
          (void)co_await reader.read(100);
        } catch (const std::system_error& e) {
          got = e.code();
        }
        CHECK(got == std::errc::protocol_error);
        CHECK_FALSE(reader.at_eof());
      }
    });
  }
}

TEST_CASE("close sends the ending and waits for the peer's, within the close timeout" * doctest::timeout(30)) {
  auto listener = test::loopback_listener();
  for (const bool peer_answers : {true, false}) {
    CAPTURE(peer_answers);
    test::run_bounded([&]() -> sockpat::Task<void> {
      auto raw = co_await sockpat::TcpConnection::async_connect(listener.local_endpoint(), 5s);
      sockpat::StreamOptions o;
      o.close_timeout = 300ms;
      auto [reader, writer] = sockpat::make_streams(co_await listener.async_accept(5s), o);
      co_await raw.async_write_all(frame('H', "hello"));
      co_await sockpat::detail::StreamAccess::of(writer)->open_transport(make_frame_transport(), 5s);
      CHECK(co_await read_raw(raw, 8) == frame('H', "hello"));
      co_await writer.write("bye");
      writer.close();
      // Our ending follows the data, then the end of stream (the write side is shut).
      CHECK(co_await read_raw(raw, 100) == frame('D', "bye") + frame('E', ""));
      CHECK(writer.is_closing());
      const auto start = std::chrono::steady_clock::now();
      if (peer_answers) co_await raw.async_write_all(frame('D', "ignored") + frame('E', ""));
      co_await writer.wait_closed();
      const auto took = std::chrono::steady_clock::now() - start;
      if (peer_answers) {
        CHECK(took < 250ms);  // closed at the peer's ending, not at the timeout
      } else {
        CHECK(took >= 200ms);  // waited for an ending that never came, up to the bound
      }
    });
  }
}

TEST_CASE("a client that stops halfway through the opening is dropped at the opening timeout; the next is served" *
          doctest::timeout(30)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    auto server = framed_server(echo, {}, 200ms);
    const int port = server.local_endpoint().port();
    auto silent = co_await sockpat::TcpConnection::async_connect("127.0.0.1", port, 5s);
    CHECK(co_await read_raw(silent, 100) == frame('H', "hello"));  // then the server drops it: end of stream
    CHECK(server.stats().timed_out == 1);
    CHECK(server.stats().handler_errors == 0);
    auto [reader, writer] = co_await framed_client(port);
    co_await writer.write("next\n");
    CHECK(co_await reader.read_line() == "next\n");
    server.close();
    co_await server.wait_closed();
  });
}

TEST_CASE("a failed opening is reported with its reason, and the server serves the next client" *
          doctest::timeout(30)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    std::string reported;
    sockpat::Event failed;
    sockpat::StreamServerOptions options;
    options.on_error = [&](std::exception_ptr e, const sockpat::Endpoint&) {
      try {
        std::rethrow_exception(e);
      } catch (const std::system_error& x) {
        reported = x.what();
      }
      failed.set();
    };
    auto server = framed_server(echo, options);
    const int port = server.local_endpoint().port();
    auto garbage = co_await sockpat::TcpConnection::async_connect("127.0.0.1", port, 5s);
    co_await garbage.async_write_all(std::string("GET / HTTP/1.0\r\n\r\n"));
    co_await sockpat::wait_for(failed.wait(), 5s);
    CHECK(reported.find("frame opening with 127.0.0.1:") != std::string::npos);
    CHECK(reported.find("not a frame") != std::string::npos);
    CHECK(server.stats().handler_errors == 1);
    auto [reader, writer] = co_await framed_client(port);
    co_await writer.write("still serving\n");
    CHECK(co_await reader.read_line() == "still serving\n");
    server.close();
    co_await server.wait_closed();
  });
}

TEST_CASE("an opening over a plaintext exchange keeps what was buffered (STARTTLS), on both sides" *
          doctest::timeout(30)) {
  test::run_bounded([]() -> sockpat::Task<void> {
    auto server = co_await sockpat::start_server(
        [](sockpat::StreamReader r, sockpat::StreamWriter w) -> sockpat::Task<void> {
          CHECK(co_await r.read_line() == "STARTTLS\n");
          co_await w.write("go ahead\n");
          co_await sockpat::detail::StreamAccess::of(w)->open_transport(make_frame_transport(), 5s);
          co_await echo(std::move(r), std::move(w));
        },
        "127.0.0.1", 0);
    auto [reader, writer] = co_await sockpat::open_connection("127.0.0.1", server.local_endpoint().port(), 5s);
    co_await writer.write("STARTTLS\n");
    CHECK(co_await reader.read_line() == "go ahead\n");
    co_await sockpat::detail::StreamAccess::of(writer)->open_transport(make_frame_transport(), 5s);
    co_await writer.write("over the transport\n");
    CHECK(co_await reader.read_line() == "over the transport\n");
    writer.close();
    co_await writer.wait_closed();
    server.close();
    co_await server.wait_closed();
  });
}

TEST_CASE("a plain stream has no transport" * doctest::timeout(30)) {
  auto pair = test::connected_pair();
  auto [reader, writer] = sockpat::make_streams(std::move(pair.server));
  CHECK(sockpat::detail::StreamAccess::of(writer)->transport() == nullptr);
}
}

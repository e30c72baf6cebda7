#include "sockpat/framing.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <atomic>
#include <chrono>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/loopback.hpp"

using namespace std::chrono_literals;
using sockpat::DelimiterFraming;
using sockpat::LengthPrefixFraming;

namespace {

template <class F>
std::string encode_all(const F& framing, const std::vector<std::string>& payloads) {
  std::string wire;
  for (const auto& p : payloads) wire += sockpat::encode_frame(framing, p);
  return wire;
}

/// Feeds `wire` in the given pieces and collects every frame the decoder yields.
template <class F>
std::vector<std::string> decode_pieces(const F& framing, std::string_view wire, const std::vector<std::size_t>& cuts) {
  sockpat::Decoder<F> decoder(framing);
  std::vector<std::string> frames;
  std::size_t at = 0;
  auto drain = [&] {
    std::error_code ec;
    while (auto f = decoder.next(ec)) frames.emplace_back(*f);
    REQUIRE_FALSE(ec);
  };
  for (const auto cut : cuts) {
    decoder.feed(wire.substr(at, cut - at));
    at = cut;
    drain();
  }
  decoder.feed(wire.substr(at));
  drain();
  CHECK_FALSE(decoder.finish());
  return frames;
}

const std::vector<std::string> payloads = {"first", "", "a longer third frame", std::string(300, 'x'), "z"};

}  // namespace

TEST_SUITE("framing") {
TEST_CASE("length-prefixed frames round trip for every prefix width") {
  for (const std::size_t width : {1u, 2u, 4u, 8u}) {
    CAPTURE(width);
    const LengthPrefixFraming framing(1000, width);
    auto small = payloads;
    if (width == 1) small[3].resize(255);  // a 1-byte prefix cannot say 300
    const auto wire = encode_all(framing, small);
    CHECK(wire.size() == 5 * width + 5 + 0 + 20 + small[3].size() + 1);
    CHECK(decode_pieces(framing, wire, {}) == small);
  }
}

TEST_CASE("the length prefix is big-endian") {
  const auto wire = sockpat::encode_frame(LengthPrefixFraming(), std::string(0x0102, 'a'));
  CHECK(wire.substr(0, 4) == std::string("\0\0\x01\x02", 4));
  const auto wide = sockpat::encode_frame(LengthPrefixFraming(1000, 8), "abc");
  CHECK(wide.substr(0, 8) == std::string("\0\0\0\0\0\0\0\x03", 8));
}

TEST_CASE("lines, CRLF lines and any delimiter round trip") {
  CHECK(decode_pieces(DelimiterFraming::lines(), encode_all(DelimiterFraming::lines(), payloads), {}) == payloads);
  CHECK(decode_pieces(DelimiterFraming::lines(), "one\r\ntwo\nthree\r\n", {}) ==
        std::vector<std::string>{"one", "two", "three"});
  const DelimiterFraming crlf("\r\n");
  CHECK(decode_pieces(crlf, "a\nb\r\nc\r\n", {}) == std::vector<std::string>{"a\nb", "c"});
  const DelimiterFraming boundary("--END--");
  CHECK(decode_pieces(boundary, encode_all(boundary, payloads), {}) == payloads);
  const DelimiterFraming nul(std::string(1, '\0'));
  CHECK(decode_pieces(nul, std::string("x\0\0y\0", 5), {}) == std::vector<std::string>{"x", "", "y"});
}

TEST_CASE("frames split at every byte boundary decode the same") {
  const DelimiterFraming boundary("<=>", 1000);
  const LengthPrefixFraming prefixed(1000, 2);
  const auto check_all_splits = [](const auto& framing) {
    const auto wire = encode_all(framing, payloads);
    for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
      CAPTURE(cut);
      REQUIRE(decode_pieces(framing, wire, {cut}) == payloads);
    }
    // And one byte at a time.
    std::vector<std::size_t> every;
    for (std::size_t i = 1; i < wire.size(); ++i) every.push_back(i);
    CHECK(decode_pieces(framing, wire, every) == payloads);
  };
  check_all_splits(DelimiterFraming::lines(1000));
  check_all_splits(boundary);
  check_all_splits(prefixed);
  check_all_splits(LengthPrefixFraming(1000, 8));
}

TEST_CASE("random frames cut at random places decode to what was encoded") {
  std::mt19937 random(20261122);  // fixed: a failure can be replayed
  // Any bytes at all, but for the delimiter in a delimited frame.
  const auto random_payload = [&](std::size_t max, bool avoid_nul) {
    std::string p(std::uniform_int_distribution<std::size_t>(0, max)(random), '\0');
    for (auto& c : p) c = static_cast<char>(std::uniform_int_distribution<int>(avoid_nul ? 1 : 0, 255)(random));
    return p;
  };
  for (int round = 0; round < 200; ++round) {
    CAPTURE(round);
    const bool prefixed = round % 2 == 0;
    const LengthPrefixFraming lengths(500, std::size_t{1} << (round / 2 % 4));
    const DelimiterFraming nul(std::string(1, '\0'), 500);
    std::vector<std::string> sent;
    for (int i = 0; i < 20; ++i) sent.push_back(random_payload(lengths.max_frame_size(), !prefixed));
    const auto wire = prefixed ? encode_all(lengths, sent) : encode_all(nul, sent);
    std::vector<std::size_t> cuts;
    for (std::size_t at = 0; at < wire.size(); at += std::uniform_int_distribution<std::size_t>(1, 700)(random)) {
      cuts.push_back(at);
    }
    REQUIRE((prefixed ? decode_pieces(lengths, wire, cuts) : decode_pieces(nul, wire, cuts)) == sent);
  }
}

TEST_CASE("a line longer than the maximum is frame_too_large and its bytes stay buffered") {
  sockpat::LineDecoder decoder(DelimiterFraming::lines(8));
  decoder.feed("12345678\n");  // exactly the maximum is fine
  CHECK(decoder.next() == "12345678");
  decoder.feed("1234567\r\n");  // a stripped '\r' does not count
  CHECK(decoder.next() == "1234567");
  decoder.feed("123456789");  // one byte too many and no end in sight
  std::error_code ec;
  CHECK_FALSE(decoder.next(ec));
  CHECK(ec == sockpat::errc::frame_too_large);
  CHECK(decoder.buffered() == "123456789");
  CHECK_THROWS_WITH_AS((void)decoder.next(), doctest::Contains("frame too large"), std::system_error);
  // The caller may drop the bad bytes and go on.
  decoder.discard(decoder.buffered().size());
  decoder.feed("ok\n");
  CHECK(decoder.next() == "ok");
}

TEST_CASE("a too-long line is caught before its delimiter arrives, with a bounded buffer") {
  sockpat::LineDecoder decoder(DelimiterFraming::lines(100));
  std::error_code ec;
  std::size_t fed = 0;
  while (!ec && fed < 10000) {
    decoder.feed(std::string(7, 'a'));
    fed += 7;
    (void)decoder.next(ec);
  }
  CHECK(ec == sockpat::errc::frame_too_large);
  CHECK(fed <= 100 + 2 + 7);
}

TEST_CASE("a length prefix over the maximum fails as soon as the prefix arrives") {
  sockpat::LengthPrefixDecoder decoder(LengthPrefixFraming(16));
  decoder.feed(std::string("\0\0\0\x10", 4));  // 16: allowed
  std::error_code ec;
  CHECK_FALSE(decoder.next(ec));
  CHECK_FALSE(ec);
  CHECK(decoder.needed() == 16);
  decoder.feed(std::string(16, 'b'));
  CHECK(decoder.next() == std::string(16, 'b'));

  decoder.feed(std::string("\x7f\xff\xff\xff", 4));  // 2 GiB announced: no body needed to say no
  CHECK_FALSE(decoder.next(ec));
  CHECK(ec == sockpat::errc::frame_too_large);
  CHECK(decoder.buffered() == std::string("\x7f\xff\xff\xff", 4));

  sockpat::LengthPrefixDecoder wide(LengthPrefixFraming(1 << 20, 8));
  wide.feed(std::string("\xff\xff\xff\xff\xff\xff\xff\xff", 8));
  CHECK_FALSE(wide.next(ec));
  CHECK(ec == sockpat::errc::frame_too_large);
}

TEST_CASE("a truncated frame is end_of_stream at finish, with the partial bytes kept") {
  sockpat::LengthPrefixDecoder decoder(LengthPrefixFraming{});
  decoder.feed(std::string("\0\0\0\x05" "abc", 7));
  std::error_code ec;
  CHECK_FALSE(decoder.next(ec));
  CHECK_FALSE(ec);
  CHECK(decoder.needed() == 2);
  CHECK(decoder.finish() == sockpat::errc::end_of_stream);
  CHECK(decoder.take() == std::string("\0\0\0\x05" "abc", 7));
  CHECK_FALSE(decoder.finish());

  sockpat::LineDecoder lines(DelimiterFraming::lines());
  lines.feed("no newline");
  CHECK_FALSE(lines.next(ec));
  CHECK(lines.finish() == sockpat::errc::end_of_stream);
}

TEST_CASE("encoding rejects what cannot be framed") {
  sockpat::FrameParts parts;
  CHECK(DelimiterFraming::lines().encode("two\nlines", parts) == sockpat::errc::malformed_frame);
  CHECK(DelimiterFraming::lines(3).encode("four", parts) == sockpat::errc::frame_too_large);
  CHECK(LengthPrefixFraming(3).encode("four", parts) == sockpat::errc::frame_too_large);
  CHECK(LengthPrefixFraming(100000, 1).max_frame_size() == 255);
  CHECK(LengthPrefixFraming(100000, 2).max_frame_size() == 65535);
  CHECK_THROWS_AS(LengthPrefixFraming(10, 3), std::invalid_argument);
  CHECK_THROWS_AS(DelimiterFraming(""), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)sockpat::encode_frame(DelimiterFraming::lines(), "a\nb"), doctest::Contains("malformed"),
                       std::system_error);
}
}

TEST_SUITE("framed connection") {
// The contract of read_line and read_until (docs/patterns.md, "Lines and frames"), asserted
// here for FramedConnection and in unit/streams.cpp for StreamReader, line for line.
TEST_CASE("read_line and read_until keep the delimiter, end with nullopt, and fail alike in both APIs" *
          doctest::timeout(60)) {
  auto ab = test::local_pair();  // clang 14 cannot capture structured bindings
  auto& a = ab.first;
  auto& b = ab.second;
  sockpat::FramedConnection framed(b, {.max_line = 8});
  a.write_all("one\r\ntwo\nHEAD\r\n\r\n12345678\n", 5s);
  CHECK(framed.read_line(5s) == "one\r\n");
  CHECK(framed.read_line(5s) == "two\n");
  CHECK(framed.read_until("\r\n\r\n", 5s) == "HEAD\r\n\r\n");
  CHECK(framed.read_line(5s) == "12345678\n");  // the limit counts the line, not its delimiter
  // Past the limit: frame_too_large, every byte kept.
  a.write_all("123456789\n", 5s);
  CHECK_THROWS_WITH_AS((void)framed.read_line(5s), doctest::Contains("frame too large"), std::system_error);
  CHECK(framed.buffered().starts_with("12345678"));
  framed.discard(8);
  CHECK(framed.read_line(5s) == "9\n");
  // A partial line at the end: end_of_stream carrying its bytes, which stay readable.
  a.write_all("tail", 5s);
  a.shutdown();
  try {
    (void)framed.read_line(5s);
    FAIL("expected end_of_stream");
  } catch (const sockpat::TransferError& e) {
    CHECK(e.code() == sockpat::errc::end_of_stream);
    CHECK(e.bytes_transferred() == 4);
  }
  CHECK(framed.buffered() == "tail");
  (void)framed.take_buffered();
  // A clean end: nullopt from both.
  CHECK(framed.read_line(5s) == std::nullopt);
  CHECK(framed.read_until("\r\n", 5s) == std::nullopt);
}

TEST_CASE("read_line returns each line and keeps the bytes read past it" * doctest::timeout(60)) {
  auto ab = test::local_pair();  // clang 14 cannot capture structured bindings
  auto& a = ab.first;
  auto& b = ab.second;
  sockpat::FramedConnection framed(b);
  a.write_all("one\r\ntwo\nthree", 5s);
  CHECK(framed.read_line(5s) == "one\r\n");
  CHECK(framed.buffered() == "two\nthree");
  CHECK(framed.read_line(5s) == "two\n");
  a.write_all(" and more\n", 5s);
  std::error_code ec;
  CHECK(framed.read_line(5s, ec) == "three and more\n");
  CHECK_FALSE(ec);
  a.shutdown();
  CHECK(framed.read_line(5s) == std::nullopt);  // a clean end of stream is not an error
  CHECK(framed.read_line(5s, ec) == std::nullopt);
  CHECK_FALSE(ec);
}

TEST_CASE("a line read by read_line is written back by write_line as it came, \\n or \\r\\n" * doctest::timeout(60)) {
  auto ab = test::local_pair();  // clang 14 cannot capture structured bindings
  sockpat::FramedConnection to(ab.second);
  ab.first.write_all("plain\ncrlf\r\n", 5s);
  for (int i = 0; i < 2; ++i) {
    const auto line = to.read_line(5s);
    REQUIRE(line);
    to.write_line(*line, 5s);  // an echo
  }
  to.write_line("no newline", 5s);  // "\n" is added
  std::string got(23, '\0');
  ab.first.read_exactly(got, 5s);
  CHECK(got == "plain\ncrlf\r\nno newline\n");
  // A "\n" anywhere but at the end would split the line: refused before a byte is sent, in both forms.
  std::error_code ec;
  for (const char* bad : {"a\nb", "a\n\n", "\n\n", "a\nb\n"}) {
    CAPTURE(bad);
    CHECK(to.write_line(bad, 5s, ec) == 0);
    CHECK(ec == sockpat::errc::malformed_frame);
    CHECK_THROWS_WITH_AS(to.write_line(bad, 5s), doctest::Contains("malformed"), std::system_error);
  }
  // The limit counts the line without its "\n", as read_line's does.
  sockpat::FramedConnection small(ab.second, {.max_line = 4});
  CHECK(small.write_line("1234\n", 5s, ec) == 5);
  CHECK_FALSE(ec);
  CHECK(small.write_line("12345\n", 5s, ec) == 0);
  CHECK(ec == sockpat::errc::frame_too_large);
}

TEST_CASE("read_until stops at any delimiter and raw reads take the buffered bytes first" * doctest::timeout(60)) {
  auto ab = test::local_pair();  // clang 14 cannot capture structured bindings
  auto& a = ab.first;
  auto& b = ab.second;
  sockpat::FramedConnection framed(b);
  a.write_all("HEADER\r\n\r\nbody-bytes", 5s);
  CHECK(framed.read_until("\r\n\r\n", 5s) == "HEADER\r\n\r\n");
  std::string body(10, '\0');
  CHECK(framed.read_exactly(body, 5s) == 10);
  CHECK(body == "body-bytes");
  std::error_code ec;
  CHECK_FALSE(framed.read_until("", 5s, ec));
  CHECK(ec == std::errc::invalid_argument);
}

TEST_CASE("length-prefixed frames of every size cross a real connection" * doctest::timeout(60)) {
  auto ab = test::local_pair();  // clang 14 cannot capture structured bindings
  auto& a = ab.first;
  auto& b = ab.second;
  sockpat::FramedConnection writer(a);
  sockpat::FramedConnection reader(b);
  // Large frames need a concurrent reader: the socket buffer holds less than a megabyte.
  const std::vector<std::string> sent = {"", "x", std::string(2043, 'q'), std::string(2044, 'r'),
                                         std::string(1 << 20, 'm')};
  auto writing = std::async(std::launch::async, [&] {
    for (const auto& s : sent) writer.write_frame(LengthPrefixFraming{}, s, 10s);
    a.shutdown();
  });
  std::vector<std::string> got;
  while (auto f = reader.read_frame(LengthPrefixFraming{}, 10s)) got.push_back(std::move(*f));
  writing.get();
  CHECK(got == sent);
}

TEST_CASE("an oversized frame on a connection is frame_too_large in both forms, bytes kept" * doctest::timeout(60)) {
  auto ab = test::local_pair();  // clang 14 cannot capture structured bindings
  auto& a = ab.first;
  auto& b = ab.second;
  sockpat::FramedConnection reader(b, {.max_line = 4});
  const LengthPrefixFraming four(4);
  a.write_all("toolong\n", 5s);
  std::error_code ec;
  CHECK_FALSE(reader.read_line(5s, ec));
  CHECK(ec == sockpat::errc::frame_too_large);
  CHECK(reader.buffered().substr(0, 5) == "toolo");
  CHECK_THROWS_WITH_AS((void)reader.read_line(5s), doctest::Contains("frame too large"), std::system_error);
  (void)reader.take_buffered();

  sockpat::FramedConnection writer(a);
  writer.write_frame(LengthPrefixFraming{}, "12345", 5s);
  CHECK_FALSE(reader.read_frame(four, 5s, ec));
  CHECK(ec == sockpat::errc::frame_too_large);
  CHECK(reader.buffered().size() <= 9);
  CHECK(reader.buffered().substr(0, 4) == std::string("\0\0\0\x05", 4));
  // Writing a frame the framing rejects fails before a byte is sent.
  sockpat::FramedConnection small(a, {.max_line = 4});
  CHECK_THROWS_WITH_AS(small.write_frame(four, "12345", 5s), doctest::Contains("frame too large"), std::system_error);
  CHECK(small.write_line("a\nb", 5s, ec) == 0);
  CHECK(ec == sockpat::errc::malformed_frame);
}

TEST_CASE("a frame cut short by the end of the stream is end_of_stream, partial bytes kept" * doctest::timeout(60)) {
  auto ab = test::local_pair();  // clang 14 cannot capture structured bindings
  auto& a = ab.first;
  auto& b = ab.second;
  sockpat::FramedConnection reader(b);
  a.write_all(std::string_view("\0\0\0\x0a" "abc", 7), 5s);
  a.shutdown();
  std::error_code ec;
  CHECK_FALSE(reader.read_frame(LengthPrefixFraming{}, 5s, ec));
  CHECK(ec == sockpat::errc::end_of_stream);
  CHECK(reader.buffered() == std::string_view("\0\0\0\x0a" "abc", 7));
  CHECK_THROWS_WITH_AS((void)reader.read_frame(LengthPrefixFraming{}, 5s), doctest::Contains("end of stream"),
                       sockpat::TransferError);
}

TEST_CASE("a silent peer makes read_line time out, through the deadline or the connection's timeout" * doctest::timeout(60)) {
  auto ab = test::local_pair();
  auto& b = ab.second;
  sockpat::FramedConnection reader(b);
  std::error_code ec;
  CHECK_FALSE(reader.read_line(30ms, ec));
  CHECK(ec == std::errc::timed_out);
  b.set_timeout(30ms);
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS((void)reader.read_line(), doctest::Contains("read_line "), std::system_error);
  CHECK_THROWS_WITH_AS((void)reader.read_line(), doctest::Contains(" after 30 ms: "), std::system_error);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
}

TEST_CASE("the connection's timeout bounds a whole line, so a dribbling peer cannot stretch it" * doctest::timeout(60)) {
  auto ab = test::local_pair();  // clang 14 cannot capture structured bindings
  auto& a = ab.first;
  auto& b = ab.second;
  b.set_timeout(200ms);
  sockpat::FramedConnection reader(b);
  std::atomic<bool> done{false};
  // One byte every 10 ms: each read_some alone would be satisfied well within 200 ms.
  auto dribbler = std::async(std::launch::async, [&] {
    std::error_code ec;
    for (int i = 0; i < 1000 && !done && !ec; ++i) {
      (void)a.write_all("x", 1s, ec);
      std::this_thread::sleep_for(10ms);
    }
  });
  const auto start = std::chrono::steady_clock::now();
  std::error_code ec;
  CHECK_FALSE(reader.read_line(sockpat::Deadline{}, ec));
  const auto took = std::chrono::steady_clock::now() - start;
  done = true;
  dribbler.get();
  CHECK(ec == std::errc::timed_out);
  CHECK(took >= 200ms);
  CHECK(took < 3s);
  CHECK_FALSE(reader.buffered().empty());  // what did arrive is still there
}

TEST_CASE("request sends a frame and returns the one-frame reply" * doctest::timeout(60)) {
  auto ab = test::local_pair();  // clang 14 cannot capture structured bindings
  auto& a = ab.first;
  auto& b = ab.second;
  auto server = std::async(std::launch::async, [&] {
    sockpat::FramedConnection s(b);
    auto frame = s.read_frame(DelimiterFraming::lines(), 5s);
    s.write_line("echo: " + frame.value(), 5s);
    b.shutdown(sockpat::Shutdown::send);
  });
  sockpat::FramedConnection client(a);
  CHECK(client.request(DelimiterFraming::lines(), "hi", 5s) == "echo: hi");
  server.get();
  CHECK_THROWS_WITH_AS((void)client.request(DelimiterFraming::lines(), "again", 5s), doctest::Contains("end of stream"),
                       std::system_error);
}
}

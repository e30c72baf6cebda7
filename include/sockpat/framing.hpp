// sockpat: framing. Sans-I/O rules that find frames in bytes (delimited lines, length-prefixed
// frames), a Decoder that is fed bytes and yields frames (for an event loop or a peer node), and
// FramedConnection, the blocking helpers over a Connection that keep the bytes read past a frame.
#ifndef SOCKPAT_FRAMING_HPP
#define SOCKPAT_FRAMING_HPP

#include <algorithm>     // std::search, std::min, std::max
#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock: how long a timed-out read waited
#include <concepts>      // std::same_as
#include <cstddef>       // std::byte, std::size_t
#include <cstdint>       // std::uint64_t, SIZE_MAX
#include <cstring>       // std::memcpy, std::memmove
#include <optional>      // std::optional
#include <span>          // std::span
#include <stdexcept>     // std::invalid_argument
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code
#include <utility>       // std::move
#include <vector>        // std::vector

#include "sockpat/connection.hpp"
#include "sockpat/deadline.hpp"
#include "sockpat/error.hpp"

namespace sockpat {

/// The default longest line: 64 KiB, asyncio's StreamReader limit.
inline constexpr std::size_t default_max_line = 64 * 1024;
/// The default largest length-prefixed frame: 1 MiB.
inline constexpr std::size_t default_max_frame = 1024 * 1024;

/// What a framing rule found at the start of some buffered bytes.
struct FrameScan {
  enum class Status { complete, need_more, error };
  Status status = Status::need_more;
  /// complete: the frame is data.substr(offset, size) and `consumed` bytes belong to it.
  std::size_t offset = 0;
  std::size_t size = 0;
  std::size_t consumed = 0;
  /// need_more: at least this many more bytes are needed (already checked against the maximum,
  /// so a reader may reserve them), and a later scan of the same bytes may start at `resume`.
  std::size_t need = 1;
  std::size_t resume = 0;
  /// error: frame_too_large or malformed_frame. The bytes are left as they were.
  std::error_code error = {};
};

/// The encoded form of one frame, written as prefix + payload + suffix without copying the payload.
struct FrameParts {
  unsigned char prefix[8] = {};
  std::size_t prefix_size = 0;
  std::string_view suffix = {};
};

/// A framing rule: finds the first frame in bytes, and encodes a payload as a frame.
template <class F>
concept Framing = requires(const F& f, std::string_view data, std::size_t from, FrameParts& parts) {
  { f.scan(data, from) } noexcept -> std::same_as<FrameScan>;
  { f.encode(data, parts) } noexcept -> std::same_as<std::error_code>;
  { f.max_frame_size() } noexcept -> std::convertible_to<std::size_t>;
};

namespace detail {

inline FrameScan frame_error(errc e) noexcept {
  FrameScan s;
  s.status = FrameScan::Status::error;
  s.error = make_error_code(e);
  return s;
}

/// The first frame ending in `delim` (not part of the frame), at most `max` bytes long. With
/// strip_cr a '\r' before the delimiter is dropped too (lines ending in "\n" or "\r\n").
/// Only the first max + delimiter (+ '\r') bytes are searched, and a frame is too large as soon as
/// the bytes past the first `max` cannot be the start of its end.
inline FrameScan scan_delimited(std::string_view data, std::size_t from, std::string_view delim, std::size_t max,
                                bool strip_cr) noexcept {
  const std::size_t end_size = delim.size() + (strip_cr ? 1 : 0);
  const std::size_t limit = max > SIZE_MAX - end_size ? SIZE_MAX : max + end_size;
  const std::string_view window = data.substr(0, (std::min)(data.size(), limit));
  const std::size_t start = (std::min)(from, window.size());
  const auto it = std::search(window.begin() + static_cast<std::ptrdiff_t>(start), window.end(), delim.begin(), delim.end());
  if (it != window.end()) {
    const auto at = static_cast<std::size_t>(it - window.begin());
    std::size_t size = at;
    if (strip_cr && size > 0 && data[size - 1] == '\r') --size;
    if (size > max) return frame_error(errc::frame_too_large);
    FrameScan s;
    s.status = FrameScan::Status::complete;
    s.size = size;
    s.consumed = at + delim.size();
    return s;
  }
  if (data.size() > max) {
    // Past the maximum only the start of an end ("\r" and/or the delimiter) may follow.
    const std::string_view tail = window.substr(max);
    const bool may_end = delim.starts_with(tail) || (strip_cr && tail.front() == '\r' && delim.starts_with(tail.substr(1)));
    if (!may_end || data.size() >= limit) return frame_error(errc::frame_too_large);
  }
  FrameScan s;
  // A delimiter split across reads may start in the last delim.size() - 1 bytes already seen.
  s.resume = window.size() >= delim.size() ? window.size() - delim.size() + 1 : 0;
  return s;
}

}  // namespace detail

/// Frames that end in a delimiter: lines ("\n", and "\r\n" with lines()), or any byte string.
/// The frame excludes the delimiter; max_frame_size() bounds it (frame_too_large past it).
class DelimiterFraming {
 public:
  /// Throws std::invalid_argument for an empty delimiter.
  explicit DelimiterFraming(std::string delimiter, std::size_t max_frame = default_max_line, bool strip_cr = false)
      : delimiter_(std::move(delimiter)), max_(max_frame), strip_cr_(strip_cr) {
    if (delimiter_.empty()) throw std::invalid_argument("sockpat: a frame delimiter cannot be empty");
  }
  /// Text lines: "\n" ends a line, and a "\r" before it is dropped, so "\r\n" lines work too.
  [[nodiscard]] static DelimiterFraming lines(std::size_t max_line = default_max_line) {
    return DelimiterFraming("\n", max_line, true);
  }

  [[nodiscard]] FrameScan scan(std::string_view data, std::size_t from = 0) const noexcept {
    return detail::scan_delimited(data, from, delimiter_, max_, strip_cr_);
  }
  /// frame_too_large past the maximum; malformed_frame when the payload holds the delimiter
  /// (it would arrive as two frames).
  [[nodiscard]] std::error_code encode(std::string_view payload, FrameParts& parts) const noexcept {
    if (payload.size() > max_) return make_error_code(errc::frame_too_large);
    if (payload.find(delimiter_) != std::string_view::npos) return make_error_code(errc::malformed_frame);
    parts.prefix_size = 0;
    parts.suffix = delimiter_;
    return {};
  }
  [[nodiscard]] std::size_t max_frame_size() const noexcept { return max_; }
  [[nodiscard]] const std::string& delimiter() const noexcept { return delimiter_; }

 private:
  std::string delimiter_;
  std::size_t max_;
  bool strip_cr_;
};

/// Frames preceded by their length as an unsigned big-endian integer of 1, 2, 4 (the default)
/// or 8 bytes. The length is checked against max_frame_size() as soon as the prefix arrives,
/// before a byte of the frame is buffered or allocated for.
class LengthPrefixFraming {
 public:
  /// Throws std::invalid_argument for a prefix width other than 1, 2, 4 or 8.
  explicit LengthPrefixFraming(std::size_t max_frame = default_max_frame, std::size_t prefix_width = 4)
      : max_(max_frame), width_(prefix_width) {
    if (width_ != 1 && width_ != 2 && width_ != 4 && width_ != 8) {
      throw std::invalid_argument("sockpat: a length prefix is 1, 2, 4 or 8 bytes wide");
    }
    if (width_ < 8) {
      const std::uint64_t widest = (std::uint64_t{1} << (8 * width_)) - 1;
      if (max_ > widest) max_ = static_cast<std::size_t>(widest);
    }
    if (max_ > SIZE_MAX - width_) max_ = SIZE_MAX - width_;  // prefix + frame must fit a size_t
  }

  [[nodiscard]] FrameScan scan(std::string_view data, std::size_t /*from*/ = 0) const noexcept {
    FrameScan s;
    if (data.size() < width_) {
      s.need = width_ - data.size();
      return s;
    }
    std::uint64_t length = 0;
    for (std::size_t i = 0; i < width_; ++i) length = (length << 8) | static_cast<unsigned char>(data[i]);
    if (length > max_) return detail::frame_error(errc::frame_too_large);
    const std::size_t total = width_ + static_cast<std::size_t>(length);
    if (data.size() < total) {
      s.need = total - data.size();
      return s;
    }
    s.status = FrameScan::Status::complete;
    s.offset = width_;
    s.size = static_cast<std::size_t>(length);
    s.consumed = total;
    return s;
  }
  [[nodiscard]] std::error_code encode(std::string_view payload, FrameParts& parts) const noexcept {
    if (payload.size() > max_) return make_error_code(errc::frame_too_large);
    std::uint64_t length = payload.size();
    for (std::size_t i = width_; i-- > 0; length >>= 8) parts.prefix[i] = static_cast<unsigned char>(length & 0xff);
    parts.prefix_size = width_;
    parts.suffix = {};
    return {};
  }
  [[nodiscard]] std::size_t max_frame_size() const noexcept { return max_; }
  [[nodiscard]] std::size_t prefix_width() const noexcept { return width_; }

 private:
  std::size_t max_;
  std::size_t width_;
};

/// `payload` encoded as one frame. Throws std::system_error (frame_too_large, malformed_frame).
template <Framing F>
[[nodiscard]] std::string encode_frame(const F& framing, std::string_view payload) {
  FrameParts parts;
  if (auto ec = framing.encode(payload, parts)) throw std::system_error(ec, "encode_frame");
  std::string out;
  out.reserve(parts.prefix_size + payload.size() + parts.suffix.size());
  out.append(reinterpret_cast<const char*>(parts.prefix), parts.prefix_size);
  out.append(payload);
  out.append(parts.suffix);
  return out;
}

/// Bytes received and not yet consumed, in one contiguous block: read into prepare(), commit()
/// what arrived, look at data(), consume() from the front. Growth happens only in prepare().
class ByteBuffer {
 public:
  [[nodiscard]] std::string_view data() const noexcept { return {bytes_.data() + begin_, end_ - begin_}; }
  [[nodiscard]] std::size_t size() const noexcept { return end_ - begin_; }
  [[nodiscard]] bool empty() const noexcept { return begin_ == end_; }

  /// Room for at least `n` more bytes at the end. Moves the data to the front first, so views
  /// from data() are invalidated.
  [[nodiscard]] std::span<char> prepare(std::size_t n) {
    if (begin_ != 0) {
      std::memmove(bytes_.data(), bytes_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (bytes_.size() - end_ < n) bytes_.resize(end_ + n);
    return {bytes_.data() + end_, bytes_.size() - end_};
  }
  /// `n` bytes were written into the span prepare() returned.
  void commit(std::size_t n) noexcept { end_ += (std::min)(n, bytes_.size() - end_); }
  void append(std::string_view bytes) {
    if (bytes.empty()) return;  // memcpy may not see the null data() of an empty view
    const auto room = prepare(bytes.size());
    std::memcpy(room.data(), bytes.data(), bytes.size());
    commit(bytes.size());
  }
  /// Drops `n` bytes from the front. Views from data() stay valid until the next prepare().
  void consume(std::size_t n) noexcept {
    begin_ += (std::min)(n, size());
    if (begin_ == end_) begin_ = end_ = 0;
  }
  void clear() noexcept { begin_ = end_ = 0; }
  /// Returns the buffered bytes and empties the buffer.
  [[nodiscard]] std::string take() {
    std::string out(data());
    clear();
    return out;
  }

 private:
  std::vector<char> bytes_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

/// A sans-I/O decoder: fed bytes from anywhere (a socket, an event loop, a fuzzer), it yields
/// complete frames. A frame that breaks the rule (frame_too_large) leaves every byte in
/// buffered() for the caller to inspect, discard() or take().
template <Framing F>
class Decoder {
 public:
  explicit Decoder(F framing) : framing_(std::move(framing)) {}

  void feed(std::string_view bytes) { buffer_.append(bytes); }
  void feed(std::span<const std::byte> bytes) {
    feed(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  }
  /// Zero-copy feeding: read into prepare(n), then commit() the count that arrived.
  [[nodiscard]] std::span<char> prepare(std::size_t n) { return buffer_.prepare(n); }
  void commit(std::size_t n) noexcept { buffer_.commit(n); }

  /// The next complete frame, or std::nullopt when more bytes are needed (ec clear) or the
  /// buffered bytes break the framing (ec set; they stay buffered). The view lives until the
  /// next call that feeds, prepares or takes.
  [[nodiscard]] std::optional<std::string_view> next(std::error_code& ec) noexcept {
    ec.clear();
    const auto data = buffer_.data();
    const FrameScan s = framing_.scan(data, resume_);
    switch (s.status) {
      case FrameScan::Status::complete:
        resume_ = 0;
        buffer_.consume(s.consumed);
        return data.substr(s.offset, s.size);
      case FrameScan::Status::need_more:
        resume_ = s.resume;
        need_ = s.need;
        return std::nullopt;
      case FrameScan::Status::error: ec = s.error; return std::nullopt;
    }
    return std::nullopt;
  }
  /// Throws std::system_error (frame_too_large, malformed_frame) instead.
  [[nodiscard]] std::optional<std::string_view> next() {
    std::error_code ec;
    auto frame = next(ec);
    if (ec) throw std::system_error(ec, "decode frame");
    return frame;
  }

  /// At end of stream: clear when nothing is left over, end_of_stream when a frame was cut short.
  [[nodiscard]] std::error_code finish() const noexcept {
    return buffer_.empty() ? std::error_code{} : make_error_code(errc::end_of_stream);
  }

  /// At least this many more bytes are needed before next() can yield (after it said need more).
  [[nodiscard]] std::size_t needed() const noexcept { return need_; }
  /// The bytes fed and not yet yielded as frames.
  [[nodiscard]] std::string_view buffered() const noexcept { return buffer_.data(); }
  void discard(std::size_t n) noexcept {
    buffer_.consume(n);
    resume_ = 0;
  }
  [[nodiscard]] std::string take() {
    resume_ = 0;
    return buffer_.take();
  }
  [[nodiscard]] const F& framing() const noexcept { return framing_; }

 private:
  F framing_;
  ByteBuffer buffer_;
  std::size_t resume_ = 0;
  std::size_t need_ = 1;
};

using LineDecoder = Decoder<DelimiterFraming>;
using LengthPrefixDecoder = Decoder<LengthPrefixFraming>;

/// The limits of FramedConnection's line helpers.
struct FramingOptions {
  /// read_line, read_until and write_line: the longest line, its delimiter not counted.
  std::size_t max_line = default_max_line;
};

/// Blocking framed I/O over a Connection it does not own: read_line, read_until, read_frame,
/// write_frame, each bounded by a Deadline and the connection's own timeout (fixed once per call,
/// so a peer dribbling one byte at a time cannot stretch a frame past it). Bytes read past a frame
/// stay here for the next call; read_some/read_exactly take them first. On an error those bytes
/// stay in buffered(). One reading thread at a time; writes go straight to the connection.
/// The names mean what StreamReader's do (docs/patterns.md, "Lines and frames"): read_line and
/// read_until keep the delimiter, read_frame(framing) drops it; std::nullopt at a clean end of
/// stream; TransferError (end_of_stream, the partial bytes kept) when the stream ends inside one.
template <StreamProtocol P>
class FramedConnection {
 public:
  explicit FramedConnection(Connection<P>& connection, const FramingOptions& options = {})
      : conn_(&connection), lines_(DelimiterFraming::lines(options.max_line)) {}

  [[nodiscard]] Connection<P>& connection() const noexcept { return *conn_; }
  /// Bytes received and not yet returned by a read.
  [[nodiscard]] std::string_view buffered() const noexcept { return buffer_.data(); }
  void discard(std::size_t n) noexcept { buffer_.consume(n); }
  [[nodiscard]] std::string take_buffered() { return buffer_.take(); }

  // --- frames of any framing ---

  /// The next frame of `framing` (DelimiterFraming, LengthPrefixFraming), without its delimiter
  /// or length prefix; std::nullopt at end of stream with nothing buffered. Throws
  /// std::system_error: frame_too_large, malformed_frame, timed_out, operation_canceled or the
  /// OS error; TransferError (end_of_stream) for a frame cut short.
  template <Framing F>
  [[nodiscard]] std::optional<std::string> read_frame(const F& framing, Deadline d = {}) {
    return read_named("read_frame", [&](std::string_view data, std::size_t from) noexcept {
      return framing.scan(data, from);
    }, std::move(d));
  }
  /// The view lives until the next call on this object. std::nullopt with ec clear: end of stream.
  template <Framing F>
  [[nodiscard]] std::optional<std::string_view> read_frame(const F& framing, Deadline d, std::error_code& ec) noexcept {
    return read_with([&](std::string_view data, std::size_t from) noexcept { return framing.scan(data, from); },
                     std::move(d), ec);
  }

  /// Writes `payload` as one frame of `framing`. Throws std::system_error for a payload the
  /// framing rejects, TransferError for a write cut short.
  template <Framing F>
  void write_frame(const F& framing, std::string_view payload, Deadline d = {}) {
    std::error_code ec;
    const auto waited = detail::waited(d, conn_->timeout());
    const auto n = write_frame(framing, payload, std::move(d), ec);
    if (ec == errc::frame_too_large || ec == errc::malformed_frame) detail::throw_error(ec, "write_frame");
    if (ec) throw TransferError(ec, where("write_frame", "to", ec, waited), n);
  }
  /// Returns the bytes written (prefix and suffix included).
  template <Framing F>
  std::size_t write_frame(const F& framing, std::string_view payload, Deadline d, std::error_code& ec) noexcept {
    FrameParts parts;
    ec = framing.encode(payload, parts);
    if (ec) return 0;
    const std::string_view prefix(reinterpret_cast<const char*>(parts.prefix), parts.prefix_size);
    const std::size_t total = prefix.size() + payload.size() + parts.suffix.size();
    d = conn_->bounded(std::move(d));
    // A small frame goes out in one send (one segment, no Nagle delay between its parts).
    char small[2048];
    if (total <= sizeof small) {
      char* at = small;
      for (const auto piece : {prefix, payload, parts.suffix}) {
        if (piece.empty()) continue;  // memcpy may not see the null data() of an empty view
        std::memcpy(at, piece.data(), piece.size());
        at += piece.size();
      }
      return conn_->write_all(std::string_view(small, total), d, ec);
    }
    std::size_t done = 0;
    for (const auto piece : {prefix, payload, parts.suffix}) {
      done += conn_->write_all(piece, d, ec);
      if (ec) break;
    }
    return done;
  }

  /// Sends `payload` as one frame and reads the one-frame reply. Throws as write_frame and
  /// read_frame do; end of stream before the reply is end_of_stream.
  template <Framing F>
  [[nodiscard]] std::string request(const F& framing, std::string_view payload, Deadline d = {}) {
    d = conn_->bounded(std::move(d));
    write_frame(framing, payload, d);
    auto reply = read_frame(framing, d);
    if (!reply) detail::throw_error(make_error_code(errc::end_of_stream), where("read reply", "from", {}, {}));
    return std::move(*reply);
  }

  // --- lines and delimiters ---

  /// The next line with its "\n" (a "\r" before it is part of the line); std::nullopt at end of
  /// stream with nothing buffered. Throws std::system_error (frame_too_large for a line longer
  /// than FramingOptions::max_line, its "\n" not counted; timed_out, ...) and TransferError
  /// (end_of_stream, bytes_transferred() the partial line's size) when the stream ends inside a
  /// line. In every case the unreturned bytes stay in buffered().
  [[nodiscard]] std::optional<std::string> read_line(Deadline d = {}) { return read_until("\n", std::move(d)); }
  [[nodiscard]] std::optional<std::string_view> read_line(Deadline d, std::error_code& ec) noexcept {
    return read_until("\n", std::move(d), ec);
  }

  /// The bytes up to and including `delimiter`, as read_line does with "\n".
  [[nodiscard]] std::optional<std::string> read_until(std::string_view delimiter, Deadline d = {}) {
    if (delimiter.empty()) detail::throw_error(detail::make_errc(std::errc::invalid_argument), "read_until");
    return read_named(delimiter == "\n" ? "read_line" : "read_until", until(delimiter), std::move(d));
  }
  [[nodiscard]] std::optional<std::string_view> read_until(std::string_view delimiter, Deadline d,
                                                           std::error_code& ec) noexcept {
    if (delimiter.empty()) {
      ec = detail::make_errc(std::errc::invalid_argument);
      return std::nullopt;
    }
    return read_with(until(delimiter), std::move(d), ec);
  }

  /// Writes `line` and "\n"; a line that ends in "\n" already (as read_line returns it, "\r\n"
  /// too) goes out as it is, so a line read can be written back. malformed_frame if another
  /// "\n" is in it (it would arrive as two lines); frame_too_large past max_line, "\n" not counted.
  void write_line(std::string_view line, Deadline d = {}) { write_frame(lines_, unterminated(line), std::move(d)); }
  std::size_t write_line(std::string_view line, Deadline d, std::error_code& ec) noexcept {
    return write_frame(lines_, unterminated(line), std::move(d), ec);
  }

  // --- raw bytes, buffered ones first ---

  /// Returns buffered bytes if there are any, else reads from the connection; 0 at end of stream.
  std::size_t read_some(std::span<char> out, Deadline d = {}) {
    if (!buffer_.empty()) return take_into(out);
    return conn_->read_some(out, std::move(d));
  }
  std::size_t read_some(std::span<char> out, Deadline d, std::error_code& ec) noexcept {
    ec.clear();
    if (!buffer_.empty()) return take_into(out);
    return conn_->read_some(out, std::move(d), ec);
  }
  /// Fills `out`, buffered bytes first. Throws TransferError (end_of_stream) when the stream ends first.
  std::size_t read_exactly(std::span<char> out, Deadline d = {}) {
    std::error_code ec;
    const auto waited = detail::waited(d, conn_->timeout());
    const auto n = read_exactly(out, std::move(d), ec);
    if (ec) throw TransferError(ec, where("read_exactly", "from", ec, waited), n);
    return n;
  }
  std::size_t read_exactly(std::span<char> out, Deadline d, std::error_code& ec) noexcept {
    ec.clear();
    const std::size_t first = take_into(out);
    if (first == out.size()) return first;
    return first + conn_->read_exactly(out.subspan(first), conn_->bounded(std::move(d)), ec);
  }

 private:
  static constexpr std::size_t chunk = 16 * 1024;

  static std::string_view unterminated(std::string_view line) noexcept {
    if (line.ends_with('\n')) line.remove_suffix(1);
    return line;
  }

  /// "read_line from PEER" (also after a reset; "... on LOCAL" where the OS then forgets the
  /// peer), and for a timeout "after N ms": built only when throwing.
  [[nodiscard]] std::string where(std::string_view op, std::string_view to_from, std::error_code ec,
                                  std::chrono::steady_clock::duration waited) const {
    std::error_code ignored;
    detail::RawAddress a;
    a.size = sizeof a.storage;
    const Endpoint peer = conn_->is_open() && !detail::last_peer_address(conn_->native_handle(), a.data(), &a.size)
                              ? Endpoint::from_native(a.data(), a.size)
                              : Endpoint{};
    return detail::describe(op, to_from, peer, conn_->local_endpoint(ignored), ec, waited);
  }

  /// read_until's rule: the frame is everything up to and including `delimiter`, which starts
  /// within the first max_line bytes.
  [[nodiscard]] auto until(std::string_view delimiter) const noexcept {
    return [delimiter, max = lines_.max_frame_size()](std::string_view data, std::size_t from) noexcept {
      FrameScan s = detail::scan_delimited(data, from, delimiter, max, false);
      if (s.status == FrameScan::Status::complete) s.size = s.consumed;
      return s;
    };
  }

  template <class Scan>
  [[nodiscard]] std::optional<std::string> read_named(const char* what, const Scan& scan, Deadline d) {
    std::error_code ec;
    const auto waited = detail::waited(d, conn_->timeout());
    auto frame = read_with(scan, std::move(d), ec);
    if (ec == errc::end_of_stream) throw TransferError(ec, where(what, "from", ec, waited), buffer_.size());
    if (ec) detail::throw_error(ec, where(what, "from", ec, waited));
    if (!frame) return std::nullopt;
    return std::string(*frame);
  }

  std::size_t take_into(std::span<char> out) noexcept {
    const auto data = buffer_.data();
    const std::size_t n = (std::min)(out.size(), data.size());
    if (n == 0) return 0;
    std::memcpy(out.data(), data.data(), n);
    buffer_.consume(n);
    return n;
  }

  template <class Scan>
  std::optional<std::string_view> read_with(const Scan& scan, Deadline d, std::error_code& ec) noexcept {
    ec.clear();
    d = conn_->bounded(std::move(d));
    std::size_t from = 0;
    for (;;) {
      const auto data = buffer_.data();
      const FrameScan s = scan(data, from);
      if (s.status == FrameScan::Status::complete) {
        buffer_.consume(s.consumed);  // the view stays valid: only prepare() moves bytes
        return data.substr(s.offset, s.size);
      }
      if (s.status == FrameScan::Status::error) {
        ec = s.error;
        return std::nullopt;
      }
      from = s.resume;
      std::span<char> room;
      try {
        // s.need was checked against the framing's maximum, so this allocation is bounded.
        room = buffer_.prepare((std::max)(s.need, chunk));
      } catch (...) {
        ec = detail::make_errc(std::errc::not_enough_memory);
        return std::nullopt;
      }
      const std::size_t n = conn_->read_some(room, d, ec);
      if (ec) return std::nullopt;
      if (n == 0) {
        if (!buffer_.empty()) ec = make_error_code(errc::end_of_stream);
        return std::nullopt;
      }
      buffer_.commit(n);
    }
  }

  Connection<P>* conn_;
  DelimiterFraming lines_;
  ByteBuffer buffer_;
};

template <StreamProtocol P>
FramedConnection(Connection<P>&) -> FramedConnection<P>;
template <StreamProtocol P>
FramedConnection(Connection<P>&, const FramingOptions&) -> FramedConnection<P>;

}  // namespace sockpat

#endif  // SOCKPAT_FRAMING_HPP

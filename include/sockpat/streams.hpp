// sockpat: asyncio-shaped streams: start_server, open_connection, StreamReader, StreamWriter.
#ifndef SOCKPAT_STREAMS_HPP
#define SOCKPAT_STREAMS_HPP

#include <algorithm>     // std::min, std::max, std::remove
#include <bit>           // std::bit_width
#include "sockpat/detail/chrono.hpp"  // std::chrono::milliseconds
#include <coroutine>     // std::coroutine_handle
#include <cstddef>       // std::byte, std::size_t, std::ptrdiff_t
#include <cstdint>       // std::uint32_t: StreamState::activity
#include <cstring>       // std::memcpy, std::memmove
#include <exception>     // std::exception_ptr
#include "sockpat/detail/function.hpp"  // std::function
#include <list>          // std::list: a stream server's connections, stable while they run
#include <memory>        // std::shared_ptr, std::make_shared, std::enable_shared_from_this, std::unique_ptr
#include <new>           // std::bad_alloc
#include <span>          // std::span
#include <stdexcept>     // std::invalid_argument, std::logic_error
#include <optional>      // std::optional: read_frame at end of stream
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code, std::system_error
#include <type_traits>   // std::conditional_t, std::is_same_v: the awaiters with a deadline
#include <utility>       // std::move, std::exchange, std::pair
#include <vector>        // std::vector

#include "sockpat/connection.hpp"
#include "sockpat/detail/per_thread.hpp"  // per_thread: the buffer cache
#include "sockpat/detail/report.hpp"      // report_failure: on_error or stderr
#include "sockpat/event_loop.hpp"
#include "sockpat/framing.hpp"  // Framing, FrameScan, encode_frame: read_frame, write_frame
#include "sockpat/listener.hpp"
#include "sockpat/sync.hpp"        // Event: wait_closed
#include "sockpat/task.hpp"
#include "sockpat/task_group.hpp"  // TaskSet: the handlers

namespace sockpat {

// Coroutines are templates (`template <class = void>`, invisible at the call site): GCC emits
// the body of every non-template coroutine defined in a translation unit, used or not, with all
// it instantiates, so as plain inline functions they cost every includer ~1 s of compile time
// at -O0 (bench/NOTES.md, include cost). A template is compiled only where it is used.

/// Buffer sizes of a StreamReader / StreamWriter pair.
struct StreamOptions {
  /// The most bytes a StreamReader holds while looking for a separator (asyncio's `limit`):
  /// read_until / read_line fail with errc::frame_too_large when the separator does not start
  /// within it (as FramedConnection's do); read_frame with errc::buffer_full for a longer frame.
  std::size_t limit = 64 * 1024;
  /// A StreamWriter never buffers more than this: `co_await write()` waits for room.
  std::size_t high_water = 64 * 1024;
  /// drain() and a waiting write() resume once the buffer is at or below this.
  std::size_t low_water = 16 * 1024;
  /// close() sends what is buffered first; if the peer has not taken it within this long (it
  /// stopped reading), the rest is dropped and the socket closed, so that a closed stream
  /// never holds its buffer and descriptor for good. Zero: no bound.
  std::chrono::milliseconds close_timeout{10000};
  /// TCP_NODELAY on a TCP stream (ignored for Unix-domain ones): on by default, as asyncio sets
  /// it on every TCP transport. A StreamWriter already gathers small writes in its buffer, and
  /// with Nagle's algorithm on, the tail of a large write waits for the peer's ACK.
  bool no_delay = true;
};

namespace detail {

/// Read buffers come from a small per-thread cache of freed blocks (powers of two, 1 KiB to
/// 64 KiB), so that taking a buffer when data arrives and giving it back when a reader waits
/// costs no heap allocation in steady state, and an idle connection holds no buffer at all.
/// Each class keeps up to 256 KiB and at least 8 blocks: 256 blocks of 1 KiB (one poll's worth
/// of small messages, see StreamState::fit_fresh_block) down to 8 of 64 KiB.
class BufferCache {
 public:
  static constexpr std::size_t smallest = 1024;
  static constexpr std::size_t classes = 7;  // 1, 2, 4, 8, 16, 32, 64 KiB
  static constexpr std::size_t bytes_per_class = std::size_t{256} << 10;
  static constexpr std::size_t max_cached = bytes_per_class / smallest;

  /// A block of at least `n` bytes (its real size second); null when memory runs out.
  static std::pair<std::byte*, std::size_t> acquire(std::size_t n) noexcept {
    const std::size_t c = class_of(n);
    if (c < classes) {
      BufferCache* cache = instance();
      if (cache != nullptr && cache->count_[c] > 0) return {cache->free_[c][--cache->count_[c]], size_of(c)};
      n = size_of(c);
    }
    return {static_cast<std::byte*>(::operator new(n, std::nothrow)), n};
  }
  static void release(std::byte* p, std::size_t n) noexcept {
    const std::size_t c = class_of(n);
    if (c < classes && size_of(c) == n) {
      BufferCache* cache = instance();
      if (cache != nullptr && cache->count_[c] < capacity(c)) {
        cache->free_[c][cache->count_[c]++] = p;
        return;
      }
    }
    ::operator delete(p);
  }

  BufferCache() = default;
  BufferCache(const BufferCache&) = delete;
  BufferCache& operator=(const BufferCache&) = delete;
  ~BufferCache() {
    for (std::size_t c = 0; c < classes; ++c) {
      while (count_[c] > 0) ::operator delete(free_[c][--count_[c]]);
    }
  }

 private:
  static constexpr std::size_t size_of(std::size_t c) noexcept { return smallest << c; }
  static constexpr std::size_t capacity(std::size_t c) noexcept {
    return (std::max)(std::size_t{8}, bytes_per_class / size_of(c));
  }
  static std::size_t class_of(std::size_t n) noexcept {  // the smallest class holding n; `classes` if none
    const std::size_t c = n <= smallest ? 0 : static_cast<std::size_t>(std::bit_width((n - 1) / smallest));
    return (std::min)(c, classes);
  }
  // The calling thread's cache (freed when the thread ends), or null without memory for one.
  static BufferCache* instance() noexcept {
    try {
      return &per_thread<BufferCache>();
    } catch (const std::bad_alloc&) {
      return nullptr;
    }
  }
  std::byte* free_[classes][max_cached] = {};
  std::size_t count_[classes] = {};
};

/// A transform between the bytes a StreamReader / StreamWriter pair sees and the bytes on its
/// socket (TLS records), driven by StreamState: sans-I/O, it never touches the socket. A plain
/// stream has none and pays a null check per operation for the possibility, never a virtual
/// call. Its wire bytes to send accumulate in output(), in order, whichever call made them.
class StreamTransport {
 public:
  StreamTransport() = default;
  StreamTransport(const StreamTransport&) = delete;
  StreamTransport& operator=(const StreamTransport&) = delete;
  virtual ~StreamTransport() = default;

  /// One step of the opening exchange (the TLS handshake): true once it is done, false when it
  /// needs more input (feed()).
  virtual bool open(std::error_code& ec) noexcept = 0;
  /// Takes wire bytes received from the socket, at most input_room(); how many it took.
  virtual std::size_t feed(std::span<const std::byte> wire) noexcept = 0;
  /// How many wire bytes feed() takes now (its input is bounded).
  [[nodiscard]] virtual std::size_t input_room() const noexcept = 0;
  /// Up to out.size() bytes for the reader; 0 when it needs more input, or once the peer ended
  /// its side cleanly (input_closed()).
  virtual std::size_t decode(std::span<std::byte> out, std::error_code& ec) noexcept = 0;
  /// Takes up to plain.size() of the writer's bytes, encoding them into output(); how many it took.
  virtual std::size_t encode(std::span<const std::byte> plain, std::error_code& ec) noexcept = 0;
  /// Puts the ending (TLS close_notify) into output().
  virtual void end_output(std::error_code& ec) noexcept = 0;
  /// The socket's input ended: `ec` says so when that is not a clean end (TLS: truncated).
  virtual void input_ended(std::error_code& ec) noexcept = 0;
  /// True once the peer's ending arrived.
  [[nodiscard]] virtual bool input_closed() const noexcept = 0;
  [[nodiscard]] virtual std::span<const std::byte> output() const noexcept = 0;
  virtual void consume_output(std::size_t n) noexcept = 0;
  /// Words on the last failure for error messages ("certificate verify failed: ..."); may be empty.
  [[nodiscard]] virtual std::string failure_text() const { return {}; }
  /// The opening's name in error messages.
  [[nodiscard]] virtual const char* opening_name() const noexcept { return "handshake"; }
  /// Whether the writer can end its side alone (write_eof) while the reader goes on.
  [[nodiscard]] virtual bool can_write_eof() const noexcept { return true; }

  /// The most wire bytes received per system call.
  static constexpr std::size_t wire_chunk = 16 * 1024;
};

/// The connection and both buffers, shared by a StreamReader and its StreamWriter. It is its
/// own waiter on the loop (the Pending base): for writability while it flushes, for the peer's
/// ending while a transported stream closes, and for close()'s timer. One waiter, not three: an
/// idle connection keeps this state, so its bytes count (bench/NOTES.md, idle memory).
class StreamState final : private Pending {
 public:
  StreamState(UniqueHandle h, Family f, const StreamOptions& o) : handle_(std::move(h)), options_(o), family_(f) {
    if (options_.low_water > options_.high_water) options_.low_water = options_.high_water;
    if (options_.high_water == 0) options_.high_water = 1;
    // Best effort: it fails only on a socket that is already broken, and the first read or
    // write on it reports that.
    if (options_.no_delay && (f == Family::ipv4 || f == Family::ipv6)) (void)set_int_option(fd(), option::no_delay, 1);
    if (f == Family::ipv4 || f == Family::ipv6) remember_peer();
  }
  StreamState(const StreamState&) = delete;
  StreamState& operator=(const StreamState&) = delete;
  ~StreamState() {
    stop_flushing();
    stop_awaiting_end();
    (void)handle_.close();
    rbegin = rend = 0;
    release_rbuf();
  }

  [[nodiscard]] native_handle fd() const noexcept { return handle_.get(); }
  [[nodiscard]] Family family() const noexcept { return family_; }
  [[nodiscard]] const StreamOptions& options() const noexcept { return options_; }

  // --- reading ---
  // The read buffer exists only while it holds bytes, or while a read is being tried: a reader
  // waiting on an idle connection holds none (blocks come from a per-thread cache, so taking one
  // per message costs no allocation in steady state).
  std::byte* rbuf = nullptr;
  std::size_t rcap = 0;
  std::size_t rbegin = 0;
  std::size_t rend = 0;
  // `bool eof` (the peer ended the stream) is declared with the writer's flags, to pack them.

  /// An error message naming the stream, built only when throwing: "StreamReader read from
  /// PEER", or "... on LOCAL" when the peer has no address (an unnamed Unix-domain socket); after
  /// a transport's failure, its reason too: "StreamReader read from PEER: <the TLS alert>".
  [[nodiscard]] std::string where(std::string_view op, std::string_view to_from) const {
    return where(op, to_from, {}, {});
  }
  /// The same, and for a timeout how long the call waited: "StreamReader read from PEER after 50 ms".
  [[nodiscard]] std::string where(std::string_view op, std::string_view to_from, std::error_code ec,
                                  std::chrono::steady_clock::duration waited) const {
    std::string s = place(op, to_from);
    append_waited(s, ec, waited);
    if (transport_ != nullptr) [[unlikely]] {
      if (std::string why = transport_->failure_text(); !why.empty()) s.append(": ").append(why);
    }
    return s;
  }
  [[nodiscard]] std::string place(std::string_view op, std::string_view to_from) const {
    RawAddress a;
    if (peer_size_ != 0) {
      std::memcpy(a.data(), peer_, peer_size_);
      a.size = static_cast<socklen>(peer_size_);
    } else {
      a.size = sizeof a.storage;
      if (peer_address(fd(), a.data(), &a.size)) a.size = 0;
    }
    std::string name = a.size != 0 ? Endpoint::from_native(a.data(), a.size).to_string() : std::string();
    std::string s(op);
    if (!name.empty()) return s.append(1, ' ').append(to_from).append(1, ' ').append(name);
    a.size = sizeof a.storage;
    if (local_address(fd(), a.data(), &a.size)) return s;
    name = Endpoint::from_native(a.data(), a.size).to_string();
    return name.empty() ? s : s.append(" on ").append(name);
  }

  [[nodiscard]] std::size_t available() const noexcept { return rend - rbegin; }
  [[nodiscard]] const std::byte* rdata() const noexcept { return rbuf + rbegin; }
  void consume(std::size_t n) noexcept {
    rbegin += n;
    if (rbegin == rend) rbegin = rend = 0;
  }
  /// Gives the read buffer back to the cache (only when it holds no unread byte).
  void release_rbuf() noexcept {
    if (rbuf == nullptr || available() > 0) return;
    BufferCache::release(std::exchange(rbuf, nullptr), std::exchange(rcap, 0));
    rbegin = rend = 0;
  }
  /// Makes room for at least one more byte (compacting, or taking a larger block); false only
  /// when memory runs out.
  bool make_room() noexcept {
    if (rbuf == nullptr) {
      auto [p, n] = BufferCache::acquire(first_block());
      if (p == nullptr) return false;
      rbuf = p;
      rcap = n;
      rbegin = rend = 0;
      return true;
    }
    if (rbegin > 0 && rcap - rend < 2048) {  // compact before growing
      std::memmove(rbuf, rbuf + rbegin, available());
      rend -= rbegin;
      rbegin = 0;
    }
    if (rcap - rend < 1024 && rcap < options_.limit + 1024) {
      auto [p, n] = BufferCache::acquire(rcap * 2);
      if (p == nullptr) return rend < rcap;
      std::memcpy(p, rbuf + rbegin, available());
      BufferCache::release(rbuf, rcap);
      rbuf = p;
      rcap = n;
      rend -= rbegin;
      rbegin = 0;
    }
    return rend < rcap;
  }
  /// Replaces the buffer's content with [p, p + n) (read_exactly giving partial bytes back).
  void put_back(const std::byte* p, std::size_t n) noexcept {
    rbegin = rend = 0;
    release_rbuf();
    if (n == 0) return;
    auto [b, cap] = BufferCache::acquire(n);
    if (b == nullptr) return;
    std::memcpy(b, p, n);
    rbuf = b;
    rcap = cap;
    rend = n;
  }

  /// Reads more into the buffer, within `d`; false at end of stream. Throws buffer_full when
  /// `limit` bytes (or `most`, when given) are already buffered, timed_out at the deadline (what
  /// is buffered stays buffered). `d` must live until the co_await ends.
  template <class = void>
  Task<bool> fill(std::size_t most = 0, const Deadline& d = Deadline{}) {
    if (eof) co_return false;
    if (most == 0) most = options_.limit;
    if (available() >= most) {
      throw std::system_error(make_error_code(errc::buffer_full),
                              where("StreamReader read", "from") + ": more than " + std::to_string(most) +
                                  " bytes buffered (the limit)");
    }
    release_rbuf();  // no buffer held while waiting on an idle connection
    co_return co_await IoAwaiter<FillOp>(fd(), FillOp{this, most}, d, nullptr) > 0;
  }

  /// Receives into the state's buffer; the buffer is taken just before the system call and
  /// given back when the call would block with nothing buffered.
  struct FillOp {
    static constexpr Direction direction = Direction::read;
    StreamState* s;
    std::size_t limit;  // the most bytes buffered
    std::size_t room = 0;
    std::size_t done = 0;
    bool perform(native_handle h, std::error_code& ec) noexcept {
      if (s->transport_ != nullptr) [[unlikely]] return s->fill_transported(*this, h, ec);
      ec.clear();
      const bool fresh = s->rbuf == nullptr;
      if (!s->make_room()) {
        ec = detail::make_errc(std::errc::not_enough_memory);
        return true;
      }
      room = (std::min)(s->rcap - s->rend, limit - (std::min)(limit, s->available()));
      done = recv_some(h, s->rbuf + s->rend, room, 0, ec);
      if (ec) {
        if (!would_block(ec)) return true;
        s->release_rbuf();
        return false;
      }
      if (done == 0) {
        s->eof = true;
        s->release_rbuf();
      }
      s->activity += done != 0;
      s->rend += done;
      if (fresh) s->fit_fresh_block(done);
      return true;
    }
    [[nodiscard]] bool drained() const noexcept { return done > 0 && done < room; }
    [[nodiscard]] std::size_t result() const noexcept { return done; }
    [[noreturn]] void raise(std::error_code ec, std::chrono::steady_clock::duration waited) const {
      throw std::system_error(ec, s->where("StreamReader read", "from", ec, waited));
    }
  };

  /// The transport under this stream; null on a plain one.
  [[nodiscard]] StreamTransport* transport() const noexcept { return transport_.get(); }

  /// FillOp::perform through the transport: decodes what it holds, receiving more wire bytes
  /// only when it needs them. Never reports the socket drained: the transport may still hold
  /// a whole record when the socket is empty, and the next read must decode it, not wait.
  /// Out of line, as take_transported: inlined, they made the plain path's callers too large
  /// to inline (callgrind, bench/NOTES.md).
  [[gnu::noinline]] bool fill_transported(FillOp& op, native_handle h, std::error_code& ec) noexcept {
    ec.clear();
    op.done = 0;
    op.room = 0;
    for (;;) {
      if (!make_room()) {
        ec = detail::make_errc(std::errc::not_enough_memory);
        return true;
      }
      for (;;) {
        const std::size_t room = (std::min)(rcap - rend, op.limit - (std::min)(op.limit, available()));
        if (room == 0) break;
        const std::size_t n = transport_->decode({rbuf + rend, room}, ec);
        if (ec || n == 0) break;
        rend += n;
        op.done += n;
      }
      op.room = op.done;
      if (!send_transport_output() && !ec) ec = write_error();  // the peer does not read our answers
      if (ec || op.done > 0) return true;
      if (transport_->input_closed()) {
        eof = true;
        release_rbuf();
        return true;
      }
      const std::size_t got = receive_wire(h, ec);
      if (ec) {
        if (!would_block(ec)) return true;
        release_rbuf();
        return false;
      }
      if (got == 0) {
        transport_->input_ended(ec);
        if (!ec) eof = true;
        release_rbuf();
        return true;
      }
    }
  }

  /// Receives straight into a caller's buffer (read_some with nothing buffered).
  struct DirectOp {
    static constexpr Direction direction = Direction::read;
    StreamState* s;
    std::byte* data;
    std::size_t size;
    std::size_t done = 0;
    bool perform(native_handle h, std::error_code& ec) noexcept {
      ec.clear();
      done = recv_some(h, data, size, 0, ec);
      if (ec) return !would_block(ec);
      if (done == 0) s->eof = true;
      s->activity += done != 0;
      return true;
    }
    [[nodiscard]] bool drained() const noexcept { return done > 0 && done < size; }
    [[nodiscard]] std::size_t result() const noexcept { return done; }
    [[noreturn]] void raise(std::error_code ec, std::chrono::steady_clock::duration waited) const {
      throw std::system_error(ec, s->where("StreamReader read_some", "from", ec, waited));
    }
  };

  // The peer's address (a sockaddr_in or sockaddr_in6), kept from the start for error messages:
  // once a reset has ended the connection, getpeername fails. One system call per connection.
  void remember_peer() noexcept {
    RawAddress a;
    a.size = sizeof a.storage;
    if (peer_address(fd(), a.data(), &a.size) || static_cast<std::size_t>(a.size) > sizeof peer_) return;
    std::memcpy(peer_, a.data(), static_cast<std::size_t>(a.size));
    peer_size_ = static_cast<unsigned char>(a.size);
  }
  alignas(8) unsigned char peer_[28] = {};  // sizeof(sockaddr_in6)

 private:
  UniqueHandle handle_;  // here: fills the 8-byte word that peer_ leaves open

 public:
  /// The peer's address as remembered at the start; empty if it was not known then.
  [[nodiscard]] Endpoint peer() const noexcept {
    return peer_size_ != 0 ? Endpoint::from_native(peer_, peer_size_) : Endpoint{};
  }

  [[nodiscard]] std::size_t first_block() const noexcept {
    return (std::min)(options_.limit, std::size_t{64 * 1024});
  }
  /// After a receive of `n` bytes into a block taken for it: a few bytes move to a small block,
  /// and the large one goes back to the cache at once, for the next connection's receive. A
  /// poll reports up to 256 connections, each of which receives before any handler runs to give
  /// its block back: as 64 KiB blocks, that was a heap allocation per message past the cache's
  /// eight (35 % of the server's instructions with 1,000 connections). Every receive still
  /// offers 64 KiB, as the raw epoll server does: reads sized after the messages seen so far
  /// fell out of step with the sender's segments and halved a bulk stream in one run of two.
  void fit_fresh_block(std::size_t n) noexcept {
    if (n == 0 || n > small_read || rcap <= small_read || rbegin != 0 || rend != n) return;
    auto [p, cap] = BufferCache::acquire(n);
    if (p == nullptr) return;  // keeps the large one
    std::memcpy(p, rbuf, n);
    BufferCache::release(rbuf, rcap);
    rbuf = p;
    rcap = cap;
  }
  static constexpr std::size_t small_read = 4096;

  // --- writing ---

  [[nodiscard]] std::size_t buffered() const noexcept { return wbuf_.size() - wbegin_; }
  [[nodiscard]] std::error_code write_error() const noexcept { return werror_; }
  [[nodiscard]] bool closing() const noexcept { return close_pending_ || closed_; }
  [[nodiscard]] bool closed() const noexcept { return closed_; }

  /// How much take() takes: what the high-water mark allows, or all of it (try_write's whole
  /// message, past the mark).
  enum class Taking { up_to_high_water, whole };

  /// Sends or buffers from [data, data + left) what the high-water mark allows (all of it when
  /// `how` is whole); true once all of it is taken or an error is stored in `ec`.
  bool take(const std::byte*& data, std::size_t& left, std::error_code& ec,
            Taking how = Taking::up_to_high_water) noexcept {
    if (werror_) {
      ec = werror_;
      return true;
    }
    if (closing() || eof_pending_ || eof_sent_) {
      ec = detail::make_errc(std::errc::broken_pipe);
      return true;
    }
    if (transport_ != nullptr) [[unlikely]] return take_transported(data, left, ec, how);
    if (buffered() == 0) {
      // Nothing queued: write straight from the caller's bytes, no copy.
      while (left > 0) {
        std::error_code e;
        const auto n = send_some(fd(), data, left, e);
        if (e) {
          if (would_block(e)) break;
          fail(e);
          ec = e;
          return true;
        }
        data += n;
        left -= n;
      }
      if (left == 0) return true;
    }
    const std::size_t room = options_.high_water - (std::min)(options_.high_water, buffered());
    const std::size_t n = how == Taking::whole ? left : (std::min)(room, left);
    if (n > 0) {
      if (wbegin_ > 0) {  // keep the buffer's bytes at its front
        wbuf_.erase(wbuf_.begin(), wbuf_.begin() + static_cast<std::ptrdiff_t>(wbegin_));
        wbegin_ = 0;
      }
      try {
        wbuf_.insert(wbuf_.end(), data, data + n);
      } catch (const std::bad_alloc&) {
        ec = detail::make_errc(std::errc::not_enough_memory);
        return true;
      }
      data += n;
      left -= n;
    }
    start_flushing();
    return left == 0;
  }

  /// take() through the transport: the buffer holds wire bytes; each piece is encoded (as much
  /// as there is room for) and sent at once when the socket takes it. Room is counted in wire
  /// bytes, which outnumber the plaintext (a record's header and tag): a whole take cannot ask
  /// for room of the plaintext's size, or its tail would not fit.
  [[gnu::noinline]] bool take_transported(const std::byte*& data, std::size_t& left, std::error_code& ec,
                                          Taking how) noexcept {
    while (left > 0) {
      const std::size_t room = options_.high_water - (std::min)(options_.high_water, buffered());
      const std::size_t n = how == Taking::whole ? left : (std::min)(room, left);
      if (n == 0) break;
      const std::size_t took = transport_->encode({data, n}, ec);
      if (!ec && took == 0 && how == Taking::whole) ec = make_error_code(errc::buffer_full);  // would be lost
      if (!ec) append_transport_output(ec);
      if (!ec) send_buffered(ec);
      if (ec) {
        fail(ec);
        return true;
      }
      data += took;
      left -= took;
      if (took == 0) break;
    }
    start_flushing();
    return left == 0;
  }

  /// Receives wire bytes (no more than the transport takes) and feeds them to it.
  std::size_t receive_wire(native_handle h, std::error_code& ec) noexcept {
    const std::size_t want = (std::min)(transport_->input_room(), StreamTransport::wire_chunk);
    if (want == 0) {  // its input is full and yields nothing: not the peer we expect
      ec = make_error_code(errc::buffer_full);
      return 0;
    }
    auto [wire, cap] = BufferCache::acquire(want);
    if (wire == nullptr) {
      ec = detail::make_errc(std::errc::not_enough_memory);
      return 0;
    }
    const std::size_t got = recv_some(h, wire, want, 0, ec);
    activity += !ec && got != 0;
    if (!ec && got > 0 && transport_->feed({wire, got}) != got) ec = make_error_code(errc::buffer_full);
    BufferCache::release(wire, cap);
    return got;
  }

  /// Moves the transport's output to the end of the write buffer.
  void append_transport_output(std::error_code& ec) noexcept {
    const auto out = transport_->output();
    if (out.empty()) return;
    if (wbegin_ > 0) {
      wbuf_.erase(wbuf_.begin(), wbuf_.begin() + static_cast<std::ptrdiff_t>(wbegin_));
      wbegin_ = 0;
    }
    try {
      wbuf_.insert(wbuf_.end(), out.begin(), out.end());
    } catch (const std::bad_alloc&) {
      ec = detail::make_errc(std::errc::not_enough_memory);
      return;
    }
    transport_->consume_output(out.size());
  }
  /// Sends from the write buffer what the socket takes now.
  void send_buffered(std::error_code& ec) noexcept {
    while (buffered() > 0) {
      const auto n = send_some(fd(), wbuf_.data() + wbegin_, buffered(), ec);
      if (ec) {
        if (would_block(ec)) ec.clear();
        return;
      }
      wbegin_ += n;
    }
    wbuf_.clear();
    wbegin_ = 0;
  }
  /// What the transport wrote on its own while reading (alerts, key updates) goes out. False
  /// when it would pass unsolicited_limit: the connection then fails with buffer_full.
  bool send_transport_output() noexcept {
    if (transport_->output().empty() || closed_ || werror_) return !overflowed_;
    // A peer that makes the transport answer (TLS KeyUpdate requests) and never reads would
    // grow the buffer without bound: what reading adds since it was last empty is bounded.
    if (buffered() == 0) unsolicited_ = 0;
    // Each addition is capped: past the limit the connection fails, so the count stays small.
    unsolicited_ += static_cast<std::uint32_t>((std::min)(transport_->output().size(), unsolicited_limit + 1));
    if (unsolicited_ > unsolicited_limit) {
      overflowed_ = true;
      fail(make_error_code(errc::buffer_full));
      return false;
    }
    std::error_code ec;
    append_transport_output(ec);
    // Sent at once when it can be: an edge-triggered backend reports writability only after
    // a send found the socket full.
    if (!ec && !flushing_) send_buffered(ec);
    if (ec) {
      fail(ec);
      return true;
    }
    start_flushing();
    return true;
  }
  /// The most bytes reading may add to the write buffer while the peer does not take them.
  static constexpr std::size_t unsolicited_limit = 64 * 1024;

  /// Puts `t` under this stream (asyncio's start_tls). Wire bytes already buffered for the
  /// reader (sent by the peer right after the plaintext exchange) are fed to it first; the
  /// write buffer must be empty.
  void install_transport(std::unique_ptr<StreamTransport> t, std::error_code& ec) noexcept {
    transport_ = std::move(t);
    if (available() > 0 && transport_->feed({rdata(), available()}) != available()) ec = make_error_code(errc::buffer_full);
    consume(available());
    release_rbuf();
  }

  /// The opening exchange's system calls (handshake), each awaited with its deadline.
  struct SendWireOp {
    static constexpr Direction direction = Direction::write;
    StreamState* s;
    bool perform(native_handle, std::error_code& ec) noexcept {
      ec.clear();
      s->send_buffered(ec);
      return ec || s->buffered() == 0;
    }
    [[nodiscard]] std::size_t result() const noexcept { return 0; }
    [[noreturn]] void raise(std::error_code ec, std::chrono::steady_clock::duration waited) const {
      s->raise_opening(ec, waited);
    }
  };
  struct RecvWireOp {
    static constexpr Direction direction = Direction::read;
    StreamState* s;
    bool perform(native_handle h, std::error_code& ec) noexcept {
      ec.clear();
      const std::size_t got = s->receive_wire(h, ec);
      if (ec) return !would_block(ec);
      if (got == 0) {  // the peer left during the opening
        s->transport_->input_ended(ec);
        if (!ec) ec = make_error_code(errc::end_of_stream);
      }
      return true;
    }
    [[nodiscard]] std::size_t result() const noexcept { return 0; }
    [[noreturn]] void raise(std::error_code ec, std::chrono::steady_clock::duration waited) const {
      s->raise_opening(ec, waited);
    }
  };
  /// Puts `t` under this stream and runs its opening exchange, each step within `d`; what the
  /// writer still buffers goes out first, as plaintext. Throws std::system_error naming the
  /// opening and the peer (timed_out at the deadline). No read or write may be in flight.
  template <class = void>
  Task<void> open_transport(std::unique_ptr<StreamTransport> t, Deadline d) {
    if (transport_ != nullptr) throw std::invalid_argument("sockpat: the stream already has a transport");
    if (closing() || fd() == invalid_handle) detail::throw_error(make_error_code(errc::not_connected), "StreamWriter start_tls");
    if (werror_) throw std::system_error(werror_, where("StreamWriter start_tls", "to"));
    stop_flushing();  // the opening's own sends wait on the socket from now on
    while (buffered() > 0) co_await IoAwaiter<PlainSendOp>(fd(), PlainSendOp{{this}}, d, nullptr);
    std::error_code ec;
    install_transport(std::move(t), ec);
    for (;;) {
      const bool done = !ec && transport_->open(ec);
      std::error_code sent;
      append_transport_output(sent);
      // An alert saying why the opening failed goes out before the error is raised.
      while (!sent && buffered() > 0) co_await IoAwaiter<SendWireOp>(fd(), SendWireOp{this}, d, &sent);
      if (ec) raise_opening(ec);
      if (sent) raise_opening(sent);
      if (done) break;
      co_await IoAwaiter<RecvWireOp>(fd(), RecvWireOp{this}, d, nullptr);
    }
    wbuf_.clear();
    wbegin_ = 0;
    std::vector<std::byte>().swap(wbuf_);
  }
  struct PlainSendOp : SendWireOp {
    [[noreturn]] void raise(std::error_code ec, std::chrono::steady_clock::duration waited) const {
      throw std::system_error(ec, s->where("StreamWriter start_tls", "to", ec, waited));
    }
  };

  /// "TLS handshake with PEER: <the transport's words>".
  [[noreturn]] void raise_opening(std::error_code ec, std::chrono::steady_clock::duration waited = {}) const {
    throw std::system_error(ec, where(transport_->opening_name(), "with", ec, waited));
  }

  /// Takes all of [data, data + size) now or none of it: false when earlier writes wait or the
  /// buffer has no room for all of it. With nothing buffered it is taken whole, even past the
  /// high-water mark. Errors as take().
  bool try_take(const std::byte* data, std::size_t size, std::error_code& ec) noexcept {
    if (!writers.empty()) return false;
    if (buffered() != 0 && buffered() + size > options_.high_water) return false;
    std::size_t left = size;
    (void)take(data, left, ec, Taking::whole);  // all of it, or an error in ec
    return true;
  }

  /// The coroutines waiting on the writer side: writes and drains in the order they came (a
  /// write takes its bytes only once the ones before it have taken theirs, so each write's
  /// bytes are contiguous on the wire), and wait_closed()s.
  WaitList writers;
  WaitList closers;
  /// A writer left the line (cancelled): the next one may go on.
  void writer_left() noexcept { wake(); }

  void write_eof() noexcept {
    if (eof_sent_ || closing()) return;
    if (transport_ != nullptr) end_transport_output();
    eof_pending_ = true;
    if (buffered() == 0) finish_pending();
  }

  /// Closes once the buffer is sent; the state keeps itself alive until then (through a copy
  /// of `owner`, a pointer to it). On a thread with no loop, where nothing would send the rest,
  /// what the socket takes now is sent and the rest dropped, as abort() does.
  void close(const std::shared_ptr<StreamState>& owner) noexcept {
    if (closing()) return;
    if (transport_ != nullptr) end_transport_output();
    close_pending_ = true;
    if ((buffered() == 0 && transport_ == nullptr) || werror_) {
      finish_close();
      return;
    }
    if (!flushing_ && thread_reactor() == nullptr) [[unlikely]] {
      // Keeping itself alive here would keep the state and its descriptor for good.
      std::error_code ignored;
      send_buffered(ignored);
      abort();
      return;
    }
    self_ = owner;
    // A peer that never reads again would keep the connection (and this state) for good.
    if (Reactor* r = thread_reactor(); r != nullptr && options_.close_timeout.count() > 0) {
      when = std::chrono::steady_clock::now() + options_.close_timeout;
      reactor_ = r;
      linger_armed_ = true;
      r->add_timer(this);
    }
    if (buffered() == 0) finish_close();  // the transport's ending is sent: wait for the peer's
  }

  /// Closes now, dropping what is buffered.
  void abort() noexcept {
    if (closed_) return;
    hard_close_ = true;
    wbuf_.clear();
    wbegin_ = 0;
    close_pending_ = true;
    finish_close();
  }

 private:
  // The transport's ending (close_notify) goes after what is buffered, once. The transport's
  // steps of closing are out of line: close() is inlined into every StreamWriter's destructor.
  [[gnu::noinline]] void end_transport_output() noexcept {
    if (output_ended_ || werror_ || eof_sent_ || eof_pending_) return;
    output_ended_ = true;
    std::error_code ec;
    transport_->end_output(ec);
    if (!ec) append_transport_output(ec);
    if (!ec) send_buffered(ec);
    if (ec) {
      fail(ec);
      return;
    }
    start_flushing();
  }

  // After its own ending is sent, a transported stream waits for the peer's (bounded by the
  // close timeout) before closing the socket: closing with the peer's bytes unread would reset
  // the connection, and the peer could lose our ending and report a truncation.
  [[gnu::noinline]] bool await_peer_end() noexcept {
    if (transport_ == nullptr || awaiting_end_ || hard_close_ || werror_ || eof || transport_->input_closed() ||
        heap_index == not_in_heap) {  // the close timer bounds the wait: none, no wait
      return false;
    }
    if (reactor_->wait_io(fd(), Direction::read, this)) return false;  // a read is pending: it sees the end
    awaiting_end_ = true;
    (void)shutdown_handle(fd(), shut_send);  // and a peer that answers only an end of stream sees one
    return true;
  }
  void stop_awaiting_end() noexcept {
    if (!awaiting_end_) return;
    awaiting_end_ = false;
    reactor_->unwait_io(fd(), Direction::read, this);
  }
  // Reads and drops what arrives until the peer's ending, the end of the stream or an error.
  void read_to_end() noexcept {
    auto [plain, cap] = BufferCache::acquire(StreamTransport::wire_chunk);
    if (plain == nullptr) return finish_close_now();
    for (int i = 0; i < 64; ++i) {
      std::error_code ec;
      const std::size_t got = receive_wire(fd(), ec);
      if (ec && would_block(ec)) break;
      while (!ec && transport_->decode({plain, cap}, ec) > 0) {
      }
      if (ec || got == 0 || transport_->input_closed()) {
        BufferCache::release(plain, cap);
        return finish_close_now();
      }
    }
    BufferCache::release(plain, cap);
  }
  void finish_close_now() noexcept {
    hard_close_ = true;
    finish_close();
  }
  // The waiter's three roles. Readable: only while awaiting the peer's ending (nothing is
  // buffered then, so a writability that comes with it has nothing to flush). Writable: flush.
  void on_ready() noexcept override {
    if (awaiting_end_) {
      read_to_end();
    } else if (flushing_) {
      flush();
    }
  }
  // close()'s bound: what is still buffered when it expires is dropped.
  void on_timer() noexcept override {
    linger_armed_ = false;
    abort();
  }
  void cancel(std::error_code why) noexcept override {
    // Out of the timer heap while armed: the close timer itself was cancelled (the loop is
    // closing) or could not be armed (no memory).
    if (linger_armed_ && heap_index == not_in_heap) {
      linger_armed_ = false;
      abort();
      return;
    }
    // A wait on the descriptor: it was closed elsewhere or the loop is closing.
    if (awaiting_end_) {
      finish_close_now();
    } else if (flushing_) {
      flushing_ = false;
      fail(why);
    }
  }

  void start_flushing() noexcept {
    if (flushing_ || buffered() == 0) return;
    Reactor* r = thread_reactor();
    if (r == nullptr) return;
    if (auto ec = r->wait_io(fd(), Direction::write, this)) {
      fail(ec);
      return;
    }
    reactor_ = r;
    flushing_ = true;
  }
  void stop_flushing() noexcept {
    if (!flushing_) return;
    flushing_ = false;
    reactor_->unwait_io(fd(), Direction::write, this);
  }

  void flush() noexcept {
    // A pending close holds this state through self_ alone, and a failure below ends the close
    // and drops it: keep it alive until this function is done with it.
    const std::shared_ptr<StreamState> keep = close_pending_ ? self_ : nullptr;
    while (buffered() > 0) {
      std::error_code ec;
      const auto n = send_some(fd(), wbuf_.data() + wbegin_, buffered(), ec);
      if (ec) {
        if (!would_block(ec)) fail(ec);
        break;
      }
      wbegin_ += n;
      activity += n != 0;
    }
    if (buffered() == 0) {
      std::vector<std::byte>().swap(wbuf_);  // an idle connection keeps no write buffer
      wbegin_ = 0;
      stop_flushing();
    }
    wake();
    if (buffered() == 0) finish_pending();
  }

  void fail(std::error_code ec) noexcept {
    if (!werror_) werror_ = ec;
    wbuf_.clear();
    wbegin_ = 0;
    stop_flushing();
    wake();
    if (close_pending_) finish_close();
  }

  // Serves the waiting writers in order while there is room (each on_ready() takes what it can
  // and leaves the list once done), and the wait_closed()s once closed.
  void wake() noexcept {
    if (!(buffered() <= options_.low_water || werror_ || closed_)) return;
    while (Waiter* w = writers.front()) {
      w->on_ready();
      if (writers.front() == w) break;  // the head still waits for room
    }
    if (closed_) closers.complete_all();
  }

  void finish_pending() noexcept {
    if (eof_pending_ && !eof_sent_) {
      eof_pending_ = false;
      eof_sent_ = true;
      (void)shutdown_handle(fd(), shut_send);
    }
    if (close_pending_) finish_close();
  }

  void finish_close() noexcept {
    if (closed_) return;
    if (transport_ != nullptr && await_peer_end()) return;
    stop_awaiting_end();
    if (heap_index != not_in_heap) reactor_->remove_timer(this);
    linger_armed_ = false;
    stop_flushing();
    closed_ = true;
    (void)handle_.close();  // also cancels a pending read on it
    wake();
    auto keep = std::move(self_);  // may destroy *this on return: nothing after it
  }

  // An idle connection keeps this state, and each padding hole costs it (bench/NOTES.md, idle
  // memory): the byte-sized fields go in the options' tail padding (no_unique_address lets them),
  // the flags are bits.
  [[no_unique_address]] StreamOptions options_;
  bool flushing_ : 1 = false;
  bool overflowed_ : 1 = false;  // unsolicited_ passed unsolicited_limit: the connection failed
  bool eof_pending_ : 1 = false;
  bool eof_sent_ : 1 = false;
  bool close_pending_ : 1 = false;
  bool closed_ : 1 = false;
  bool output_ended_ : 1 = false;  // the transport's ending is queued
  bool awaiting_end_ : 1 = false;  // closing: waiting for the peer's ending
  bool hard_close_ : 1 = false;    // closing: no more waiting
  bool linger_armed_ : 1 = false;  // close()'s timer is armed (or being armed)
  Family family_;

 public:
  unsigned char peer_size_ = 0;  ///< the size of peer_; 0 when the peer's address is unknown
  bool eof = false;  ///< reading: the peer ended the stream
  /// Bumped by each receive that got bytes, each write handed to the writer and each send from
  /// the buffer: a stream server's idle timeout watches it change.
  std::uint32_t activity = 0;

 private:
  std::uint32_t unsolicited_ = 0;  // what reading added to the write buffer since it was last empty
  std::vector<std::byte> wbuf_;
  std::size_t wbegin_ = 0;
  std::error_code werror_;
  Reactor* reactor_ = nullptr;  // where this state waits (flush, close timer, peer's ending)
  std::shared_ptr<StreamState> self_;
  std::unique_ptr<StreamTransport> transport_;
};

/// What a timed write keeps beside its bytes: its size, to say how much of it was taken.
template <class Bound>
using WriteSize = std::conditional_t<std::is_same_v<Bound, NoDeadline>, NoDeadline, std::size_t>;

/// Waits on the writer side of a StreamState: for its turn and room (write), for the
/// low-water mark (drain) or for the close (wait_closed), within a deadline when Bound is
/// DeadlinePart. Lives in the awaiting frame.
template <class Bound>
class [[nodiscard]] BasicWriterAwaiter final : private Waiter {
 public:
  enum class Kind : unsigned char { write, drain, closed };
  BasicWriterAwaiter(StreamState* s, Kind k, const std::byte* data, std::size_t size, Bound bound = {}) noexcept
      : s_(s), data_(data), left_(size), bound_(std::move(bound)), kind_(k) {
    if constexpr (!std::is_same_v<Bound, NoDeadline>) size_ = size;
  }
  using Waiter::cancel_before_start;  // then it takes no byte

  // await_ready and await_resume are inlined into the awaiting coroutine (GCC did not, for
  // the template: callgrind +60 instructions per echoed message); their cold paths are not.
  [[gnu::always_inline]] bool await_ready() {
    if (begin()) return true;  // the loop is closing: operation_canceled
    if (s_ == nullptr) {
      set_error(make_error_code(errc::not_connected));
      return true;
    }
    if (bound_.stop_requested()) {
      set_error(canceled());
      return true;
    }
    if (kind_ != Kind::closed && !s_->writers.empty()) return false;  // wait its turn
    if (!done()) return false;
    if (reactor().spend_inline()) return true;
    yield_ = true;  // taken, but its coroutine has run long enough: let the others run first
    return false;
  }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
    if (yield_) {  // finished already (its bytes are taken): only a turn in the ready queue
      attach(h);
      complete();
      return true;
    }
    if (!arm(h)) return false;
    if (bound_.passed()) {
      (void)finish(make_errc(std::errc::timed_out));
      return false;
    }
    list().push_back(this);
    bound_.watch(*this, reactor());
    return true;
  }
  [[gnu::always_inline]] void await_resume() {
    bound_.release();
    if (error()) [[unlikely]] fail();
  }

 private:
  [[noreturn, gnu::noinline]] void fail() {
    const char* what = kind_ == Kind::write ? "StreamWriter write" : kind_ == Kind::drain ? "StreamWriter drain" : "StreamWriter wait_closed";
    if (s_ == nullptr) throw std::system_error(error(), what);
    std::string where = s_->where(what, kind_ == Kind::closed ? "on" : "to", error(), bound_.timeout());
    if constexpr (!std::is_same_v<Bound, NoDeadline>) {
      // The bytes taken before the deadline stay buffered and are sent: say how many.
      if (kind_ == Kind::write) throw TransferError(error(), std::move(where), size_ - left_);
    }
    throw std::system_error(error(), where);
  }
  WaitList& list() const noexcept { return kind_ == Kind::closed ? s_->closers : s_->writers; }
  // Reports into the waiter's own error: a local std::error_code would cost a call to
  // system_category() per write.
  bool done() noexcept {
    switch (kind_) {
      case Kind::write:
        ++s_->activity;
        return s_->take(data_, left_, error_slot());
      case Kind::drain:
        if (s_->write_error()) {
          set_error(s_->write_error());
          return true;
        }
        return s_->buffered() <= s_->options().low_water;
      case Kind::closed:
        return s_->closed();
    }
    return true;
  }
  void on_ready() noexcept override {
    if (!waiting() || !done()) return;
    list().erase(this);
    bound_.unwatch(*this, reactor());
    complete();
  }
  void on_timer() noexcept override {
    unlink();
    complete(make_errc(std::errc::timed_out));
  }
  // Cancelled or timed out: leaves the line; a write may have taken part of its bytes, which
  // stay buffered and are sent. The next writer in line may go on.
  void unlink() noexcept override {
    const bool was_first = s_->writers.front() == this;
    list().erase(this);
    bound_.unwatch(*this, reactor());
    if (was_first) s_->writer_left();
  }

  // Kept small: one is in the frame of every coroutine that writes (its writer outlives it).
  StreamState* s_;
  const std::byte* data_;
  std::size_t left_;
  [[no_unique_address]] Bound bound_;
  [[no_unique_address]] WriteSize<Bound> size_;
  Kind kind_;
  bool yield_ = false;
};
using WriterAwaiter = BasicWriterAwaiter<NoDeadline>;
using TimedWriterAwaiter = BasicWriterAwaiter<DeadlinePart>;

/// StreamReader::read_chunk: hands out what is buffered, or receives into the reader's buffer
/// (taken only once the socket has data) and hands that out. Lives in the awaiting frame; it is
/// IoAwaiter over the reader's buffer, and without a deadline (Bound NoDeadline) it has no
/// deadline or stop-token part at all, which keeps an idle connection's coroutine frame small.
template <class Bound>
class [[nodiscard]] BasicChunkAwaiter final : private Waiter {
 public:
  BasicChunkAwaiter(StreamState* s, std::size_t max, Bound bound = {}) noexcept
      : op_{s, s->options().limit}, max_(max), bound_(std::move(bound)) {}
  BasicChunkAwaiter(const BasicChunkAwaiter&) = delete;
  BasicChunkAwaiter& operator=(const BasicChunkAwaiter&) = delete;
  ~BasicChunkAwaiter() = default;
  // Then await_ready may still find bytes buffered, and await_resume throws before it takes them.
  using Waiter::cancel_before_start;

  // Inlined into the awaiting coroutine, as the writer's (BasicWriterAwaiter says why).
  [[gnu::always_inline]] bool await_ready() {
    StreamState* s = op_.s;
    if (s->available() > 0 || s->eof || max_ == 0) return true;
    if (begin()) return true;  // the loop is closing: operation_canceled
    if (bound_.stop_requested()) {
      set_error(canceled());
      return true;
    }
    s->release_rbuf();         // no buffer held while waiting
    if (s->fd() == invalid_handle) {  // closed (writer.close() or abort())
      set_error(make_error_code(errc::not_connected));
      return true;
    }
    if (!reactor().maybe_ready(s->fd(), Direction::read)) return false;
    if (!perform_out_of_line()) return false;
    if (reactor().spend_inline()) return true;
    yield_ = true;  // received, but its coroutine has run long enough: let the others run first
    return false;
  }
  template <class Promise>
  bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
    if (yield_) {  // finished already (the bytes are in): only a turn in the ready queue
      attach(h);
      complete();
      return true;
    }
    if (!arm(h)) return false;
    if (bound_.passed()) {
      (void)finish(make_errc(std::errc::timed_out));
      return false;
    }
    if (auto ec = reactor().wait_io(op_.s->fd(), Direction::read, this)) {
      (void)finish(ec);
      return false;
    }
    bound_.watch(*this, reactor());
    return true;
  }
  [[gnu::always_inline]] std::span<const std::byte> await_resume() {
    bound_.release();
    if (error()) [[unlikely]] fail();
    StreamState* s = op_.s;
    const std::size_t k = (std::min)(max_, s->available());
    const std::span<const std::byte> out(s->rdata(), k);
    s->consume(k);
    return out;
  }

 private:
  [[noreturn, gnu::noinline]] void fail() const {
    throw std::system_error(error(), op_.s->where("StreamReader read_chunk", "from", error(), bound_.timeout()));
  }
  bool perform() noexcept {
    std::error_code& ec = error_slot();
    if (!op_.perform(op_.s->fd(), ec)) return false;
    if (!ec && op_.drained()) reactor().drained(op_.s->fd(), Direction::read);
    return true;
  }
  // await_ready's call: inlined there, perform() made every await_ready (most of which find
  // bytes buffered and return at once) save and restore six registers (callgrind: +8
  // instructions per read). on_ready keeps it inline: it performs every time.
  [[gnu::noinline]] bool perform_out_of_line() noexcept { return perform(); }
  void on_ready() noexcept override {
    if (!perform()) return;
    BasicChunkAwaiter::unlink();  // not through the vtable: this is the hot path
    complete();
  }
  void on_timer() noexcept override {
    unlink();
    complete(make_errc(std::errc::timed_out));
  }
  void unlink() noexcept override {
    reactor().unwait_io(op_.s->fd(), Direction::read, this);
    bound_.unwatch(*this, reactor());
  }

  StreamState::FillOp op_;
  std::size_t max_;
  [[no_unique_address]] Bound bound_;
  bool yield_ = false;
};
using ChunkAwaiter = BasicChunkAwaiter<NoDeadline>;
using TimedChunkAwaiter = BasicChunkAwaiter<DeadlinePart>;

inline std::string_view view_of(const std::byte* p, std::size_t n) noexcept {
  return {reinterpret_cast<const char*>(p), n};
}

struct StreamAccess;  // the state under a reader or writer, for start_tls

}  // namespace detail

/// The reading half of a stream, as asyncio's: every read returns bytes as a std::string
/// (empty at end of stream). Reads of one reader must not overlap.
class StreamReader {
 public:
  StreamReader() noexcept = default;
  explicit StreamReader(std::shared_ptr<detail::StreamState> s) noexcept : s_(std::move(s)) {}

  // Every read takes a Deadline last (a timeout or a time point, and/or a stop token): past it,
  // the read throws std::system_error (timed_out, or operation_canceled) naming the peer and the
  // timeout, and what had arrived stays buffered for the next read.

  /// Up to `n` bytes, waiting for at least one; empty at end of stream.
  template <class = void>
  Task<std::string> read(std::size_t n = 65536, Deadline d = {}) {
    auto* s = state();
    if (s->available() == 0) co_await s->fill(0, d);
    const std::size_t k = (std::min)(n, s->available());
    std::string out(detail::view_of(s->rdata(), k));
    s->consume(k);
    co_return out;
  }

  /// Up to buffer.size() bytes into `buffer` (no allocation); 0 at end of stream. With nothing
  /// buffered it receives straight into `buffer`, without a copy.
  template <class = void>
  Task<std::size_t> read_some(std::span<std::byte> buffer, Deadline d = {}) {
    auto* s = state();
    if (s->available() == 0 && !buffer.empty() && s->transport() != nullptr && !co_await s->fill(0, d)) co_return 0;
    if (s->available() == 0 && !buffer.empty()) {
      if (s->eof) co_return 0;
      s->release_rbuf();
      const auto n = co_await detail::IoAwaiter<detail::StreamState::DirectOp>(
          s->fd(), detail::StreamState::DirectOp{s, buffer.data(), buffer.size()}, d, nullptr);
      co_return n;
    }
    const std::size_t k = (std::min)(buffer.size(), s->available());
    if (k > 0) std::memcpy(buffer.data(), s->rdata(), k);
    s->consume(k);
    co_return k;
  }

  /// Waits for at least one byte and returns up to `max` buffered bytes as a view into the
  /// reader's own buffer, valid until the next read on this reader; empty at end of stream.
  /// No copy and no buffer of the caller's: while it waits on an idle connection the reader
  /// holds no buffer at all, so a server of many idle connections stays small. An echo:
  /// `while (auto b = co_await r.read_chunk(); !b.empty()) co_await w.write(b);`
  [[nodiscard]] detail::ChunkAwaiter read_chunk(std::size_t max = static_cast<std::size_t>(-1)) {
    return detail::ChunkAwaiter(state(), max);
  }
  /// The same within `d` (an overload: without a deadline the awaiter carries none).
  [[nodiscard]] detail::TimedChunkAwaiter read_chunk(std::size_t max, const Deadline& d) {
    return detail::TimedChunkAwaiter(state(), max, detail::part_of(d));
  }

  /// Exactly `n` bytes. End of stream first throws TransferError (errc::end_of_stream) whose
  /// bytes_transferred() says how many arrived; those bytes stay readable.
  template <class = void>
  Task<std::string> read_exactly(std::size_t n, Deadline d = {}) {
    auto* s = state();
    std::string out;
    out.reserve(n);
    for (;;) {
      const std::size_t k = (std::min)(n - out.size(), s->available());
      out.append(detail::view_of(s->rdata(), k));
      s->consume(k);
      if (out.size() == n) co_return out;
      bool more = false;
      try {
        more = co_await s->fill(0, d);
      } catch (...) {
        // A timeout (or any failure) loses no byte: what was taken goes back in front of the rest.
        out.append(detail::view_of(s->rdata(), s->available()));
        s->put_back(reinterpret_cast<const std::byte*>(out.data()), out.size());
        throw;
      }
      if (!more) {
        const std::size_t got = out.size();
        // Give the partial bytes back, as asyncio keeps them in IncompleteReadError.partial.
        s->put_back(reinterpret_cast<const std::byte*>(out.data()), got);
        throw TransferError(make_error_code(errc::end_of_stream), s->where("StreamReader read_exactly", "from"), got);
      }
    }
  }

  /// Everything up to and including `separator`; std::nullopt at a clean end of stream (nothing
  /// buffered). Throws std::system_error (errc::frame_too_large) when the separator does not
  /// start within the first `limit` bytes, and TransferError (end_of_stream, bytes_transferred()
  /// the partial size) when the stream ends before it; in both cases the bytes stay readable.
  /// The same contract as FramedConnection::read_until (docs/patterns.md, "Lines and frames").
  template <class = void>
  Task<std::optional<std::string>> read_until(std::string separator, Deadline d = {}) {
    auto* s = state();
    if (separator.empty()) throw std::invalid_argument("sockpat: read_until needs a non-empty separator");
    const std::size_t limit = s->options().limit;
    std::size_t searched = 0;
    for (;;) {
      const auto hay = detail::view_of(s->rdata(), s->available());
      const auto at = hay.find(separator, searched);
      // Found past the limit, or not found in limit + separator bytes: the line is too long.
      if ((at != std::string_view::npos && at > limit) ||
          (at == std::string_view::npos && hay.size() >= limit + separator.size())) {
        throw std::system_error(make_error_code(errc::frame_too_large),
                                s->where("StreamReader read_until", "from") + ": no separator in the first " +
                                    std::to_string(limit) + " bytes (the limit)");
      }
      if (at != std::string_view::npos) {
        std::string out(hay.substr(0, at + separator.size()));
        s->consume(out.size());
        co_return out;
      }
      searched = hay.size() >= separator.size() ? hay.size() - separator.size() + 1 : 0;
      if (!co_await s->fill(limit + separator.size(), d)) {
        if (s->available() == 0) co_return std::nullopt;
        throw TransferError(make_error_code(errc::end_of_stream), s->where("StreamReader read_until", "from"),
                            s->available());
      }
    }
  }

  /// One line with its "\n" (read_until("\n")): std::nullopt at a clean end of stream, and the
  /// same errors. Unlike asyncio's readline, a partial last line is end_of_stream, not returned.
  template <class = void>
  Task<std::optional<std::string>> read_line(Deadline d = {}) {
    return read_until("\n", std::move(d));
  }

  /// One frame of `framing` (framing.hpp: DelimiterFraming, LengthPrefixFraming), without its
  /// delimiter or length prefix; std::nullopt at a clean end of stream. A frame that breaks the
  /// framing's rule throws std::system_error (errc::frame_too_large, errc::malformed_frame) and
  /// leaves every byte buffered; a stream that ends inside a frame throws TransferError
  /// (end_of_stream). A frame must also fit the reader's `limit` (errc::buffer_full otherwise).
  template <Framing F>
  Task<std::optional<std::string>> read_frame(F framing, Deadline d = {}) {
    auto* s = state();
    std::size_t resume = 0;
    for (;;) {
      const auto data = detail::view_of(s->rdata(), s->available());
      const FrameScan scan = framing.scan(data, resume);
      if (scan.status == FrameScan::Status::complete) {
        std::string out(data.substr(scan.offset, scan.size));
        s->consume(scan.consumed);
        co_return out;
      }
      if (scan.status == FrameScan::Status::error) {
        throw std::system_error(scan.error, s->where("StreamReader read_frame", "from"));
      }
      resume = scan.resume;  // an offset from the first unread byte: still right after fill() moves it
      if (!co_await s->fill(0, d)) {
        if (s->available() == 0) co_return std::nullopt;
        throw TransferError(make_error_code(errc::end_of_stream), s->where("StreamReader read_frame", "from"),
                            s->available());
      }
    }
  }

  /// True once the peer has ended the stream and every buffered byte was read.
  [[nodiscard]] bool at_eof() const noexcept { return s_ && s_->eof && s_->available() == 0; }
  /// Bytes buffered and not yet read.
  [[nodiscard]] std::size_t buffered() const noexcept { return s_ ? s_->available() : 0; }
  /// Bytes of buffer memory the reader holds now: 0 while a read waits with nothing buffered
  /// (and after a read_some that received straight into the caller's buffer).
  [[nodiscard]] std::size_t buffer_capacity() const noexcept { return s_ ? s_->rcap : 0; }

 private:
  friend struct detail::StreamAccess;
  detail::StreamState* state() const {
    if (!s_) detail::throw_error(make_error_code(errc::not_connected), "StreamReader");
    return s_.get();
  }
  std::shared_ptr<detail::StreamState> s_;
};

/// The writing half of a stream. `co_await write(bytes)` buffers (sending at once when it can)
/// and waits only when the buffer is at its high-water mark, so a peer that does not read
/// can never make it grow past it, drain() or not. Destroying the last writer closes the
/// stream once its buffer is sent.
class StreamWriter {
 public:
  using native_handle_type = detail::native_handle;
  StreamWriter() noexcept = default;
  explicit StreamWriter(std::shared_ptr<detail::StreamState> s) noexcept : s_(std::move(s)) {}
  StreamWriter(StreamWriter&&) noexcept = default;
  StreamWriter& operator=(StreamWriter&& o) noexcept {
    if (this != &o) {
      release();
      s_ = std::move(o.s_);
    }
    return *this;
  }
  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;
  ~StreamWriter() { release(); }

  /// Buffers `data` (which, like this writer, must live until the co_await ends). Throws std::system_error
  /// when the connection failed (broken_pipe after close or write_eof).
  [[nodiscard]] detail::WriterAwaiter write(std::span<const std::byte> data) {
    return {s_.get(), detail::WriterAwaiter::Kind::write, data.data(), data.size()};
  }
  [[nodiscard]] detail::WriterAwaiter write(std::string_view data) { return write(detail::bytes_of(data)); }
  /// The same within `d`: past it, throws TransferError (timed_out) whose bytes_transferred()
  /// says how much of `data` the writer took; those bytes stay buffered and are sent.
  [[nodiscard]] detail::TimedWriterAwaiter write(std::span<const std::byte> data, const Deadline& d) {
    return {s_.get(), detail::TimedWriterAwaiter::Kind::write, data.data(), data.size(), detail::part_of(d)};
  }
  [[nodiscard]] detail::TimedWriterAwaiter write(std::string_view data, const Deadline& d) {
    return write(detail::bytes_of(data), d);
  }

  /// Writes `payload` as one frame of `framing`; waits for room as write() does. Throws
  /// std::system_error (frame_too_large, or malformed_frame for a line holding its delimiter).
  template <Framing F>
  Task<void> write_frame(F framing, std::string payload, Deadline d = {}) {
    co_await write(encode_frame(framing, payload), d);
  }

  /// Waits until the buffer is at or below the low-water mark; throws if the connection failed.
  [[nodiscard]] detail::WriterAwaiter drain() { return {s_.get(), detail::WriterAwaiter::Kind::drain, nullptr, 0}; }
  /// The same within `d`: past it, throws std::system_error (timed_out); nothing buffered is lost.
  [[nodiscard]] detail::TimedWriterAwaiter drain(const Deadline& d) {
    return {s_.get(), detail::TimedWriterAwaiter::Kind::drain, nullptr, 0, detail::part_of(d)};
  }

  /// Takes all of `data` now (sends it, or buffers it below the high-water mark), or none of it
  /// and returns false: when earlier writes still wait their turn, or there is no room. Never
  /// suspends. With nothing buffered a message is taken whole, even past the high-water mark.
  /// Throws std::system_error as write() does (broken_pipe once closed).
  [[nodiscard]] bool try_write(std::span<const std::byte> data) {
    if (!s_) throw std::system_error(make_error_code(errc::not_connected), "StreamWriter try_write");
    std::error_code ec;
    const bool taken = s_->try_take(data.data(), data.size(), ec);
    if (ec) throw std::system_error(ec, s_->where("StreamWriter try_write", "to"));
    s_->activity += taken;
    return taken;
  }
  [[nodiscard]] bool try_write(std::string_view data) { return try_write(detail::bytes_of(data)); }

  /// Half-closes once the buffer is sent: the peer reads end of stream. Over TLS, where it
  /// cannot (can_write_eof() false, as asyncio's), throws std::system_error (operation_not_supported).
  void write_eof() {
    if (!s_) return;
    if (!can_write_eof()) {
      throw std::system_error(detail::make_errc(std::errc::operation_not_supported),
                              s_->where("StreamWriter write_eof", "to") + ": not over TLS; close() instead");
    }
    s_->write_eof();
  }
  /// Whether write_eof() works on this stream (asyncio's can_write_eof): false over TLS.
  [[nodiscard]] bool can_write_eof() const noexcept {
    return !s_ || s_->transport() == nullptr || s_->transport()->can_write_eof();
  }
  /// Closes once the buffer is sent (asyncio's close); wait_closed() waits for that.
  void close() noexcept {
    if (s_) s_->close(s_);
  }
  /// Closes now, dropping what is buffered.
  void abort() noexcept {
    if (s_) s_->abort();
  }
  [[nodiscard]] detail::WriterAwaiter wait_closed() { return {s_.get(), detail::WriterAwaiter::Kind::closed, nullptr, 0}; }
  [[nodiscard]] bool is_closing() const noexcept { return !s_ || s_->closing(); }

  /// Bytes buffered and not yet taken by the kernel (never above the high-water mark).
  [[nodiscard]] std::size_t buffered() const noexcept { return s_ ? s_->buffered() : 0; }
  /// Whether Nagle's algorithm is off (TCP_NODELAY; StreamOptions::no_delay); false for a
  /// Unix-domain stream and once closed.
  [[nodiscard]] bool no_delay() const noexcept {
    if (!s_ || s_->closed() || (s_->family() != Family::ipv4 && s_->family() != Family::ipv6)) return false;
    std::error_code ec;
    return detail::get_int_option(s_->fd(), detail::option::no_delay, ec) != 0 && !ec;
  }
  /// The peer's address (asyncio's get_extra_info('peername')); empty once closed.
  [[nodiscard]] Endpoint peer_endpoint() const noexcept {
    if (!s_ || s_->closed()) return {};
    detail::RawAddress a;
    a.size = sizeof a.storage;
    if (detail::peer_address(s_->fd(), a.data(), &a.size)) return {};
    return Endpoint::from_native(a.data(), a.size);
  }
  /// This end's address (asyncio's get_extra_info('sockname')); empty once closed.
  [[nodiscard]] Endpoint local_endpoint() const noexcept {
    if (!s_ || s_->closed()) return {};
    detail::RawAddress a;
    a.size = sizeof a.storage;
    if (detail::local_address(s_->fd(), a.data(), &a.size)) return {};
    return Endpoint::from_native(a.data(), a.size);
  }
  /// The socket under the stream (asyncio's get_extra_info('socket')), for options this class
  /// does not name; invalid once closed. Reading or writing it directly bypasses the buffers.
  [[nodiscard]] native_handle_type native_handle() const noexcept {
    return s_ && !s_->closed() ? s_->fd() : detail::invalid_handle;
  }
  /// SO_SNDBUF and SO_RCVBUF, as Connection's. Throw std::system_error naming the peer (not_connected once closed).
  void set_send_buffer_size(int bytes) { set_option(detail::option::send_buffer, bytes, "StreamWriter set SO_SNDBUF"); }
  [[nodiscard]] int send_buffer_size() const { return get_option(detail::option::send_buffer, "StreamWriter get SO_SNDBUF"); }
  void set_receive_buffer_size(int bytes) { set_option(detail::option::receive_buffer, bytes, "StreamWriter set SO_RCVBUF"); }
  [[nodiscard]] int receive_buffer_size() const {
    return get_option(detail::option::receive_buffer, "StreamWriter get SO_RCVBUF");
  }

 private:
  friend struct detail::StreamAccess;
  void release() noexcept {
    if (s_) s_->close(s_);
    s_.reset();
  }
  // Templates: instantiated only where used (the compile-time note at the top).
  template <class = void>
  void set_option(const detail::SocketOption& o, int value, const char* what) {
    const std::error_code ec =
        !s_ || s_->closed() ? make_error_code(errc::not_connected) : detail::set_int_option(s_->fd(), o, value);
    if (ec) throw std::system_error(ec, s_ ? s_->where(what, "on") : std::string(what));
  }
  template <class = void>
  [[nodiscard]] int get_option(const detail::SocketOption& o, const char* what) const {
    std::error_code ec = make_error_code(errc::not_connected);
    const int v = !s_ || s_->closed() ? 0 : detail::get_int_option(s_->fd(), o, ec);
    if (ec) throw std::system_error(ec, s_ ? s_->where(what, "on") : std::string(what));
    return v;
  }
  std::shared_ptr<detail::StreamState> s_;
};

namespace detail {
struct StreamAccess {
  static const std::shared_ptr<StreamState>& of(const StreamReader& r) noexcept { return r.s_; }
  static const std::shared_ptr<StreamState>& of(const StreamWriter& w) noexcept { return w.s_; }
};
}  // namespace detail

/// Wraps a connected stream into a reader and a writer.
template <StreamProtocol P>
[[nodiscard]] std::pair<StreamReader, StreamWriter> make_streams(Connection<P>&& c, const StreamOptions& o = {}) {
  const Family f = c.family();
  auto s = std::make_shared<detail::StreamState>(detail::UniqueHandle(c.release()), f, o);
  return {StreamReader(s), StreamWriter(s)};
}

/// Connects (resolving `host` on a helper thread, then racing its addresses by Happy Eyeballs,
/// all within `d`) and returns asyncio's (reader, writer).
template <class = void>
Task<std::pair<StreamReader, StreamWriter>> open_connection(std::string host, int port, Deadline d = {},
                                                                  StreamOptions options = {}) {
  auto c = co_await TcpConnection::async_connect(std::move(host), port, std::move(d));
  co_return make_streams(std::move(c), options);
}
/// As above, dialling with `connect` (its deadline, attempt delay, family preference, resolver,
/// local address).
template <class = void>
Task<std::pair<StreamReader, StreamWriter>> open_connection(std::string host, int port, ConnectOptions connect,
                                                                  StreamOptions options = {}) {
  auto c = co_await TcpConnection::async_connect(std::move(host), port, std::move(connect));
  co_return make_streams(std::move(c), options);
}

/// What start_server takes besides the handler.
struct StreamServerOptions {
  ListenOptions listen = {};
  StreamOptions streams = {};
  /// close() cancels running handlers at once (their pending operations end with
  /// operation_canceled). A handler that should finish its work instead opts in here: close()
  /// then lets handlers run for this long before it cancels them; a second close() ends it.
  std::chrono::milliseconds grace{0};
  /// Connections held at once, from accept until their handler ends. At the limit the server
  /// stops accepting: new clients wait in the listen backlog (their connect succeeds, nothing of
  /// theirs is read) until a connection ends, as Server's Overload::wait; once the backlog is full
  /// the OS drops or refuses them. 0: no limit (asyncio's).
  std::size_t max_connections = 0;
  /// A connection with no bytes received or written for this long is closed: its handler's
  /// pending and later operations on it fail, and it counts in stats().timed_out, not as a
  /// failure. Checked on a tick of a tenth of it (at least 5 ms, at most 1 s): an idle
  /// connection is closed within two ticks past it. std::nullopt: no limit (asyncio's).
  std::optional<std::chrono::milliseconds> idle_timeout = std::nullopt;
  /// Called with what a handler threw and its peer's address, on the loop's thread; what it
  /// throws is ignored. Unset: one line on stderr naming the server and the peer. Normal
  /// endings (a reset or end_of_stream from the peer, a timeout, a cancel) are not failures:
  /// they are counted in StreamServer::stats(), not reported.
  std::function<void(std::exception_ptr error, const Endpoint& peer)> on_error = {};
};

/// Counters of a StreamServer.
struct StreamServerStats {
  std::size_t accepted = 0;        ///< connections accepted
  std::size_t active = 0;          ///< handlers running now
  std::size_t handler_errors = 0;  ///< handlers that failed (reported to on_error)
  std::size_t canceled = 0;        ///< handlers that ended in operation_canceled (close, or a cancel)
  std::size_t timed_out = 0;       ///< handlers that ended in timed_out, or closed by the idle timeout
  std::size_t peer_closed = 0;     ///< handlers ended by their peer: a reset, end_of_stream
};

using StreamHandler = std::function<Task<void>(StreamReader, StreamWriter)>;

namespace detail {

class ServerState final : public std::enable_shared_from_this<ServerState> {
 public:
  ServerState(TcpListener l, StreamHandler h, StreamServerOptions o)
      : listener(std::move(l)), handler(std::move(h)), options(std::move(o)), loop(&get_running_loop()) {
    grace_.server = this;
    sweep_.server = this;
    // The set counts a handler until its frame has ended; closed() is checked again then.
    handlers_.on_empty = [](void* self) noexcept {
      auto* server = static_cast<ServerState*>(self);
      server->check_closed();
      // Last: this may destroy the server, its set included (TaskSet::on_empty allows it).
      const auto release = std::move(server->alive_);
    };
    handlers_.context = this;
  }
  ServerState(const ServerState&) = delete;
  ServerState& operator=(const ServerState&) = delete;
  ~ServerState() {
    if (grace_.heap_index != not_in_heap) loop->remove_timer(&grace_);
    if (sweep_.heap_index != not_in_heap) loop->remove_timer(&sweep_);
  }

  TcpListener listener;
  StreamHandler handler;
  StreamServerOptions options;
  /// Streams over a transport (TLS): puts one under each connection and runs its opening before
  /// the handler runs (StreamState::open_transport); unset for plain streams. A function, so that
  /// a plain server's translation unit does not instantiate the opening's coroutine.
  std::function<Task<void>(StreamState&)> opening;
  EventLoop* loop;
  Endpoint local;
  bool accepting = true;
  bool closing = false;
  Event closing_event;  ///< set when close() begins
  Event closed_event;   ///< set once closed: not accepting, every handler ended
  StreamServerStats stats;

  [[nodiscard]] std::size_t active() const noexcept { return handlers_.size(); }
  [[nodiscard]] bool closed() const noexcept { return closing && !accepting && handlers_.size() == 0; }

  template <class = void>
  static Task<void> accept_loop(std::shared_ptr<ServerState> self) {
    while (!self->closing) {
      if (self->options.max_connections != 0 && self->held_.size() >= self->options.max_connections) {
        // Full: the next clients wait in the backlog until a connection ends (or the close).
        self->slot_.clear();
        try {
          co_await self->slot_.wait();
        } catch (const std::system_error&) {
          break;
        }
        continue;
      }
      std::error_code ec;
      auto conn = co_await self->listener.async_accept(Deadline{}, ec);
      if (self->closing || ec == std::errc::operation_canceled) break;
      if (ec) {
        // Out of descriptors or memory: let other connections finish instead of spinning.
        try {
          co_await sleep(std::chrono::milliseconds(50));
        } catch (const std::system_error&) {
          break;
        }
        continue;
      }
      ++self->stats.accepted;
      self->start_handler(std::move(conn));
    }
    self->accepting = false;
    // Cancelled without a close (the loop is going): the handlers go with it.
    if (!self->closing) self->close();
    self->check_closed();
  }

  /// Stops accepting and cancels the handlers, at once or after the grace; a second call
  /// cancels them at once.
  void close() noexcept {
    if (closing) {
      handlers_.cancel();
      return;
    }
    closing = true;
    listener.close(ignored_);  // cancels the pending accept
    slot_.set();               // or ends the wait for a free slot
    closing_event.set();
    if (options.grace.count() > 0 && handlers_.size() > 0 && EventLoop::current() == loop) {
      grace_.when = std::chrono::steady_clock::now() + options.grace;
      loop->add_timer(&grace_);
    } else {
      handlers_.cancel();
    }
    check_closed();
  }

  void check_closed() noexcept {
    if (!closed()) return;
    if (grace_.heap_index != not_in_heap) loop->remove_timer(&grace_);
    if (sweep_.heap_index != not_in_heap) loop->remove_timer(&sweep_);
    closed_event.set();
  }

  /// With an idle timeout: starts the tick that closes idle connections.
  void start_idle_timeout() noexcept {
    if (!options.idle_timeout) return;
    tick_ = std::clamp(*options.idle_timeout / 10, std::chrono::milliseconds(5), std::chrono::milliseconds(1000));
    sweep_.when = std::chrono::steady_clock::now() + tick_;
    loop->add_timer(&sweep_);
  }

 private:
  struct Grace final : Pending {
    ServerState* server = nullptr;
    void on_timer() noexcept override { server->handlers_.cancel(); }
    void cancel(std::error_code) noexcept override { server->handlers_.cancel(); }
  };
  struct Sweep final : Pending {
    ServerState* server = nullptr;
    void on_timer() noexcept override { server->sweep(); }
    void cancel(std::error_code) noexcept override {}  // the loop is closing: so are the handlers
  };
  // A connection held: from accept until its handler ends.
  struct Held {
    std::shared_ptr<StreamState> stream;
    std::uint32_t seen = 0;                        // its activity at the last tick
    std::chrono::steady_clock::time_point since;  // when that changed last
    bool timed_out = false;
  };
  using HeldList = std::list<Held>;

  // Closes the connections idle for the idle timeout. Aborted after the scan: an abort may end
  // a handler, which removes its entry.
  void sweep() noexcept {
    const auto now = std::chrono::steady_clock::now();
    std::vector<std::shared_ptr<StreamState>> idle;
    for (auto& h : held_) {
      if (h.timed_out) continue;
      if (h.stream->activity != h.seen) {
        h.seen = h.stream->activity;
        h.since = now;
      } else if (now - h.since >= *options.idle_timeout) {
        try {
          idle.push_back(h.stream);
          h.timed_out = true;
        } catch (...) {
          break;  // no memory: the next tick tries again
        }
      }
    }
    for (auto& s : idle) s->abort();
    if (closed()) return;
    sweep_.when = now + tick_;
    loop->add_timer(&sweep_);
  }

  // One handler, run as a task of the server's set: its record counts how it ended. No
  // coroutine of its own around the handler: an idle connection holds this record and the
  // handler's frame, nothing more (bench/NOTES.md, idle memory).
  class Handler final : public TaskRecord<void> {
   public:
    // `server` is alive while it has handlers (alive_): no reference per handler.
    Handler(ServerState* server, std::shared_ptr<StreamState> stream, typename HeldList::iterator held,
            Task<void> task) noexcept
        : TaskRecord<void>(std::move(task)), server_(server), stream_(std::move(stream)), held_(held) {}
    // Failures are the server's to count and report (ending()), not the set's to keep.
    [[nodiscard]] std::exception_ptr error() const noexcept override { return nullptr; }

   private:
    void ending() noexcept override { server_->handler_ended(std::exchange(outcome().error, nullptr), stream_, held_); }

    ServerState* server_;
    std::shared_ptr<StreamState> stream_;
    typename HeldList::iterator held_;
  };

  template <class = void>
  void start_handler(TcpConnection conn) {
    const Family family = conn.family();
    auto stream = std::make_shared<StreamState>(UniqueHandle(conn.release()), family, options.streams);
    // Listed only when a limit needs it: an idle connection of a plain server costs no entry.
    typename HeldList::iterator held = held_.end();
    if (options.max_connections != 0 || options.idle_timeout) {
      try {
        held = held_.insert(held_.end(), Held{stream, stream->activity, std::chrono::steady_clock::now(), false});
      } catch (...) {
        report(std::current_exception(), {});  // no memory: the connection closes
        return;
      }
    }
    Task<void> task;
    try {
      task = opening ? open_then_handle(this, stream) : handler(StreamReader(stream), StreamWriter(stream));
      if (!task.valid()) throw std::logic_error("sockpat: a stream handler returned an empty Task");
    } catch (...) {
      handler_ended(std::current_exception(), stream, held);  // the handler failed before its first step
      return;
    }
    Handler* h = nullptr;
    try {
      h = new Handler(this, stream, held, std::move(task));
    } catch (...) {
      if (held != held_.end()) held_.erase(held);
      slot_.set();
      report(std::current_exception(), {});  // no memory for the task: the connection closes
      return;
    }
    // The accept loop (our caller) holds the server meanwhile, so a handler that ends at once
    // and releases it does not end it here.
    if (handlers_.size() == 0) alive_ = shared_from_this();
    handlers_.start_record(h)->release();  // no handle
  }

  // A transported stream's opening, then the handler.
  template <class = void>
  static Task<void> open_then_handle(ServerState* self, std::shared_ptr<StreamState> stream) {
    co_await self->opening(*stream);
    co_await self->handler(StreamReader(stream), StreamWriter(stream));
  }

  // Counts how a handler ended (`failure`: what it threw, if anything).
  void handler_ended(std::exception_ptr failure, const std::shared_ptr<StreamState>& stream,
                     typename HeldList::iterator held) noexcept {
    std::optional<Ending> ending;  // none: returned
    if (failure) {
      try {
        std::rethrow_exception(failure);
      } catch (const std::system_error& e) {
        ending = ending_of(e.code());
        if (ending != Ending::failure) failure = nullptr;
      } catch (...) {
      }
    }
    // Closed by the idle timeout: however the handler took it, that is how it ended.
    if (held != held_.end()) {
      if (held->timed_out) {
        ending = Ending::timed_out;
        failure = nullptr;
      }
      held_.erase(held);
      slot_.set();
    }
    if (ending && !failure) {
      switch (*ending) {
        case Ending::canceled: ++stats.canceled; break;
        case Ending::timed_out: ++stats.timed_out; break;
        case Ending::peer_closed: ++stats.peer_closed; break;
        case Ending::failure: break;
      }
    }
    if (failure) {
      ++stats.handler_errors;
      report(failure, stream->peer());
      stream->abort();  // a failed handler's connection is closed, not left half-written
    }
  }

  void report(std::exception_ptr error, const Endpoint& peer) noexcept {
    report_failure(options.on_error, "stream server", local, std::move(error), peer);
  }

  TaskSet handlers_{false};
  std::shared_ptr<ServerState> alive_;  // this server while it has handlers: a dropped StreamServer's still end in it
  Grace grace_;
  Sweep sweep_;
  std::chrono::milliseconds tick_{1000};
  HeldList held_;  // the connections, when max_connections or the idle timeout needs them
  Event slot_;     // set when a connection ends: the accept loop may go on
  std::error_code ignored_;
};

}  // namespace detail

/// A running stream server (asyncio's Server; named StreamServer beside the blocking Server<P>). Moves; destroying it closes it.
class StreamServer {
 public:
  StreamServer() noexcept = default;
  explicit StreamServer(std::shared_ptr<detail::ServerState> s) noexcept : s_(std::move(s)) {}
  StreamServer(StreamServer&&) noexcept = default;
  StreamServer& operator=(StreamServer&& o) noexcept {
    if (this != &o) {
      close();
      s_ = std::move(o.s_);
    }
    return *this;
  }
  StreamServer(const StreamServer&) = delete;
  StreamServer& operator=(const StreamServer&) = delete;
  ~StreamServer() { close(); }

  /// Where it listens (port 0 resolved to the port the OS picked).
  [[nodiscard]] Endpoint local_endpoint() const { return s_ ? s_->local : Endpoint{}; }
  /// Stops accepting at once and cancels the running handlers: their pending operations end
  /// with operation_canceled. With StreamServerOptions::grace, handlers get that long first;
  /// a second close() cancels them at once. On the loop's thread.
  void close() noexcept {
    if (s_) s_->close();
  }
  /// Waits until it is closed (from a handler, another task or call_soon_threadsafe) and every
  /// handler has ended. The server serves from start_server on, so this is also how to serve
  /// until closed; there is no serve_forever.
  template <class = void>
  [[nodiscard]] Task<void> wait_closed() const { return wait(s_); }
  /// Waits until close() begins (at once if it has): a handler that awaits it can say goodbye
  /// to its client during StreamServerOptions::grace, before it is canceled.
  template <class = void>
  [[nodiscard]] Task<void> wait_closing() const { return wait_closing_of(s_); }
  [[nodiscard]] bool is_serving() const noexcept { return s_ && !s_->closing; }
  /// Handlers running now.
  [[nodiscard]] std::size_t connections() const noexcept { return s_ ? s_->active() : 0; }
  /// How its connections ended so far.
  [[nodiscard]] StreamServerStats stats() const noexcept {
    if (!s_) return {};
    StreamServerStats out = s_->stats;
    out.active = s_->active();
    return out;
  }

 private:
  template <class = void>
  static Task<void> wait(std::shared_ptr<detail::ServerState> s) {
    if (s) co_await s->closed_event.wait();
  }
  template <class = void>
  static Task<void> wait_closing_of(std::shared_ptr<detail::ServerState> s) {
    if (s) co_await s->closing_event.wait();
  }
  std::shared_ptr<detail::ServerState> s_;
};

namespace detail {
/// start_server's body; with an `opening`, each connection runs over a transport of its own
/// (tls.hpp), opened before the handler is called.
template <class = void>
StreamServer start_stream_server(StreamHandler handler, const std::string& host, int port, StreamServerOptions options,
                                 std::function<Task<void>(StreamState&)> opening) {
  auto listener = TcpListener::bind(host, port, options.listen);
  auto state = std::make_shared<ServerState>(std::move(listener), std::move(handler), std::move(options));
  state->opening = std::move(opening);
  state->local = state->listener.local_endpoint();
  state->loop->create_task(ServerState::accept_loop<>(state));
  state->start_idle_timeout();
  return StreamServer(std::move(state));
}
}  // namespace detail

/// Listens on host:port ("localhost" and port 0 work) and runs `handler(reader, writer)` for
/// each connection as its own task on the running loop (asyncio.start_server). A handler that
/// throws is reported (StreamServerOptions::on_error) and its connection closed; the server
/// goes on. Throws std::system_error if it cannot listen.
template <class = void>
Task<StreamServer> start_server(StreamHandler handler, std::string host, int port, StreamServerOptions options = {}) {
  co_return detail::start_stream_server<>(std::move(handler), host, port, std::move(options), {});
}

}  // namespace sockpat

#endif  // SOCKPAT_STREAMS_HPP

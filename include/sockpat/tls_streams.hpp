// sockpat: the async streams over TLS, asyncio's ssl=: open_connection and start_server with a
// TlsContext, start_tls (STARTTLS), tls_info. StreamReader / StreamWriter run over the engine of
// tls.hpp through the transport hook of streams.hpp (detail::StreamTransport). Its own header, so
// that a program using only the blocking TlsConnection and TlsServer does not compile the streams.
#ifndef SOCKPAT_TLS_STREAMS_HPP
#define SOCKPAT_TLS_STREAMS_HPP

#include "sockpat/detail/chrono.hpp"  // std::chrono::milliseconds: handshake_timeout
#include <cstddef>       // std::byte, std::size_t
#include <memory>        // std::unique_ptr, std::shared_ptr, std::make_unique, std::make_shared
#include <span>          // std::span
#include <stdexcept>     // std::invalid_argument
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code, std::system_error
#include <utility>       // std::move, std::pair

#include "sockpat/streams.hpp"  // StreamReader, StreamWriter, StreamServer, detail::StreamTransport
#include "sockpat/tls.hpp"      // TlsContext, detail::TlsEngine

namespace sockpat {

/// What the TLS forms of open_connection, start_server and start_tls take besides the context
/// (asyncio's server_hostname and ssl_handshake_timeout). The closing close_notify exchange is
/// bounded by StreamOptions::close_timeout (10 s). Read when the call is made (before its first
/// co_await): a view is enough. (No std::string member: GCC 12 frees a defaulted coroutine
/// argument holding one twice.)
struct StreamTlsOptions {
  /// A client checks this name in the server's certificate and sends it as SNI; empty: the host
  /// given to open_connection. start_tls on a verifying client needs it.
  std::string_view server_hostname = {};
  /// The handshake must end within this long, so that a peer that stops halfway cannot hold the
  /// connection (zero: no bound).
  std::chrono::milliseconds handshake_timeout{10000};
};

/// What a TLS stream agreed on: empty strings on a plain stream.
struct StreamTlsInfo {
  std::string protocol_version;  ///< "TLSv1.3"
  std::string alpn;              ///< the protocol ALPN chose, or empty
  std::string peer_subject;      ///< the peer certificate's subject, or empty when it sent none
};

namespace detail {

/// The engine as the streams' transport.
class TlsTransport final : public StreamTransport {
 public:
  TlsTransport(const TlsContext& ctx, std::string_view server_name) : engine_(ctx, server_name) {}

  bool open(std::error_code& ec) noexcept override { return engine_.handshake(ec) == TlsStatus::ok; }
  std::size_t feed(std::span<const std::byte> wire) noexcept override { return engine_.feed(wire); }
  [[nodiscard]] std::size_t input_room() const noexcept override { return engine_.input_room(); }
  std::size_t decode(std::span<std::byte> out, std::error_code& ec) noexcept override {
    std::size_t n = 0;
    return engine_.read(out, n, ec) == TlsStatus::ok ? n : 0;  // closed: input_closed() says so
  }
  std::size_t encode(std::span<const std::byte> plain, std::error_code& ec) noexcept override {
    std::size_t n = 0;
    (void)engine_.write(plain, n, ec);  // want_write: output() is full, the rest waits for room
    return n;
  }
  void end_output(std::error_code& ec) noexcept override {
    // Queues close_notify; want_read only says the peer's has not come yet (the stream waits).
    (void)engine_.shutdown(ec);
  }
  void input_ended(std::error_code& ec) noexcept override {
    engine_.feed_eof();
    if (!engine_.handshake_done()) {  // the engine says how far the handshake got
      if (engine_.handshake(ec) == TlsStatus::ok || !ec) ec = make_error_code(errc::end_of_stream);
      return;
    }
    if (!engine_.close_notify_received()) {
      std::byte none[1];
      std::size_t n = 0;
      (void)engine_.read(none, n, ec);  // fails with truncated, its reason kept
      if (!ec) ec = make_error_code(tls_errc::truncated);
    }
  }
  [[nodiscard]] bool input_closed() const noexcept override { return engine_.close_notify_received(); }
  [[nodiscard]] std::span<const std::byte> output() const noexcept override { return engine_.output(); }
  void consume_output(std::size_t n) noexcept override { engine_.consume_output(n); }
  [[nodiscard]] std::string failure_text() const override { return engine_.error_text(); }
  [[nodiscard]] const char* opening_name() const noexcept override { return "TLS handshake"; }
  [[nodiscard]] bool can_write_eof() const noexcept override { return false; }

  [[nodiscard]] const TlsEngine& engine() const noexcept { return engine_; }

 private:
  TlsEngine engine_;
};

inline Deadline handshake_deadline(std::chrono::milliseconds timeout) noexcept {
  return timeout.count() > 0 ? Deadline(timeout) : Deadline{};
}

// The coroutines behind the public calls, which are plain functions so that the options (and
// the server name they view) are read before the call returns.
template <class = void>
Task<std::pair<StreamReader, StreamWriter>> open_tls_connection(std::string host, int port, Deadline d,
                                                                StreamOptions options,
                                                                std::unique_ptr<TlsTransport> transport,
                                                                std::chrono::milliseconds handshake_timeout) {
  auto streams = co_await open_connection(std::move(host), port, std::move(d), options);
  co_await StreamAccess::of(streams.second)->open_transport(std::move(transport), handshake_deadline(handshake_timeout));
  co_return streams;
}

template <class = void>
Task<void> open_tls(std::shared_ptr<StreamState> state, std::unique_ptr<TlsTransport> transport,
                    std::chrono::milliseconds handshake_timeout) {
  co_await state->open_transport(std::move(transport), handshake_deadline(handshake_timeout));
}

template <class = void>
Task<StreamServer> start_tls_server(StreamHandler handler, std::string host, int port,
                                    std::shared_ptr<TlsContext> context, StreamServerOptions options,
                                    std::chrono::milliseconds handshake_timeout) {
  co_return start_stream_server<>(std::move(handler), host, port, std::move(options),
                                  [context, handshake_timeout](StreamState& stream) {
                                    return stream.open_transport(std::make_unique<TlsTransport>(*context, ""),
                                                                 handshake_deadline(handshake_timeout));
                                  });
}

}  // namespace detail

/// Connects to host:port (within `d`) and runs a TLS handshake as `ssl`'s client (asyncio's
/// open_connection(ssl=)): the server's certificate is verified for `host` (or
/// tls.server_hostname) unless the context says otherwise. Throws std::system_error: a failed
/// handshake names the peer and says why ("TLS handshake with 127.0.0.1:443: certificate
/// verify failed: hostname mismatch"); timed_out past tls.handshake_timeout. A read of a stream
/// that ends without close_notify fails with tls_errc::truncated; at_eof() means a clean end.
template <class = void>
Task<std::pair<StreamReader, StreamWriter>> open_connection(std::string host, int port, const TlsContext& ssl,
                                                            Deadline d = {}, StreamOptions options = {},
                                                            StreamTlsOptions tls = {}) {
  if (ssl.is_server()) throw std::invalid_argument("sockpat: open_connection needs a client context (TlsContext::client)");
  auto transport =
      std::make_unique<detail::TlsTransport>(ssl, tls.server_hostname.empty() ? std::string_view(host) : tls.server_hostname);
  return detail::open_tls_connection<>(std::move(host), port, std::move(d), options, std::move(transport),
                                       tls.handshake_timeout);
}

/// Upgrades an open plaintext stream to TLS (asyncio's StreamWriter.start_tls, for STARTTLS):
/// what the writer still buffers is sent first, as plaintext; bytes the peer sent after its last
/// plaintext line and already buffered by the reader are the handshake's. The reader and writer
/// go on as before, over TLS. No read or write may be in flight. Throws as open_connection does.
template <class = void>
Task<void> start_tls(StreamWriter& writer, const TlsContext& ssl, StreamTlsOptions tls = {}) {
  const auto& state = detail::StreamAccess::of(writer);
  if (!state) detail::throw_error(make_error_code(errc::not_connected), "StreamWriter start_tls");
  if (!ssl.is_server() && ssl.verifies_peer() && ssl.checks_host_name() && tls.server_hostname.empty()) {
    throw std::invalid_argument(
        "sockpat: start_tls on a verifying client needs StreamTlsOptions::server_hostname "
        "(TlsContext::verify_chain_only() for a peer checked by other means)");
  }
  return detail::open_tls<>(state, std::make_unique<detail::TlsTransport>(ssl, tls.server_hostname),
                            tls.handshake_timeout);
}

/// The TLS stream's protocol version, ALPN choice and peer certificate subject; empty strings on
/// a plain stream.
inline StreamTlsInfo tls_info(const StreamWriter& writer) {
  const auto& state = detail::StreamAccess::of(writer);
  const auto* t = state ? dynamic_cast<const detail::TlsTransport*>(state->transport()) : nullptr;
  if (t == nullptr) return {};
  return {std::string(t->engine().protocol_version()), std::string(t->engine().alpn()), t->engine().peer_subject()};
}

/// Listens on host:port and runs `handler(reader, writer)` for each client once its TLS
/// handshake as `ssl`'s server has succeeded (asyncio's start_server(ssl=)). A handshake that
/// fails (a plaintext client, a certificate the client refused, a client certificate this
/// server refused) is reported as a handler's failure is (StreamServerOptions::on_error, with
/// its reason in words); one that does not end within tls.handshake_timeout is counted in
/// stats().timed_out. Either way the server goes on. Throws std::system_error if it cannot listen.
template <class = void>
Task<StreamServer> start_server(StreamHandler handler, std::string host, int port, TlsContext ssl,
                                StreamServerOptions options = {}, StreamTlsOptions tls = {}) {
  if (!ssl.is_server()) throw std::invalid_argument("sockpat: start_server needs a server context (TlsContext::server)");
  return detail::start_tls_server<>(std::move(handler), std::move(host), port,
                                    std::make_shared<TlsContext>(std::move(ssl)), std::move(options),
                                    tls.handshake_timeout);
}

}  // namespace sockpat

#endif  // SOCKPAT_TLS_STREAMS_HPP

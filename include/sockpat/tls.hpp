// sockpat: TLS over OpenSSL 3: TlsContext, a sans-I/O engine (detail::TlsEngine) shared by the
// blocking TlsConnection and TlsServer here and by the async streams (tls_streams.hpp); with
// tls_streams.hpp, the only header that needs OpenSSL.
#ifndef SOCKPAT_TLS_HPP
#define SOCKPAT_TLS_HPP

#include <algorithm>     // std::min
#include "sockpat/detail/chrono.hpp"  // std::chrono::steady_clock, std::chrono::seconds
#include <cstddef>       // std::byte, std::size_t
#include <initializer_list>  // std::initializer_list: set_alpn({"h2", "http/1.1"})
#include <memory>        // std::unique_ptr, std::shared_ptr
#include <optional>      // std::optional: a TlsConnection's engine, absent when empty; hello_timeout
#include <span>          // std::span
#include <stdexcept>     // std::invalid_argument: a bad ALPN name
#include <stop_token>    // std::stop_token
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code, std::error_category, std::system_error
#include <type_traits>   // std::true_type, std::is_invocable_v
#include <utility>       // std::move, std::exchange
#include <vector>        // std::vector: engine output and the connection's input buffer

#include <openssl/err.h>   // ERR_get_error, ERR_reason_error_string
#include <openssl/pem.h>   // PEM_read_bio_X509, PEM_read_bio_PrivateKey
#include <openssl/ssl.h>   // SSL_CTX, SSL, BIO
#include <openssl/x509v3.h>  // X509_VERIFY_PARAM_set1_ip_asc

#include "sockpat/connection.hpp"
#include "sockpat/deadline.hpp"
#include "sockpat/error.hpp"
#include "sockpat/listener.hpp"
#include "sockpat/server.hpp"

#if OPENSSL_VERSION_MAJOR < 3
#error "sockpat/tls.hpp needs OpenSSL 3 or later"
#endif

namespace sockpat {

// ---- errors ----

/// Errors of the TLS layer. The reason in words (OpenSSL's, such as "certificate verify failed:
/// hostname mismatch") is in the exception's message, and in `error_text()` for the error_code forms.
enum class tls_errc {
  truncated = 1,              ///< the stream ended without close_notify (not a clean end)
  handshake_failed,           ///< the handshake failed: protocol version, no shared cipher, an alert
  certificate_verify_failed,  ///< the peer's certificate was rejected: host name, unknown CA, expired
  not_tls,                    ///< the peer sent bytes that are not TLS (a plaintext client or server)
  failed,                     ///< a TLS error after the handshake: a bad record, an alert from the peer
  bad_configuration,          ///< a context setting could not be applied (a file, a key that does not match)
};

class TlsErrorCategory final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "sockpat.tls"; }
  [[nodiscard]] std::string message(int code) const override {
    switch (static_cast<tls_errc>(code)) {
      case tls_errc::truncated: return "TLS stream truncated (closed without close_notify)";
      case tls_errc::handshake_failed: return "TLS handshake failed";
      case tls_errc::certificate_verify_failed: return "TLS certificate verification failed";
      case tls_errc::not_tls: return "the peer does not speak TLS";
      case tls_errc::failed: return "TLS error";
      case tls_errc::bad_configuration: return "TLS configuration error";
    }
    return "unknown TLS error";
  }
};

inline const std::error_category& tls_category() noexcept {
  static const TlsErrorCategory category;
  return category;
}

inline std::error_code make_error_code(tls_errc e) noexcept { return {static_cast<int>(e), tls_category()}; }

}  // namespace sockpat

template <>
struct std::is_error_code_enum<sockpat::tls_errc> : std::true_type {};

namespace sockpat {

// ---- context ----

/// Lowest (or highest) protocol version a context accepts; TLS 1.2 is the floor.
enum class TlsVersion { tls1_2, tls1_3 };

namespace detail {
struct SslCtxFree {
  void operator()(SSL_CTX* p) const noexcept { SSL_CTX_free(p); }
};
struct SslFree {
  void operator()(SSL* p) const noexcept { SSL_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const noexcept { BIO_free(p); }
};
struct X509Free {
  void operator()(X509* p) const noexcept { X509_free(p); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
using UniqueSslCtx = std::unique_ptr<SSL_CTX, SslCtxFree>;
using UniqueSsl = std::unique_ptr<SSL, SslFree>;
using UniqueBio = std::unique_ptr<BIO, BioFree>;
using UniqueX509 = std::unique_ptr<X509, X509Free>;
using UniquePkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

/// OpenSSL's reason for the oldest error in this thread's queue (the cause, not its
/// consequences), and empties the queue so that the next call on this thread starts clean.
inline std::string take_openssl_error(std::string_view fallback = "unknown error") {
  std::string text;
  while (const unsigned long e = ERR_get_error()) {
    if (!text.empty()) continue;
    if (const char* r = ERR_reason_error_string(e)) {
      text = r;
    } else {
      char buf[256];
      ERR_error_string_n(e, buf, sizeof buf);
      text = buf;
    }
  }
  return text.empty() ? std::string(fallback) : text;
}

/// What a TlsContext shares with every engine made from it: an engine keeps it alive, so a
/// connection may outlive the context it was made from.
struct TlsContextState {
  UniqueSslCtx ctx;
  bool server = false;
  bool verify = false;
  bool check_host = true;  // a verifying client checks the server's name (verify_chain_only: not)
  std::string alpn_wire;  // the server's ALPN choices, length-prefixed (the callback reads it)
};

inline int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                       unsigned int inlen, void* arg) noexcept {
  const auto* state = static_cast<const TlsContextState*>(arg);
  if (state->alpn_wire.empty()) return SSL_TLSEXT_ERR_NOACK;
  unsigned char* chosen = nullptr;
  const auto* ours = reinterpret_cast<const unsigned char*>(state->alpn_wire.data());
  if (SSL_select_next_proto(&chosen, outlen, ours, static_cast<unsigned>(state->alpn_wire.size()), in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;  // no protocol in common: go on without ALPN, as most servers do
  }
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

[[noreturn]] inline void throw_tls(tls_errc e, const std::string& what) {
  throw std::system_error(make_error_code(e), what);
}
}  // namespace detail

/// The settings of one side of TLS connections: an OpenSSL SSL_CTX. A client context verifies the
/// peer by default (system trust store; the host name given to each connection is checked and sent
/// as SNI). Configure it before making connections from it; connections made from it keep what
/// they need alive, so a context may go before its connections. Move-only; one context serves
/// connections on many threads.
class TlsContext {
 public:
  /// A client context: TLS 1.2 or later, the peer verified against the system's trust store.
  /// Throws std::system_error (bad_configuration) if OpenSSL cannot make one.
  [[nodiscard]] static TlsContext client() { return TlsContext(false); }

  /// A server context presenting the certificate chain (leaf first) and private key in these PEM
  /// files. Throws std::system_error (bad_configuration) naming the file and OpenSSL's reason.
  [[nodiscard]] static TlsContext server(const std::string& cert_chain_file, const std::string& key_file) {
    TlsContext c(true);
    c.use_certificate_files(cert_chain_file, key_file);
    return c;
  }
  /// A server context from PEM text in memory.
  [[nodiscard]] static TlsContext server_from_pem(std::string_view cert_chain_pem, std::string_view key_pem) {
    TlsContext c(true);
    c.use_certificate_pem(cert_chain_pem, key_pem);
    return c;
  }

  /// Presents this certificate chain and key: the server's certificate, or a client certificate.
  TlsContext& use_certificate_files(const std::string& cert_chain_file, const std::string& key_file) & {
    std::error_code ec;
    use_certificate_files(cert_chain_file, key_file, ec);
    if (ec) detail::throw_tls(tls_errc::bad_configuration, "tls certificate " + cert_chain_file + ", key " + key_file + ": " + error_text_);
    return *this;
  }
  TlsContext& use_certificate_files(const std::string& cert_chain_file, const std::string& key_file,
                                    std::error_code& ec) & noexcept {
    ERR_clear_error();
    SSL_CTX* ctx = native_handle();
    const bool ok = SSL_CTX_use_certificate_chain_file(ctx, cert_chain_file.c_str()) == 1 &&
                    SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) == 1 &&
                    SSL_CTX_check_private_key(ctx) == 1;
    return configured(ok, ec);
  }
  TlsContext& use_certificate_pem(std::string_view cert_chain_pem, std::string_view key_pem) & {
    std::error_code ec;
    use_certificate_pem(cert_chain_pem, key_pem, ec);
    if (ec) detail::throw_tls(tls_errc::bad_configuration, "tls certificate (PEM): " + error_text_);
    return *this;
  }
  TlsContext& use_certificate_pem(std::string_view cert_chain_pem, std::string_view key_pem,
                                  std::error_code& ec) & noexcept {
    ERR_clear_error();
    SSL_CTX* ctx = native_handle();
    bool ok = false;
    if (auto certs = memory_bio(cert_chain_pem)) {
      detail::UniqueX509 leaf(PEM_read_bio_X509(certs.get(), nullptr, nullptr, nullptr));
      ok = leaf && SSL_CTX_use_certificate(ctx, leaf.get()) == 1 && SSL_CTX_clear_chain_certs(ctx) == 1;
      while (ok) {
        detail::UniqueX509 next(PEM_read_bio_X509(certs.get(), nullptr, nullptr, nullptr));
        if (!next) break;
        ok = SSL_CTX_add0_chain_cert(ctx, next.get()) == 1;
        if (ok) (void)next.release();
      }
      ERR_clear_error();  // the end of the PEM text is reported as an error
    }
    if (ok) {
      auto key_bio = memory_bio(key_pem);
      detail::UniquePkey key(key_bio ? PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr) : nullptr);
      ok = key && SSL_CTX_use_PrivateKey(ctx, key.get()) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    }
    return configured(ok, ec);
  }

  /// Trusts the CA certificates in this PEM file too (on a client: for the server's certificate; on
  /// a server with verify_clients: for clients' certificates).
  TlsContext& add_ca_file(const std::string& pem_file) & {
    std::error_code ec;
    add_ca_file(pem_file, ec);
    if (ec) detail::throw_tls(tls_errc::bad_configuration, "tls CA file " + pem_file + ": " + error_text_);
    return *this;
  }
  TlsContext& add_ca_file(const std::string& pem_file, std::error_code& ec) & noexcept {
    ERR_clear_error();
    return configured(SSL_CTX_load_verify_locations(native_handle(), pem_file.c_str(), nullptr) == 1, ec);
  }
  /// Trusts the CA certificates in this PEM text too.
  TlsContext& add_ca_pem(std::string_view pem) & {
    std::error_code ec;
    add_ca_pem(pem, ec);
    if (ec) detail::throw_tls(tls_errc::bad_configuration, "tls CA (PEM): " + error_text_);
    return *this;
  }
  TlsContext& add_ca_pem(std::string_view pem, std::error_code& ec) & noexcept {
    ERR_clear_error();
    X509_STORE* store = SSL_CTX_get_cert_store(native_handle());
    int added = 0;
    bool ok = true;
    if (auto bio = memory_bio(pem)) {
      while (ok) {
        detail::UniqueX509 cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
        if (!cert) break;
        ok = X509_STORE_add_cert(store, cert.get()) == 1;
        ++added;
      }
      ERR_clear_error();  // the end of the PEM text is reported as an error
    }
    if (ok && added == 0) {
      error_text_ = "no certificate in the PEM text";
      ec = make_error_code(tls_errc::bad_configuration);
      return *this;
    }
    return configured(ok, ec);
  }

  /// Turns off every check of the peer's certificate (chain, expiry, host name): the connection is
  /// then encrypted but anyone can be on the other end. For tests and for peers pinned otherwise.
  TlsContext& insecure_no_verify() & noexcept {
    SSL_CTX_set_verify(native_handle(), SSL_VERIFY_NONE, nullptr);
    state_->verify = false;
    return *this;
  }

  /// Client side: verifies the server's certificate chain but no host name in it, so a connection
  /// may be made without a server name (a name given is sent as SNI only). For a peer checked by
  /// other means (a pinned key or fingerprint, compared after the handshake); without this, a
  /// verifying client given no name fails at construction.
  TlsContext& verify_chain_only() & noexcept {
    state_->check_host = false;
    return *this;
  }

  /// Server side: asks clients for a certificate and verifies it against the CAs added with
  /// add_ca_file/add_ca_pem; `required`: a client without one fails the handshake.
  TlsContext& verify_clients(bool required = true) & noexcept {
    SSL_CTX_set_verify(native_handle(), SSL_VERIFY_PEER | (required ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), nullptr);
    state_->verify = true;
    return *this;
  }

  /// ALPN: a client offers these protocols (in its order of preference); a server picks the first of
  /// its own list that the client offers, or none (the handshake goes on without ALPN).
  /// Throws std::invalid_argument for an empty name or one longer than 255 bytes.
  TlsContext& set_alpn(std::initializer_list<std::string_view> protocols) & {
    return set_alpn(std::span<const std::string_view>(protocols.begin(), protocols.size()));
  }
  TlsContext& set_alpn(std::span<const std::string_view> protocols) & {
    std::string wire;
    for (const auto p : protocols) {
      if (p.empty() || p.size() > 255) throw std::invalid_argument("sockpat: an ALPN protocol name has 1 to 255 bytes");
      wire += static_cast<char>(p.size());
      wire += p;
    }
    if (state_->server) {
      state_->alpn_wire = std::move(wire);
    } else if (SSL_CTX_set_alpn_protos(native_handle(), reinterpret_cast<const unsigned char*>(wire.data()),
                                       static_cast<unsigned>(wire.size())) != 0) {
      detail::throw_tls(tls_errc::bad_configuration, "tls ALPN: " + detail::take_openssl_error());
    }
    return *this;
  }

  /// The lowest protocol version accepted (TLS 1.2 unless raised).
  TlsContext& set_min_version(TlsVersion v) & noexcept {
    SSL_CTX_set_min_proto_version(native_handle(), native_version(v));
    return *this;
  }
  /// The highest protocol version offered (the newest OpenSSL has unless lowered).
  TlsContext& set_max_version(TlsVersion v) & noexcept {
    SSL_CTX_set_max_proto_version(native_handle(), native_version(v));
    return *this;
  }

  // The same setters on a temporary return the context by value, so that one expression makes and
  // configures it: `auto ctx = TlsContext::client().add_ca_file("ca.pem").set_alpn({"h2"});`.
  TlsContext use_certificate_files(const std::string& cert_chain_file, const std::string& key_file) && {
    use_certificate_files(cert_chain_file, key_file);
    return std::move(*this);
  }
  TlsContext use_certificate_files(const std::string& cert_chain_file, const std::string& key_file,
                                   std::error_code& ec) && noexcept {
    use_certificate_files(cert_chain_file, key_file, ec);
    return std::move(*this);
  }
  TlsContext use_certificate_pem(std::string_view cert_chain_pem, std::string_view key_pem) && {
    use_certificate_pem(cert_chain_pem, key_pem);
    return std::move(*this);
  }
  TlsContext use_certificate_pem(std::string_view cert_chain_pem, std::string_view key_pem, std::error_code& ec) && noexcept {
    use_certificate_pem(cert_chain_pem, key_pem, ec);
    return std::move(*this);
  }
  TlsContext add_ca_file(const std::string& pem_file) && {
    add_ca_file(pem_file);
    return std::move(*this);
  }
  TlsContext add_ca_file(const std::string& pem_file, std::error_code& ec) && noexcept {
    add_ca_file(pem_file, ec);
    return std::move(*this);
  }
  TlsContext add_ca_pem(std::string_view pem) && {
    add_ca_pem(pem);
    return std::move(*this);
  }
  TlsContext add_ca_pem(std::string_view pem, std::error_code& ec) && noexcept {
    add_ca_pem(pem, ec);
    return std::move(*this);
  }
  TlsContext insecure_no_verify() && noexcept {
    insecure_no_verify();
    return std::move(*this);
  }
  TlsContext verify_chain_only() && noexcept {
    verify_chain_only();
    return std::move(*this);
  }
  TlsContext verify_clients(bool required = true) && noexcept {
    verify_clients(required);
    return std::move(*this);
  }
  TlsContext set_alpn(std::initializer_list<std::string_view> protocols) && {
    set_alpn(protocols);
    return std::move(*this);
  }
  TlsContext set_alpn(std::span<const std::string_view> protocols) && {
    set_alpn(protocols);
    return std::move(*this);
  }
  TlsContext set_min_version(TlsVersion v) && noexcept {
    set_min_version(v);
    return std::move(*this);
  }
  TlsContext set_max_version(TlsVersion v) && noexcept {
    set_max_version(v);
    return std::move(*this);
  }

  [[nodiscard]] bool is_server() const noexcept { return state_->server; }
  /// Whether the peer's certificate is checked (a client's default; a server after verify_clients).
  [[nodiscard]] bool verifies_peer() const noexcept { return state_->verify; }
  /// Whether a verifying client checks the server's name (true unless verify_chain_only()).
  [[nodiscard]] bool checks_host_name() const noexcept { return state_->check_host; }
  /// OpenSSL's reason for the last failed configuration call (for the error_code forms).
  [[nodiscard]] const std::string& error_text() const noexcept { return error_text_; }
  /// The SSL_CTX, for settings this class does not name (cipher lists, session caching).
  [[nodiscard]] SSL_CTX* native_handle() const noexcept { return state_->ctx.get(); }

  /// For the engine: the state every connection made from this context shares.
  [[nodiscard]] const std::shared_ptr<detail::TlsContextState>& state() const noexcept { return state_; }

  TlsContext(TlsContext&&) noexcept = default;
  TlsContext& operator=(TlsContext&&) noexcept = default;
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  ~TlsContext() = default;

 private:
  explicit TlsContext(bool server) : state_(std::make_shared<detail::TlsContextState>()) {
    ERR_clear_error();
    state_->server = server;
    state_->ctx.reset(SSL_CTX_new(TLS_method()));
    if (!state_->ctx) detail::throw_tls(tls_errc::bad_configuration, "tls context: " + detail::take_openssl_error());
    SSL_CTX* ctx = native_handle();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    // Renegotiation (TLS 1.2) would let a peer make a read wait for a write; nobody needs it.
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    if (server) {
      SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
      SSL_CTX_set_alpn_select_cb(ctx, &detail::select_alpn, state_.get());
      // Needed by session resumption once client certificates are verified; any constant will do.
      static constexpr unsigned char session_context[] = "sockpat";
      SSL_CTX_set_session_id_context(ctx, session_context, sizeof session_context - 1);
    } else {
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
      state_->verify = true;
      if (SSL_CTX_set_default_verify_paths(ctx) != 1) ERR_clear_error();  // no system store: only added CAs
    }
  }

  static int native_version(TlsVersion v) noexcept { return v == TlsVersion::tls1_3 ? TLS1_3_VERSION : TLS1_2_VERSION; }

  static detail::UniqueBio memory_bio(std::string_view text) noexcept {
    return detail::UniqueBio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  }

  TlsContext& configured(bool ok, std::error_code& ec) noexcept {
    if (ok) {
      ec.clear();
      ERR_clear_error();
      return *this;
    }
    try {
      error_text_ = detail::take_openssl_error();
    } catch (...) {
      ERR_clear_error();
    }
    ec = make_error_code(tls_errc::bad_configuration);
    return *this;
  }

  std::shared_ptr<detail::TlsContextState> state_;
  std::string error_text_;
};

// ---- the sans-I/O engine ----

namespace detail {

/// What an engine step needs next.
enum class TlsStatus {
  ok,          ///< done (handshake complete, bytes read or written, shutdown complete)
  want_read,   ///< needs more ciphertext: send output() first, then feed() what the peer sends
  want_write,  ///< output() is full: send it and consume_output() before writing more
  closed,      ///< the peer sent close_notify: a clean end of its stream
  error,       ///< failed; the error_code and error_text() say why. The engine is then unusable.
};

/// One TLS session (an SSL over two memory BIOs) that does no I/O of its own: the caller sends
/// output() to the peer and feed()s what arrives. Both buffers are bounded: feed() takes at most
/// input_room() bytes, and write() and read() stop once output() holds output_limit bytes.
/// Move-only; one thread at a time.
class TlsEngine {
 public:
  static constexpr std::size_t input_limit = 64 * 1024;   // ciphertext fed but not yet decrypted
  static constexpr std::size_t output_limit = 64 * 1024;  // write() stops adding beyond this
  static constexpr std::size_t max_record = 16 * 1024;    // plaintext per record

  /// An engine for `ctx`'s side. A client checks `server_name` (a host name or an IP address) in
  /// the peer's certificate when the context verifies, and sends it as SNI when it is a name.
  /// Throws std::system_error (bad_configuration): a verifying client without a name (unless
  /// TlsContext::verify_chain_only), a name that no host has, or OpenSSL cannot make the session.
  TlsEngine(const TlsContext& ctx, std::string_view server_name) : context_(ctx.state()) {
    ERR_clear_error();
    ssl_.reset(SSL_new(context_->ctx.get()));
    BIO* in = BIO_new(BIO_s_mem());
    BIO* out = BIO_new(BIO_s_mem());
    if (!ssl_ || in == nullptr || out == nullptr) {
      BIO_free(in);
      BIO_free(out);
      throw_tls(tls_errc::bad_configuration, "tls session: " + take_openssl_error());
    }
    BIO_set_mem_eof_return(in, -1);  // empty means "wait for more", not end of stream
    BIO_set_mem_eof_return(out, -1);
    SSL_set_bio(ssl_.get(), in, out);  // the SSL owns both BIOs now
    in_ = in;
    out_bio_ = out;
    if (context_->server) {
      SSL_set_accept_state(ssl_.get());
    } else {
      SSL_set_connect_state(ssl_.get());
      use_server_name(server_name);
    }
  }

  /// Takes ciphertext that arrived from the peer, at most input_room() bytes; returns how many it took.
  std::size_t feed(std::span<const std::byte> ciphertext) noexcept {
    const std::size_t n = (std::min)(ciphertext.size(), input_room());
    if (n == 0) return 0;
    if (!seen_input_) {
      seen_input_ = true;
      // Every TLS stream starts with a handshake (22) or, at worst, an alert (21) record.
      const auto first = static_cast<unsigned char>(ciphertext[0]);
      if (first != 22 && first != 21) not_tls_ = true;
    }
    const int w = BIO_write(in_, ciphertext.data(), static_cast<int>(n));
    return w > 0 ? static_cast<std::size_t>(w) : 0;
  }
  /// How many more bytes feed() takes now.
  [[nodiscard]] std::size_t input_room() const noexcept {
    const std::size_t pending = BIO_ctrl_pending(in_);
    return pending >= input_limit ? 0 : input_limit - pending;
  }
  /// The peer's byte stream has ended (its transport closed). Without a close_notify first, a read
  /// then fails with tls_errc::truncated.
  void feed_eof() noexcept { eof_ = true; }

  /// Ciphertext to send to the peer (handshake messages, records, alerts), in order.
  [[nodiscard]] std::span<const std::byte> output() const noexcept {
    return std::span<const std::byte>(out_).subspan(out_pos_);
  }
  /// After sending the first `n` bytes of output().
  void consume_output(std::size_t n) noexcept {
    out_pos_ += (std::min)(n, out_.size() - out_pos_);
    if (out_pos_ == out_.size()) {
      out_.clear();
      out_pos_ = 0;
    }
  }

  /// One step of the handshake. ok: done; want_read: send output(), feed() more, call again.
  TlsStatus handshake(std::error_code& ec) noexcept {
    ec.clear();
    if (failed_) return fail(ec, last_error_);
    if (handshake_done_) return TlsStatus::ok;
    if (not_tls_) return fail_not_tls(ec);
    ERR_clear_error();
    const int r = SSL_do_handshake(ssl_.get());
    if (!collect_output(ec)) return TlsStatus::error;
    if (r == 1) {
      handshake_done_ = true;
      return TlsStatus::ok;
    }
    switch (SSL_get_error(ssl_.get(), r)) {
      case SSL_ERROR_WANT_READ:
        if (eof_) {
          set_text(seen_input_ ? "the peer closed the connection during the handshake"
                               : "the peer closed the connection before the handshake");
          return fail(ec, make_error_code(errc::end_of_stream));
        }
        return TlsStatus::want_read;
      case SSL_ERROR_WANT_WRITE: return TlsStatus::want_write;
      default: return fail_handshake(ec);
    }
  }

  /// Decrypts into `out`: ok with n > 0; closed after the peer's close_notify (n = 0, a clean
  /// end); want_read: send output(), feed() more, call again; want_write: output() holds
  /// output_limit bytes (answers to the peer's messages): send them first; error
  /// tls_errc::truncated when the peer's stream ended without close_notify.
  TlsStatus read(std::span<std::byte> out, std::size_t& n, std::error_code& ec) noexcept {
    n = 0;
    ec.clear();
    if (failed_) return fail(ec, last_error_);
    if (out.empty()) return TlsStatus::ok;
    // Reading makes output too (a KeyUpdate request is answered at once): a peer that sends them
    // and never reads must not grow output() without bound.
    if (out_.size() - out_pos_ >= output_limit) return TlsStatus::want_write;
    if (!handshake_done_) {
      const auto s = handshake(ec);
      if (s != TlsStatus::ok) return s;
    }
    ERR_clear_error();
    const int r = SSL_read_ex(ssl_.get(), out.data(), out.size(), &n);
    if (!collect_output(ec)) return TlsStatus::error;
    if (r == 1) return TlsStatus::ok;
    switch (SSL_get_error(ssl_.get(), r)) {
      case SSL_ERROR_WANT_READ:
        if (eof_) {
          set_text("the peer closed the connection without close_notify");
          return fail(ec, make_error_code(tls_errc::truncated));
        }
        return TlsStatus::want_read;
      case SSL_ERROR_WANT_WRITE: return TlsStatus::want_write;
      case SSL_ERROR_ZERO_RETURN: ERR_clear_error(); return TlsStatus::closed;
      default: return fail_after_handshake(ec);
    }
  }

  /// Encrypts from `in` into output(): n says how much it took. ok once all of `in` is taken;
  /// want_write when output() reached output_limit first (send it, then call with the rest).
  TlsStatus write(std::span<const std::byte> in, std::size_t& n, std::error_code& ec) noexcept {
    n = 0;
    ec.clear();
    if (failed_) return fail(ec, last_error_);
    if (!handshake_done_) {
      const auto s = handshake(ec);
      if (s != TlsStatus::ok) return s;
    }
    while (n < in.size()) {
      if (out_.size() - out_pos_ >= output_limit) return TlsStatus::want_write;
      const std::size_t chunk = (std::min)(in.size() - n, max_record);
      std::size_t written = 0;
      ERR_clear_error();
      const int r = SSL_write_ex(ssl_.get(), in.data() + n, chunk, &written);
      if (!collect_output(ec)) return TlsStatus::error;
      if (r != 1) {
        switch (SSL_get_error(ssl_.get(), r)) {
          case SSL_ERROR_WANT_READ: return TlsStatus::want_read;
          case SSL_ERROR_WANT_WRITE: return TlsStatus::want_write;
          default: return fail_after_handshake(ec);
        }
      }
      n += written;
    }
    return TlsStatus::ok;
  }

  /// Queues close_notify (once), then waits for the peer's: ok when it arrived (or the peer's
  /// stream ended after ours was queued); want_read: send output(), feed() more, call again.
  /// Application data arriving meanwhile is discarded.
  TlsStatus shutdown(std::error_code& ec) noexcept {
    ec.clear();
    if (failed_) return fail(ec, last_error_);
    if (!handshake_done_) {
      set_text("shutdown before the handshake finished");
      return fail(ec, make_error_code(tls_errc::failed));
    }
    if (!close_sent_) {
      ERR_clear_error();
      const int r = SSL_shutdown(ssl_.get());
      if (!collect_output(ec)) return TlsStatus::error;
      if (r < 0 && SSL_get_error(ssl_.get(), r) != SSL_ERROR_WANT_READ) return fail_after_handshake(ec);
      close_sent_ = true;
    }
    for (int i = 0; i < 64; ++i) {  // bounded: each turn discards up to a record of fed input
      if ((SSL_get_shutdown(ssl_.get()) & SSL_RECEIVED_SHUTDOWN) != 0) return TlsStatus::ok;
      std::byte discard[max_record];
      std::size_t n = 0;
      const auto s = read(discard, n, ec);
      if (s == TlsStatus::closed) return TlsStatus::ok;
      if (s == TlsStatus::error) {
        if (ec == tls_errc::truncated) {  // the peer closed its transport after ours: done
          ec.clear();
          failed_ = false;
          return TlsStatus::ok;
        }
        return s;
      }
      if (s != TlsStatus::ok) return s;
    }
    return TlsStatus::want_read;
  }

  [[nodiscard]] bool handshake_done() const noexcept { return handshake_done_; }
  /// Whether a step failed (error_text() says why); the engine is then unusable.
  [[nodiscard]] bool failed() const noexcept { return failed_; }
  [[nodiscard]] bool is_server() const noexcept { return context_->server; }
  /// Whether close_notify was queued, and whether the peer's arrived.
  [[nodiscard]] bool close_notify_sent() const noexcept { return close_sent_; }
  [[nodiscard]] bool close_notify_received() const noexcept {
    return (SSL_get_shutdown(ssl_.get()) & SSL_RECEIVED_SHUTDOWN) != 0;
  }
  /// The protocol ALPN agreed on, or empty.
  [[nodiscard]] std::string_view alpn() const noexcept {
    const unsigned char* p = nullptr;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl_.get(), &p, &len);
    return p == nullptr ? std::string_view{} : std::string_view(reinterpret_cast<const char*>(p), len);
  }
  /// "TLSv1.3" or "TLSv1.2".
  [[nodiscard]] std::string_view protocol_version() const noexcept { return SSL_get_version(ssl_.get()); }
  /// The peer certificate's subject ("CN=client,O=..."), or empty when it sent none.
  [[nodiscard]] std::string peer_subject() const {
    X509* cert = SSL_get0_peer_certificate(ssl_.get());
    if (cert == nullptr) return {};
    UniqueBio bio(BIO_new(BIO_s_mem()));
    if (!bio) return {};
    X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : std::string{};
  }
  /// The reason in words of the last failure ("certificate verify failed: hostname mismatch").
  [[nodiscard]] const std::string& error_text() const noexcept { return text_; }
  [[nodiscard]] SSL* native_handle() const noexcept { return ssl_.get(); }

 private:
  // The name a client checks and sends. The rules are the web's (Go's, rustls', browsers'): a
  // name matches DNS names in the subjectAltName only, never the subject's CN; an IP address
  // matches IP addresses only and is not sent as SNI (RFC 6066). OpenSSL would cut a name at a
  // NUL and match a leading dot as "any subdomain": both are refused.
  void use_server_name(std::string_view name) {
    const bool check = context_->verify && context_->check_host;
    if (name.empty()) {
      if (check) {
        throw_tls(tls_errc::bad_configuration,
                  "tls server name: a verifying client needs the server's name to check in its certificate "
                  "(TlsContext::verify_chain_only() for a peer checked by other means)");
      }
      return;
    }
    auto refuse = [&](const char* why) {
      std::string shown;
      for (const char c : name) shown += c == '\0' ? std::string_view("\\0") : std::string_view(&c, 1);
      throw_tls(tls_errc::bad_configuration, "tls server name \"" + shown + "\": " + why);
    };
    if (name.find('\0') != std::string_view::npos) refuse("contains a NUL byte");
    // "localhost." is the same host as "localhost" (the DNS root); certificates and SNI omit the dot.
    if (name.back() == '.') name.remove_suffix(1);
    if (name.empty() || name.front() == '.') refuse("not a host name");
    const std::string host(name);
    ASN1_OCTET_STRING* address = a2i_IPADDRESS(host.c_str());
    const bool is_ip = address != nullptr;
    ASN1_OCTET_STRING_free(address);
    ERR_clear_error();
    bool ok = true;
    if (is_ip) {
      if (check) ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_.get()), host.c_str()) == 1;
    } else {
      ok = SSL_set_tlsext_host_name(ssl_.get(), host.c_str()) == 1;
      if (ok && check) {
        SSL_set_hostflags(ssl_.get(), X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
        ok = SSL_set1_host(ssl_.get(), host.c_str()) == 1;
      }
    }
    if (!ok) throw_tls(tls_errc::bad_configuration, "tls server name " + host + ": " + take_openssl_error());
  }

  // Moves what OpenSSL wrote into its output BIO to out_, the buffer output() shows.
  bool collect_output(std::error_code& ec) noexcept {
    const std::size_t pending = BIO_ctrl_pending(out_bio_);
    if (pending == 0) return true;
    if (out_pos_ > 0 && out_pos_ >= out_.size() / 2) {
      out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(out_pos_));
      out_pos_ = 0;
    }
    const std::size_t old = out_.size();
    try {
      out_.resize(old + pending);
    } catch (...) {
      set_text("out of memory for TLS output");
      fail(ec, std::make_error_code(std::errc::not_enough_memory));
      return false;
    }
    const int r = BIO_read(out_bio_, out_.data() + old, static_cast<int>(pending));
    out_.resize(old + (r > 0 ? static_cast<std::size_t>(r) : 0));
    return true;
  }

  void set_text(const char* s) noexcept {
    try {
      text_ = s;
    } catch (...) {
    }
  }

  TlsStatus fail(std::error_code& ec, std::error_code e) noexcept {
    failed_ = true;
    last_error_ = e;
    ec = e;
    return TlsStatus::error;
  }

  TlsStatus fail_not_tls(std::error_code& ec) noexcept {
    ERR_clear_error();
    set_text(context_->server ? "the client sent bytes that are not TLS (a plaintext client?)"
                              : "the server sent bytes that are not TLS (a plaintext server?)");
    return fail(ec, make_error_code(tls_errc::not_tls));
  }

  TlsStatus fail_handshake(std::error_code& ec) noexcept {
    if (not_tls_) return fail_not_tls(ec);
    const long verify = SSL_get_verify_result(ssl_.get());
    try {
      const std::string reason = take_openssl_error("the connection failed during the handshake");
      if (verify != X509_V_OK) {
        text_ = "certificate verify failed: ";
        text_ += X509_verify_cert_error_string(verify);
        return fail(ec, make_error_code(tls_errc::certificate_verify_failed));
      }
      text_ = reason;
    } catch (...) {
      ERR_clear_error();
    }
    return fail(ec, make_error_code(tls_errc::handshake_failed));
  }

  TlsStatus fail_after_handshake(std::error_code& ec) noexcept {
    try {
      text_ = take_openssl_error("TLS failure");
    } catch (...) {
      ERR_clear_error();
    }
    return fail(ec, make_error_code(tls_errc::failed));
  }

  std::shared_ptr<const TlsContextState> context_;
  UniqueSsl ssl_;
  BIO* in_ = nullptr;       // owned by ssl_
  BIO* out_bio_ = nullptr;  // owned by ssl_
  std::vector<std::byte> out_;
  std::size_t out_pos_ = 0;
  std::string text_;
  std::error_code last_error_;
  bool handshake_done_ = false;
  bool seen_input_ = false;
  bool not_tls_ = false;
  bool eof_ = false;
  bool failed_ = false;
  bool close_sent_ = false;
};

}  // namespace detail

// ---- blocking: TlsConnection and TlsServer ----

/// The bounds a TLS connection uses when a call's Deadline has no time of its own, so that a
/// silent peer cannot hold a handshake or a closing exchange for ever.
struct TlsOptions {
  std::chrono::steady_clock::duration handshake_timeout = std::chrono::seconds(10);
  std::chrono::steady_clock::duration close_timeout = std::chrono::seconds(10);
  /// TlsServer: the ServerOptions::first_byte_timeout it uses when that is unset. A client's
  /// ClientHello must begin within it before a worker takes the client, so that idle connects
  /// cannot hold the workers for the handshake_timeout. std::nullopt: no such bound.
  std::optional<std::chrono::steady_clock::duration> hello_timeout = std::chrono::seconds(3);
};

/// A TLS stream over a Connection<P>, with Connection's calls and Deadlines. read_some returns 0
/// only after the peer's close_notify (a clean end); a stream that ends without one fails with
/// tls_errc::truncated. Failures throw std::system_error whose message names the operation, the
/// peer and OpenSSL's reason in words; the std::error_code& twins store the code, and error_text()
/// keeps the reason. Destroying it closes the socket without close_notify (the peer then sees a
/// truncation): call shutdown() for a clean end. Move-only; one thread at a time (TLS shares one
/// state between reading and writing).
template <StreamProtocol P>
class TlsConnection {
 public:
  using protocol_type = P;

  TlsConnection() noexcept = default;
  /// Wraps `connection` for `context`'s side, without a handshake yet (handshake() does it; the
  /// first read or write would too, without a bound of its own). A client checks `server_name`.
  /// Throws std::system_error (bad_configuration) as detail::TlsEngine's constructor does;
  /// `connection` is then left as it was.
  TlsConnection(Connection<P>&& connection, const TlsContext& context, std::string_view server_name = {},
                TlsOptions options = {})
      : engine_(std::in_place, context, server_name), connection_(std::move(connection)), options_(options) {}

  /// Resolves and connects to `host` (Connection::connect), then does the handshake as a client
  /// checking `host` in the certificate, all within `d` (without a time: options.handshake_timeout).
  /// Throws std::system_error: the connect's error, or the handshake's with its reason.
  [[nodiscard]] static TlsConnection connect(std::string_view host, int port, const TlsContext& context,
                                             Deadline d = {}, TlsOptions options = {})
    requires InternetProtocol<P>
  {
    const Deadline bound = bounded(d, options.handshake_timeout);
    TlsConnection c(Connection<P>::connect(host, port, bound), context, host, options);
    c.handshake(bound);
    return c;
  }
  /// On failure the result holds no connection; its error_text() says why a handshake failed.
  [[nodiscard]] static TlsConnection connect(std::string_view host, int port, const TlsContext& context, Deadline d,
                                             std::error_code& ec, TlsOptions options = {}) noexcept
    requires InternetProtocol<P>
  {
    const Deadline bound = bounded(d, options.handshake_timeout);
    auto connection = Connection<P>::connect(host, port, bound, ec);
    if (ec) return {};
    return handshaken(std::move(connection), context, host, bound, ec, options);
  }

  /// The client side of TLS over an open connection (STARTTLS), checking `server_name`.
  [[nodiscard]] static TlsConnection client(Connection<P>&& connection, const TlsContext& context,
                                            std::string_view server_name, Deadline d = {}, TlsOptions options = {}) {
    TlsConnection c(std::move(connection), context, server_name, options);
    c.handshake(d);
    return c;
  }
  [[nodiscard]] static TlsConnection client(Connection<P>&& connection, const TlsContext& context,
                                            std::string_view server_name, Deadline d, std::error_code& ec,
                                            TlsOptions options = {}) noexcept {
    return handshaken(std::move(connection), context, server_name, bounded(d, options.handshake_timeout), ec, options);
  }
  /// The server side of TLS over an accepted connection.
  [[nodiscard]] static TlsConnection server(Connection<P>&& connection, const TlsContext& context, Deadline d = {},
                                            TlsOptions options = {}) {
    TlsConnection c(std::move(connection), context, {}, options);
    c.handshake(d);
    return c;
  }
  [[nodiscard]] static TlsConnection server(Connection<P>&& connection, const TlsContext& context, Deadline d,
                                            std::error_code& ec, TlsOptions options = {}) noexcept {
    return handshaken(std::move(connection), context, {}, bounded(d, options.handshake_timeout), ec, options);
  }

  /// Does the handshake within `d` (without a time: the handshake_timeout). Throws std::system_error
  /// ("tls handshake with 127.0.0.1:4433: certificate verify failed: hostname mismatch: ...").
  void handshake(Deadline d = {}) {
    const Deadline bound = bounded(d, options_.handshake_timeout);
    std::error_code ec;
    handshake(bound, ec);
    if (ec) detail::throw_error(ec, where("tls handshake", "with", ec, bound));
  }
  void handshake(Deadline d, std::error_code& ec) noexcept {
    ec = open_check();
    if (ec) return;
    const Deadline bound = bounded(d, options_.handshake_timeout);
    for (;;) {
      std::error_code tls;
      const auto s = engine_->handshake(tls);
      std::error_code sent;
      flush(bound, sent);  // the handshake's messages, or the alert that tells the peer why it failed
      if (s == detail::TlsStatus::error) {
        ec = tls;
        return;
      }
      if (sent || s == detail::TlsStatus::ok) {
        ec = sent;
        return;
      }
      if (s == detail::TlsStatus::want_read) {
        fill(bound, ec);
        if (ec) return;
      }
    }
  }

  // --- reading ---

  /// Reads what is there, up to buffer.size(), waiting for at least one byte. Returns 0 after the
  /// peer's close_notify; throws tls_errc::truncated when the stream ended without one.
  std::size_t read_some(std::span<std::byte> buffer, Deadline d = {}) {
    std::error_code ec;
    const auto n = read_some(buffer, d, ec);
    if (ec) detail::throw_error(ec, where("read", "from", ec, d));
    return n;
  }
  std::size_t read_some(std::span<std::byte> buffer, Deadline d, std::error_code& ec) noexcept {
    ec = open_check();
    if (ec || buffer.empty()) return 0;
    for (;;) {
      std::size_t n = 0;
      switch (engine_->read(buffer, n, ec)) {
        case detail::TlsStatus::ok: return n;
        case detail::TlsStatus::closed: return 0;
        case detail::TlsStatus::error: return 0;
        case detail::TlsStatus::want_write:
          flush(d, ec);
          if (ec) return 0;
          break;
        case detail::TlsStatus::want_read:
          flush(d, ec);
          if (!ec) fill(d, ec);
          if (ec) return 0;
          break;
      }
    }
  }
  std::size_t read_some(std::span<char> buffer, Deadline d = {}) { return read_some(std::as_writable_bytes(buffer), d); }
  std::size_t read_some(std::span<char> buffer, Deadline d, std::error_code& ec) noexcept {
    return read_some(std::as_writable_bytes(buffer), d, ec);
  }

  /// Fills the whole buffer. A clean end first throws TransferError (sockpat::errc::end_of_stream)
  /// with the count that arrived; the twin returns that count.
  std::size_t read_exactly(std::span<std::byte> buffer, Deadline d = {}) {
    std::error_code ec;
    const auto n = read_exactly(buffer, d, ec);
    if (ec) throw TransferError(ec, where("read_exactly", "from", ec, d), n);
    return n;
  }
  std::size_t read_exactly(std::span<std::byte> buffer, Deadline d, std::error_code& ec) noexcept {
    std::size_t done = 0;
    ec.clear();
    while (done < buffer.size()) {
      const auto n = read_some(buffer.subspan(done), d, ec);
      if (ec) return done;
      if (n == 0) {
        ec = make_error_code(errc::end_of_stream);
        return done;
      }
      done += n;
    }
    return done;
  }
  std::size_t read_exactly(std::span<char> buffer, Deadline d = {}) {
    return read_exactly(std::as_writable_bytes(buffer), d);
  }
  std::size_t read_exactly(std::span<char> buffer, Deadline d, std::error_code& ec) noexcept {
    return read_exactly(std::as_writable_bytes(buffer), d, ec);
  }

  // --- writing ---

  /// Encrypts and sends every byte within one deadline. Throws TransferError; the count is the
  /// bytes the TLS layer took (sent, or encrypted and waiting when the error came).
  std::size_t write_all(std::span<const std::byte> data, Deadline d = {}) {
    std::error_code ec;
    const auto n = write_all(data, d, ec);
    if (ec) throw TransferError(ec, where("write_all", "to", ec, d), n);
    return n;
  }
  std::size_t write_all(std::span<const std::byte> data, Deadline d, std::error_code& ec) noexcept {
    ec = open_check();
    if (ec) return 0;
    std::size_t done = 0;
    while (done < data.size()) {
      std::size_t n = 0;
      const auto s = engine_->write(data.subspan(done), n, ec);
      done += n;
      if (s == detail::TlsStatus::error) return done;
      flush(d, ec);  // the engine holds at most output_limit bytes: send them before encrypting more
      if (!ec && s == detail::TlsStatus::want_read) fill(d, ec);
      if (ec) return done;
    }
    return done;
  }
  std::size_t write_all(std::string_view data, Deadline d = {}) { return write_all(detail::bytes_of(data), d); }
  std::size_t write_all(std::string_view data, Deadline d, std::error_code& ec) noexcept {
    return write_all(detail::bytes_of(data), d, ec);
  }

  // --- ending ---

  /// The clean end: sends close_notify and waits for the peer's (or for its stream to end), within
  /// `d` (without a time: options.close_timeout, so a silent peer cannot hold it). Data arriving
  /// meanwhile is discarded. The socket stays open; close() or the destructor closes it.
  void shutdown(Deadline d = {}) {
    const Deadline bound = bounded(d, options_.close_timeout);
    std::error_code ec;
    shutdown(bound, ec);
    if (ec) detail::throw_error(ec, where("tls shutdown", "with", ec, bound));
  }
  void shutdown(Deadline d, std::error_code& ec) noexcept {
    ec = open_check();
    if (ec) return;
    const Deadline bound = bounded(d, options_.close_timeout);
    for (;;) {
      std::error_code tls;
      const auto s = engine_->shutdown(tls);
      flush(bound, ec);
      if (s == detail::TlsStatus::ok) {
        // The peer ended cleanly already: that it no longer takes our close_notify is no failure.
        if (engine_->close_notify_received()) ec.clear();
        return;
      }
      if (s == detail::TlsStatus::error) {
        ec = tls;
        return;
      }
      if (!ec) fill(bound, ec);
      if (ec) return;
    }
  }

  /// Closes the socket (no close_notify: see shutdown()).
  void close() { connection_.close(); }
  void close(std::error_code& ec) noexcept { connection_.close(ec); }

  // --- what was agreed ---

  [[nodiscard]] bool is_open() const noexcept { return connection_.is_open() && engine_.has_value(); }
  /// The ALPN protocol agreed on, or empty.
  [[nodiscard]] std::string_view alpn() const noexcept { return engine_ ? engine_->alpn() : std::string_view{}; }
  /// "TLSv1.3" or "TLSv1.2" once the handshake is done.
  [[nodiscard]] std::string_view protocol_version() const noexcept {
    return engine_ ? engine_->protocol_version() : std::string_view{};
  }
  /// The subject of the peer's certificate (RFC 2253 form), or empty when it sent none.
  [[nodiscard]] std::string peer_subject() const { return engine_ ? engine_->peer_subject() : std::string{}; }
  /// The reason in words of the last TLS failure, for the error_code forms.
  [[nodiscard]] std::string_view error_text() const noexcept {
    return engine_ ? std::string_view(engine_->error_text()) : std::string_view(text_);
  }
  [[nodiscard]] Endpoint remote_endpoint(std::error_code& ec) const noexcept { return connection_.remote_endpoint(ec); }
  [[nodiscard]] Endpoint remote_endpoint() const { return connection_.remote_endpoint(); }
  [[nodiscard]] Endpoint local_endpoint() const { return connection_.local_endpoint(); }

  /// The connection underneath (its timeout and stop token bound every call here too).
  [[nodiscard]] Connection<P>& connection() noexcept { return connection_; }
  [[nodiscard]] const Connection<P>& connection() const noexcept { return connection_; }
  /// The engine, for what this class does not name (native_handle(): the SSL).
  [[nodiscard]] detail::TlsEngine* engine() noexcept { return engine_ ? &*engine_ : nullptr; }

 private:
  static constexpr std::size_t input_buffer = 32 * 1024;

  [[nodiscard]] static Deadline bounded(const Deadline& d, std::chrono::steady_clock::duration fallback) noexcept {
    if (d.has_time()) return d;
    return Deadline(fallback, d.stop_token());
  }

  [[nodiscard]] static TlsConnection handshaken(Connection<P>&& connection, const TlsContext& context,
                                                std::string_view server_name, const Deadline& d, std::error_code& ec,
                                                TlsOptions options) noexcept {
    TlsConnection c;
    try {
      c = TlsConnection(std::move(connection), context, server_name, options);
    } catch (const std::system_error& e) {
      ec = e.code();
      c.text_ = e.what();
      return c;
    } catch (...) {
      ec = std::make_error_code(std::errc::not_enough_memory);
      return c;
    }
    c.handshake(d, ec);
    if (ec) {
      std::error_code ignored;
      c.connection_.close(ignored);  // keeps the engine, for error_text()
    }
    return c;
  }

  [[nodiscard]] std::error_code open_check() const noexcept {
    if (!engine_ || !connection_.is_open()) return make_error_code(errc::not_connected);
    return {};
  }

  // Sends what the engine has for the peer.
  void flush(const Deadline& d, std::error_code& ec) noexcept {
    ec.clear();
    while (!engine_->output().empty()) {
      const auto n = connection_.write_some(engine_->output(), d, ec);
      engine_->consume_output(n);
      if (ec) return;
    }
  }

  // Reads what the peer sent into the engine; the end of its stream is given to the engine as such.
  void fill(const Deadline& d, std::error_code& ec) noexcept {
    if (in_.empty()) {
      try {
        in_.resize(input_buffer);
      } catch (...) {
        ec = std::make_error_code(std::errc::not_enough_memory);
        return;
      }
    }
    const std::size_t room = (std::min)(in_.size(), engine_->input_room());
    if (room == 0) {  // a record larger than TLS allows
      ec = make_error_code(errc::buffer_full);
      return;
    }
    const auto n = connection_.read_some(std::span<std::byte>(in_).first(room), d, ec);
    if (ec) return;
    if (n == 0) {
      engine_->feed_eof();
    } else {
      (void)engine_->feed(std::span<const std::byte>(in_).first(n));
    }
  }

  // The message a failed call throws with: "read from PEER", and the TLS layer's reason in words.
  [[nodiscard]] std::string where(std::string_view op, std::string_view to_from, std::error_code ec,
                                  const Deadline& d) const {
    std::error_code ignored;
    std::string s = detail::describe(op, to_from, connection_.remote_endpoint(ignored),
                                     connection_.local_endpoint(ignored), ec, detail::waited(d, connection_.timeout()));
    if (engine_ && engine_->failed() && !engine_->error_text().empty()) {
      s += ": ";
      s += engine_->error_text();
    }
    return s;
  }

  // The engine first: if it cannot be made, the connection is not taken, so that the caller (a
  // TlsServer's Server) still has the socket and its peer to report.
  std::optional<detail::TlsEngine> engine_;
  Connection<P> connection_;
  TlsOptions options_;
  std::vector<std::byte> in_;
  std::string text_;  // why the engine could not be made (the error_code forms)
};

using TlsTcpConnection = TlsConnection<Tcp>;

/// Server<P> for TLS clients: a client waits, holding no thread, until its ClientHello begins
/// (TlsOptions::hello_timeout; one silent past it is closed and counted in stats().silent), then
/// its handshake runs on the server's thread for it, bounded by TlsOptions::handshake_timeout, then `handler(tls_connection)` (or `handler(tls_connection,
/// stop)`) runs as Server's handlers do. A failed handshake (a plaintext client, a certificate
/// rejected, a client that gives up) ends that client like a handler that throws: reported to
/// ServerOptions::on_error (or one line on stderr), counted in stats(); a handshake that times out or
/// a client that leaves is counted, not reported. The server goes on with the next client.
template <StreamProtocol P>
class TlsServer {
 public:
  using protocol_type = P;

  template <class H>
    requires std::is_invocable_v<H&, TlsConnection<P>&> || std::is_invocable_v<H&, TlsConnection<P>&, std::stop_token>
  TlsServer(Listener<P> listener, TlsContext context, H handler, ServerOptions options = {}, TlsOptions tls = {})
      : context_(std::move(context)),
        tls_(tls),
        server_(std::move(listener), wrap(std::move(handler)), with_hello(std::move(options), tls)) {
    if (!context_.is_server()) throw std::invalid_argument("sockpat: TlsServer needs a server context (TlsContext::server)");
  }
  /// Binds `local` (port 0 picks a free port: read it back with local_endpoint()).
  template <class H>
    requires std::is_invocable_v<H&, TlsConnection<P>&> || std::is_invocable_v<H&, TlsConnection<P>&, std::stop_token>
  TlsServer(const Endpoint& local, TlsContext context, H handler, ServerOptions options = {}, TlsOptions tls = {})
      : TlsServer(Listener<P>::bind(local), std::move(context), std::move(handler), std::move(options), tls) {}
  template <class H>
    requires InternetProtocol<P> && (std::is_invocable_v<H&, TlsConnection<P>&> ||
                                     std::is_invocable_v<H&, TlsConnection<P>&, std::stop_token>)
  TlsServer(std::string_view host, int port, TlsContext context, H handler, ServerOptions options = {},
            TlsOptions tls = {})
      : TlsServer(Listener<P>::bind(host, port), std::move(context), std::move(handler), std::move(options), tls) {}

  /// As Server: serve() runs until a stop, start() on a thread of its own; stop() joins.
  void serve(std::stop_token stop = {}, std::stop_token urgent = {}) { server_.serve(std::move(stop), std::move(urgent)); }
  void start(std::stop_token stop = {}, std::stop_token urgent = {}) { server_.start(std::move(stop), std::move(urgent)); }
  void request_stop() noexcept { server_.request_stop(); }
  void stop() noexcept { server_.stop(); }
  [[nodiscard]] bool stop_requested() const noexcept { return server_.stop_requested(); }
  [[nodiscard]] std::stop_token stop_token() const noexcept { return server_.stop_token(); }
  [[nodiscard]] const Endpoint& local_endpoint() const noexcept { return server_.local_endpoint(); }
  [[nodiscard]] ServerStats stats() const { return server_.stats(); }
  [[nodiscard]] const TlsContext& context() const noexcept { return context_; }

 private:
  static ServerOptions with_hello(ServerOptions options, const TlsOptions& tls) {
    if (!options.first_byte_timeout) options.first_byte_timeout = tls.hello_timeout;
    return options;
  }

  // Runs `use` on the TLS connection over `c` once its handshake is done. `c` gets its socket back
  // afterwards, even when something threw, so that Server names the client and closes it.
  template <class F>
  void session(Connection<P>& c, F&& use) {
    TlsConnection<P> tls(std::move(c), context_, {}, tls_);
    struct GiveBack {
      Connection<P>& to;
      TlsConnection<P>& from;
      ~GiveBack() { to = std::move(from.connection()); }
    } give_back{c, tls};
    tls.handshake();
    use(tls);
  }

  template <class H>
  auto wrap(H handler) {
    if constexpr (std::is_invocable_v<H&, TlsConnection<P>&, std::stop_token>) {
      return [this, h = std::move(handler)](Connection<P>& c, std::stop_token stop) mutable {
        session(c, [&](TlsConnection<P>& tls) { h(tls, std::move(stop)); });
      };
    } else {
      return [this, h = std::move(handler)](Connection<P>& c) mutable {
        session(c, [&](TlsConnection<P>& tls) { h(tls); });
      };
    }
  }

  TlsContext context_;
  TlsOptions tls_;
  Server<P> server_;  // last: it stops and joins its handlers before the context goes
};

using TlsTcpServer = TlsServer<Tcp>;

}  // namespace sockpat

#endif  // SOCKPAT_TLS_HPP

// Fuzz target: the server side of the TLS engine (detail::TlsEngine) fed arbitrary ciphertext, as
// a hostile client would send it. The first byte picks a chunk size; the rest is the stream.
// Properties checked:
// - nothing throws or crashes, whatever the bytes;
// - the engine never holds more input than input_limit, nor output beyond a bound;
// - once a step fails, every later step fails with the same error;
// - plaintext (no handshake or alert record first) is named not_tls.
// The server's key and certificate are made in memory on the first call: no key is committed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "sockpat/tls.hpp"

namespace {

using sockpat::detail::TlsEngine;
using sockpat::detail::TlsStatus;

void check(bool ok) {
  if (!ok) std::abort();
}

std::string pem_of(EVP_PKEY* key, X509* cert) {
  std::string out;
  sockpat::detail::UniqueBio bio(BIO_new(BIO_s_mem()));
  check(bio != nullptr);
  check(cert != nullptr ? PEM_write_bio_X509(bio.get(), cert) == 1
                        : PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  out.assign(data, static_cast<std::size_t>(n));
  return out;
}

const sockpat::TlsContext& server_context() {
  static const sockpat::TlsContext context = [] {
    sockpat::detail::UniquePkey key(EVP_EC_gen("P-256"));
    check(key != nullptr);
    sockpat::detail::UniqueX509 cert(X509_new());
    check(cert != nullptr);
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600L * 24 * 365);
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("fuzz"), -1, -1, 0);
    X509_set_issuer_name(cert.get(), name);
    X509_set_pubkey(cert.get(), key.get());
    check(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0);
    auto c = sockpat::TlsContext::server_from_pem(pem_of(nullptr, cert.get()), pem_of(key.get(), nullptr));
    c.set_alpn({"h2", "http/1.1"});
    return c;
  }();
  return context;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t chunk = 1 + data[0] % 64 * 97;  // 1 to 6112 bytes per feed
  const auto stream = std::as_bytes(std::span(data + 1, size - 1));
  TlsEngine engine(server_context(), {});
  std::error_code first_error;
  std::byte plain[TlsEngine::max_record];
  for (std::size_t pos = 0; pos < stream.size();) {
    const auto piece = stream.subspan(pos, std::min(chunk, stream.size() - pos));
    const std::size_t taken = engine.feed(piece);
    check(taken <= piece.size());
    check(TlsEngine::input_limit - engine.input_room() <= TlsEngine::input_limit);
    pos += taken;
    std::error_code ec;
    TlsStatus s = engine.handshake(ec);
    if (s == TlsStatus::ok) {
      std::size_t n = 0;
      s = engine.read(plain, n, ec);
      check(n <= sizeof plain);
    }
    if (s == TlsStatus::error) {
      check(static_cast<bool>(ec));
      if (!first_error) {
        first_error = ec;
        if (static_cast<unsigned char>(stream[0]) != 22 && static_cast<unsigned char>(stream[0]) != 21) {
          check(ec == sockpat::tls_errc::not_tls);
        }
      }
      check(ec == first_error);
    }
    // The server's answers (its handshake flight, tickets, an alert) stay small whatever the input.
    check(engine.output().size() <= 64 * 1024);
    engine.consume_output(engine.output().size());
    if (taken == 0 && s != TlsStatus::ok) break;  // full and stuck: the caller would fail it as a record too large
  }
  return 0;
}

// A consumer of sockpat/tls.hpp (tests/packaging/run.sh): a client context that verifies by
// default, and the first handshake step of an engine, which needs OpenSSL linked. No network.
#include <cstdio>
#include <system_error>

#include "sockpat/tls.hpp"
#include "sockpat/version.hpp"

int main() {
  const auto context = sockpat::TlsContext::client();
  sockpat::detail::TlsEngine engine(context, "localhost");
  std::error_code ec;
  const auto status = engine.handshake(ec);
  if (status != sockpat::detail::TlsStatus::want_read || engine.output().empty() || !context.verifies_peer()) {
    std::printf("sockpat tls consumer: unexpected first step\n");
    return 1;
  }
  std::printf("sockpat %s tls consumer: a ClientHello\n", SOCKPAT_VERSION_STRING);
  return 0;
}

// sockpat: Endpoint (an IPv4, IPv6 or Unix-domain address) and name resolution.
#ifndef SOCKPAT_ENDPOINT_HPP
#define SOCKPAT_ENDPOINT_HPP

#include <cstddef>       // std::size_t
#include <cstdint>       // std::uint16_t
#include <cstring>       // std::memcpy
#include <stdexcept>     // std::invalid_argument
#include <string>        // std::string
#include <string_view>   // std::string_view, std::hash
#include <system_error>  // std::error_code, std::system_error
#include <vector>        // std::vector

#include "sockpat/detail/address.hpp"

namespace sockpat {

namespace detail {

inline std::string quoted(std::string_view s) {
  std::string q = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') q += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      static constexpr char hex[] = "0123456789abcdef";
      q += "\\x";
      q += hex[(c >> 4) & 0xf];
      q += hex[c & 0xf];
      continue;
    }
    q += c;
  }
  return q + '"';
}

/// "HOST:PORT" as messages write it: an IPv6 literal in brackets ("[2001:db8::1]:9"), as
/// Endpoint::to_string() does. A host name never holds a ':'.
inline std::string host_port(std::string_view host, long long port) {
  std::string s;
  if (host.find(':') != std::string_view::npos) {
    s.append(1, '[').append(host).append(1, ']');
  } else {
    s.append(host);
  }
  return s.append(1, ':').append(std::to_string(port));
}

inline std::uint16_t checked_port(long long port, std::string_view context) {
  if (port < 0 || port > 65535) {
    throw std::invalid_argument("sockpat: invalid port " + std::to_string(port) + " for " + quoted(context) +
                                " (a port is 0 to 65535)");
  }
  return static_cast<std::uint16_t>(port);
}

// getaddrinfo takes the legacy inet_aton forms ("1.2.3" is 1.2.0.3, "127.1" is 127.0.0.1), which
// turn a typo into a connection to some other host. A host of digits and dots must be a full
// dotted quad.
inline bool malformed_dotted_quad(std::string_view host) noexcept {
  if (host.find_first_not_of("0123456789.") != std::string_view::npos) return false;
  RawAddress ignored;
  return !parse_numeric_host(host, 0, ignored);
}

}  // namespace detail

/// An IPv4, IPv6 or Unix-domain socket address. Cheap to copy, comparable and hashable.
/// to_string() gives "127.0.0.1:80", "[::1]:80", "unix:/path" or "unix:@name" (Linux's
/// abstract namespace), and parse() reads each of them back; an unnamed Unix-domain socket (a
/// socketpair end, an unbound client) is "unix:(unnamed)", which names no path.
class Endpoint {
 public:
  Endpoint() noexcept = default;

  /// An IP endpoint from a numeric host ("127.0.0.1", "::1", "fe80::1%eth0") and a port.
  /// Throws std::invalid_argument, quoting the input, for a bad port, an empty host or a name
  /// (names go through sockpat::resolve(), or a connect by name, which resolves them itself).
  Endpoint(std::string_view host, int port) {
    const auto p = detail::checked_port(port, host);
    if (host.empty()) throw std::invalid_argument("sockpat: empty host (with port " + std::to_string(port) + ")");
    if (!detail::parse_numeric_host(host, p, raw_)) {
      throw std::invalid_argument("sockpat: " + detail::quoted(host) +
                                  " is not a numeric IPv4 or IPv6 address (a host name needs sockpat::resolve(), or a connect by name)");
    }
  }

  /// Parses "HOST:PORT" with a numeric IPv4 host, "[V6]:PORT", "unix:/path" or "unix:@name".
  /// Throws std::invalid_argument quoting the text when it is none of these.
  [[nodiscard]] static Endpoint parse(std::string_view text) {
    const auto fail = [&](const char* why) {
      return std::invalid_argument("sockpat: cannot parse endpoint " + detail::quoted(text) + ": " + why);
    };
    if (text.starts_with("unix:")) {
      const auto rest = text.substr(5);
      if (rest.empty()) throw fail("empty Unix-domain path");
      if (rest.front() == '@') return unix_abstract(rest.substr(1));
      return unix_path(rest);
    }
    std::string_view host;
    std::string_view port;
    if (text.starts_with('[')) {
      const auto close = text.find(']');
      if (close == std::string_view::npos) throw fail("missing ']' after an IPv6 address");
      host = text.substr(1, close - 1);
      if (close + 1 >= text.size() || text[close + 1] != ':') throw fail("expected ':PORT' after ']'");
      port = text.substr(close + 2);
    } else {
      const auto colon = text.rfind(':');
      if (colon == std::string_view::npos) throw fail("expected HOST:PORT, [IPV6]:PORT or unix:PATH");
      host = text.substr(0, colon);
      if (host.find(':') != std::string_view::npos) throw fail("an IPv6 address needs brackets: [ADDRESS]:PORT");
      port = text.substr(colon + 1);
    }
    if (host.empty()) throw fail("empty host");
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos) {
      throw fail("the port must be a number from 0 to 65535");
    }
    const long long p = std::stoll(std::string(port));
    if (p > 65535) throw fail("the port must be a number from 0 to 65535");
    Endpoint e;
    if (!detail::parse_numeric_host(host, static_cast<std::uint16_t>(p), e.raw_)) {
      throw fail("not a numeric IPv4 or IPv6 address (a host name needs sockpat::resolve(), or a connect by name)");
    }
    if (text.starts_with('[') != (e.family() == Family::ipv6)) throw fail("brackets are for IPv6 addresses only");
    return e;
  }

  /// A Unix-domain endpoint at a filesystem path. Throws std::invalid_argument when the path
  /// is empty, holds a NUL, or is longer than the platform allows (107 bytes on Linux).
  [[nodiscard]] static Endpoint unix_path(std::string_view path) {
    Endpoint e;
    if (path.empty()) throw std::invalid_argument("sockpat: empty Unix-domain path");
    if (!detail::make_unix_address(path, false, e.raw_)) {
      throw std::invalid_argument("sockpat: Unix-domain path " + detail::quoted(path) + " is too long (at most " +
                                  std::to_string(detail::unix_path_capacity - 1) + " bytes) or holds a NUL");
    }
    return e;
  }

#if defined(SOCKPAT_LINUX)
  /// A Unix-domain endpoint in Linux's abstract namespace: no file, gone with the last socket.
  [[nodiscard]] static Endpoint unix_abstract(std::string_view name) {
    Endpoint e;
    if (!detail::make_unix_address(name, true, e.raw_)) {
      throw std::invalid_argument("sockpat: abstract Unix-domain name " + detail::quoted(name) +
                                  " is too long (at most " + std::to_string(detail::unix_path_capacity - 1) +
                                  " bytes)");
    }
    return e;
  }
#else
  [[nodiscard]] static Endpoint unix_abstract(std::string_view name) {
    throw std::invalid_argument("sockpat: abstract Unix-domain names (" + detail::quoted(name) +
                                ") exist only on Linux");
  }
#endif

  /// The wildcard address of a family ("0.0.0.0" or "::") with a port, for servers on every interface.
  [[nodiscard]] static Endpoint any(Family family, int port) {
    if (family == Family::ipv6) return {"::", port};
    if (family == Family::ipv4) return {"0.0.0.0", port};
    throw std::invalid_argument("sockpat: Endpoint::any needs Family::ipv4 or Family::ipv6");
  }

  /// Wraps an address the OS returned (`size` bytes at `addr`).
  [[nodiscard]] static Endpoint from_native(const void* addr, std::size_t size) noexcept {
    Endpoint e;
    if (size > sizeof e.raw_.storage) size = sizeof e.raw_.storage;
    std::memcpy(&e.raw_.storage, addr, size);
    e.raw_.size = static_cast<detail::socklen>(size);
    return e;
  }

  [[nodiscard]] Family family() const noexcept { return detail::family_from_native(raw_.native_family()); }
  [[nodiscard]] bool is_v4() const noexcept { return family() == Family::ipv4; }
  [[nodiscard]] bool is_v6() const noexcept { return family() == Family::ipv6; }
  [[nodiscard]] bool is_unix() const noexcept { return family() == Family::unix_domain; }
  [[nodiscard]] bool empty() const noexcept { return family() == Family::unspecified; }

  /// The port of an IP endpoint (0 for a Unix-domain one).
  [[nodiscard]] std::uint16_t port() const noexcept { return detail::port_of(raw_); }
  /// The numeric host of an IP endpoint ("127.0.0.1", "::1"); empty for a Unix-domain one.
  [[nodiscard]] std::string host() const { return detail::host_of(raw_); }
  /// The path (or abstract name) of a Unix-domain endpoint; empty for an unnamed one.
  [[nodiscard]] std::string path() const {
    bool abstract = false;
    return std::string(detail::unix_path_of(raw_, abstract));
  }
  [[nodiscard]] bool is_abstract() const noexcept {
    bool abstract = false;
    (void)detail::unix_path_of(raw_, abstract);
    return abstract;
  }

  /// The same address with another port.
  [[nodiscard]] Endpoint with_port(int port) const {
    Endpoint e = *this;
    detail::set_port(e.raw_, detail::checked_port(port, to_string()));
    return e;
  }

  [[nodiscard]] std::string to_string() const {
    switch (family()) {
      case Family::ipv4: return host() + ':' + std::to_string(port());
      case Family::ipv6: return '[' + host() + "]:" + std::to_string(port());
      case Family::unix_domain: {
        if (is_abstract()) return "unix:@" + path();
        const auto p = path();
        return p.empty() ? "unix:(unnamed)" : "unix:" + p;
      }
      case Family::unspecified: break;
    }
    return "unspecified";
  }

  friend bool operator==(const Endpoint& a, const Endpoint& b) noexcept { return detail::same_address(a.raw_, b.raw_); }

  /// The native address, for the platform layer.
  [[nodiscard]] const detail::RawAddress& raw() const noexcept { return raw_; }

 private:
  detail::RawAddress raw_;
};

/// Every address getaddrinfo gives for `host` and `port` (numeric hosts too), in its order,
/// without duplicates. Throws std::invalid_argument for an empty host, a bad port or a
/// malformed dotted quad ("1.2.3", which getaddrinfo would read as 1.2.0.3), and
/// std::system_error (resolver category) when the name does not resolve.
[[nodiscard]] inline std::vector<Endpoint> resolve(std::string_view host, int port, Family family = Family::unspecified,
                                                   detail::SocketType type = detail::SocketType::stream) {
  const auto p = detail::checked_port(port, host);
  if (host.empty()) throw std::invalid_argument("sockpat: cannot resolve an empty host");
  if (detail::malformed_dotted_quad(host)) {
    throw std::invalid_argument("sockpat: " + detail::quoted(host) + " is not a valid IPv4 address");
  }
  std::vector<detail::RawAddress> raw;
  if (auto ec = detail::get_addresses(std::string(host), p, family, type, raw)) {
    throw std::system_error(ec, "resolve " + detail::quoted(host));
  }
  std::vector<Endpoint> out;
  out.reserve(raw.size());
  for (const auto& r : raw) out.push_back(Endpoint::from_native(&r.storage, r.size));
  return out;
}

/// As above; errors (including a bad port or an empty host, as invalid_argument) go to `ec`.
[[nodiscard]] inline std::vector<Endpoint> resolve(std::string_view host, int port, std::error_code& ec,
                                                   Family family = Family::unspecified,
                                                   detail::SocketType type = detail::SocketType::stream) noexcept {
  ec.clear();
  if (host.empty() || port < 0 || port > 65535 || detail::malformed_dotted_quad(host)) {
    ec = detail::make_errc(std::errc::invalid_argument);
    return {};
  }
  std::vector<detail::RawAddress> raw;
  ec = detail::get_addresses(std::string(host), static_cast<std::uint16_t>(port), family, type, raw);
  std::vector<Endpoint> out;
  for (const auto& r : raw) out.push_back(Endpoint::from_native(&r.storage, r.size));
  return out;
}

}  // namespace sockpat

template <>
struct std::hash<sockpat::Endpoint> {
  std::size_t operator()(const sockpat::Endpoint& e) const noexcept {
    const std::size_t h = std::hash<std::string_view>{}(sockpat::detail::identity_bytes(e.raw()));
    return h ^ (static_cast<std::size_t>(e.family()) * 0x9e3779b97f4a7c15ULL) ^ e.port();
  }
};

#endif  // SOCKPAT_ENDPOINT_HPP

// sockpat: socket addresses in their native form, and getaddrinfo.
#ifndef SOCKPAT_DETAIL_ADDRESS_HPP
#define SOCKPAT_DETAIL_ADDRESS_HPP

#include <cstddef>       // std::size_t
#include <cstdint>       // std::uint8_t, std::uint16_t, std::uint32_t
#include <cstdlib>       // std::strtoul
#include <cstring>       // std::memcpy, std::memcmp, std::strchr
#include <string>        // std::string
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code, std::error_category
#include <vector>        // std::vector

#include "sockpat/detail/syscall.hpp"

namespace sockpat {

/// The address family of an Endpoint or a Socket.
enum class Family : std::uint8_t { unspecified, ipv4, ipv6, unix_domain };

}  // namespace sockpat

namespace sockpat::detail {

#if defined(SOCKPAT_WINDOWS) && !defined(SOCKPAT_HAS_AFUNIX_H)
// An SDK older than Windows 10's has no <afunix.h>. The address layout is the documented one, so
// endpoints still parse; opening an AF_UNIX socket then fails at run time on a Windows without
// AF_UNIX support, with address_family_not_supported.
struct fallback_sockaddr_un {
  ::ADDRESS_FAMILY sun_family;
  char sun_path[108];
};
using unix_address = fallback_sockaddr_un;
#else
using unix_address = ::sockaddr_un;
#endif

#if defined(SOCKPAT_WINDOWS)
inline constexpr std::size_t interface_name_capacity = 256;
#else
inline constexpr std::size_t interface_name_capacity = IF_NAMESIZE;
#endif

inline int native_family(Family f) noexcept {
  switch (f) {
    case Family::ipv4: return AF_INET;
    case Family::ipv6: return AF_INET6;
    case Family::unix_domain: return AF_UNIX;
    case Family::unspecified: break;
  }
  return AF_UNSPEC;
}

inline Family family_from_native(int af) noexcept {
  switch (af) {
    case AF_INET: return Family::ipv4;
    case AF_INET6: return Family::ipv6;
    case AF_UNIX: return Family::unix_domain;
    default: return Family::unspecified;
  }
}

/// A socket address as the OS takes it: storage and the length in use.
struct RawAddress {
  ::sockaddr_storage storage{};
  socklen size = 0;

  [[nodiscard]] const void* data() const noexcept { return &storage; }
  [[nodiscard]] void* data() noexcept { return &storage; }
  [[nodiscard]] int native_family() const noexcept { return size == 0 ? AF_UNSPEC : storage.ss_family; }
  [[nodiscard]] const ::sockaddr_in& v4() const noexcept { return *reinterpret_cast<const ::sockaddr_in*>(&storage); }
  [[nodiscard]] const ::sockaddr_in6& v6() const noexcept { return *reinterpret_cast<const ::sockaddr_in6*>(&storage); }
  [[nodiscard]] const unix_address& un() const noexcept { return *reinterpret_cast<const unix_address*>(&storage); }
};

inline constexpr std::size_t unix_path_capacity = sizeof(unix_address::sun_path);

/// Parses a numeric IPv4 or IPv6 host (an IPv6 host may carry a `%scope`) into `out`.
inline bool parse_numeric_host(std::string_view host, std::uint16_t port, RawAddress& out) noexcept {
  char buf[INET6_ADDRSTRLEN + interface_name_capacity + 2];
  if (host.empty() || host.size() >= sizeof buf) return false;
#if defined(SOCKPAT_WINDOWS)
  if (ensure_winsock()) return false;  // inet_pton is a Winsock function
#endif
  std::memcpy(buf, host.data(), host.size());
  buf[host.size()] = '\0';
  out = RawAddress{};
  auto& in4 = *reinterpret_cast<::sockaddr_in*>(&out.storage);
  if (::inet_pton(AF_INET, buf, &in4.sin_addr) == 1) {
    in4.sin_family = AF_INET;
    in4.sin_port = htons(port);
    out.size = sizeof(::sockaddr_in);
    return true;
  }
  out = RawAddress{};
  auto& in6 = *reinterpret_cast<::sockaddr_in6*>(&out.storage);
  char* scope = std::strchr(buf, '%');
  if (scope != nullptr) *scope++ = '\0';
  if (::inet_pton(AF_INET6, buf, &in6.sin6_addr) != 1) return false;
  if (scope != nullptr) {
    if (*scope == '\0') return false;
    char* end = nullptr;
    const unsigned long id = std::strtoul(scope, &end, 10);
    if (*end == '\0' && id <= UINT32_MAX) {
      in6.sin6_scope_id = static_cast<std::uint32_t>(id);
    } else {
#if defined(SOCKPAT_WINDOWS)
      // Windows names scopes by number ("fe80::1%12"); if_nametoindex would need iphlpapi.
      return false;
#else
      in6.sin6_scope_id = ::if_nametoindex(scope);
      if (in6.sin6_scope_id == 0) return false;
#endif
    }
  }
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(port);
  out.size = sizeof(::sockaddr_in6);
  return true;
}

/// A Unix-domain address; `abstract` puts it in Linux's abstract namespace (no file).
inline bool make_unix_address(std::string_view path, bool abstract, RawAddress& out) noexcept {
  out = RawAddress{};
  auto& un = *reinterpret_cast<unix_address*>(&out.storage);
  const std::size_t offset = abstract ? 1 : 0;
  // A filesystem path needs a byte for its terminating NUL, an abstract name one for its leading NUL.
  if (path.size() > unix_path_capacity - 1) return false;
  if (!abstract && path.find('\0') != std::string_view::npos) return false;
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path + offset, path.data(), path.size());
  out.size = static_cast<socklen>(offsetof(unix_address, sun_path) + offset + path.size() + (abstract ? 0 : 1));
  return true;
}

inline std::uint16_t port_of(const RawAddress& a) noexcept {
  switch (a.native_family()) {
    case AF_INET: return ntohs(a.v4().sin_port);
    case AF_INET6: return ntohs(a.v6().sin6_port);
    default: return 0;
  }
}

inline void set_port(RawAddress& a, std::uint16_t port) noexcept {
  if (a.native_family() == AF_INET) reinterpret_cast<::sockaddr_in*>(&a.storage)->sin_port = htons(port);
  if (a.native_family() == AF_INET6) reinterpret_cast<::sockaddr_in6*>(&a.storage)->sin6_port = htons(port);
}

/// The numeric host of an IP address ("127.0.0.1", "::1", "fe80::1%2").
inline std::string host_of(const RawAddress& a) {
  char buf[INET6_ADDRSTRLEN + 16] = {};
  if (a.native_family() == AF_INET) {
    ::inet_ntop(AF_INET, &a.v4().sin_addr, buf, sizeof buf);
    return buf;
  }
  if (a.native_family() == AF_INET6) {
    ::inet_ntop(AF_INET6, &a.v6().sin6_addr, buf, sizeof buf);
    std::string s = buf;
    if (a.v6().sin6_scope_id != 0) s += '%' + std::to_string(a.v6().sin6_scope_id);
    return s;
  }
  return {};
}

/// The path of a Unix-domain address; for an abstract one, the name after the leading NUL.
inline std::string_view unix_path_of(const RawAddress& a, bool& abstract) noexcept {
  abstract = false;
  if (a.native_family() != AF_UNIX) return {};
  const std::size_t header = offsetof(unix_address, sun_path);
  const auto size = static_cast<std::size_t>(a.size);  // socklen is int on Windows
  if (size <= header) return {};  // unnamed (an unbound or socketpair socket)
  const char* p = a.un().sun_path;
  std::size_t n = size - header;
  if (p[0] == '\0') {
    abstract = true;
    return {p + 1, n - 1};
  }
  while (n > 0 && p[n - 1] == '\0') --n;  // lengths from the kernel may include the NUL
  return {p, n};
}

inline bool same_address(const RawAddress& a, const RawAddress& b) noexcept {
  if (a.native_family() != b.native_family()) return false;
  switch (a.native_family()) {
    case AF_INET:
      return a.v4().sin_port == b.v4().sin_port && a.v4().sin_addr.s_addr == b.v4().sin_addr.s_addr;
    case AF_INET6:
      return a.v6().sin6_port == b.v6().sin6_port && a.v6().sin6_scope_id == b.v6().sin6_scope_id &&
             std::memcmp(&a.v6().sin6_addr, &b.v6().sin6_addr, sizeof(::in6_addr)) == 0;
    case AF_UNIX: {
      bool abs_a = false, abs_b = false;
      return unix_path_of(a, abs_a) == unix_path_of(b, abs_b) && abs_a == abs_b;
    }
    default: return true;  // two unspecified addresses
  }
}

/// The bytes that identify an address, for hashing.
inline std::string_view identity_bytes(const RawAddress& a) noexcept {
  const auto* base = reinterpret_cast<const char*>(&a.storage);
  switch (a.native_family()) {
    case AF_INET: return {base + offsetof(::sockaddr_in, sin_port), sizeof(std::uint16_t) + sizeof(::in_addr)};
    case AF_INET6: return {reinterpret_cast<const char*>(&a.v6().sin6_addr), sizeof(::in6_addr)};
    case AF_UNIX: {
      bool abstract = false;
      return unix_path_of(a, abstract);
    }
    default: return {};
  }
}

#if defined(SOCKPAT_POSIX)
class ResolverCategory final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "sockpat.resolver"; }
  [[nodiscard]] std::string message(int code) const override { return ::gai_strerror(code); }
};

inline const std::error_category& resolver_category() noexcept {
  static const ResolverCategory category;
  return category;
}
#else
// getaddrinfo's EAI_* codes are WSA error codes on Windows (and gai_strerror is not thread-safe
// there): they belong to the Winsock category.
inline const std::error_category& resolver_category() noexcept { return winsock_category(); }
#endif

enum class SocketType { stream, datagram };

inline int native_type(SocketType t) noexcept { return t == SocketType::stream ? SOCK_STREAM : SOCK_DGRAM; }

/// getaddrinfo for `host`, numeric `port`, the given family (unspecified: all) and socket type.
/// Errors come in the resolver category (EAI_*), or the system one for EAI_SYSTEM; on Windows
/// in the Winsock category.
inline std::error_code get_addresses(const std::string& host, std::uint16_t port, Family family, SocketType type,
                                     std::vector<RawAddress>& out) {
  ::addrinfo hints{};
  hints.ai_family = native_family(family);
  hints.ai_socktype = native_type(type);
  hints.ai_flags = AI_NUMERICSERV;
  const std::string service = std::to_string(port);
  ::addrinfo* list = nullptr;
#if defined(SOCKPAT_WINDOWS)
  if (auto ec = ensure_winsock()) return ec;
#endif
  const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &list);
  if (rc != 0) {
#if defined(EAI_SYSTEM)
    if (rc == EAI_SYSTEM) return last_error();
#endif
    return {rc, resolver_category()};
  }
  for (const ::addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    if (ai->ai_addrlen > sizeof(::sockaddr_storage)) continue;
    RawAddress a;
    std::memcpy(&a.storage, ai->ai_addr, ai->ai_addrlen);
    a.size = static_cast<socklen>(ai->ai_addrlen);
    bool duplicate = false;
    for (const auto& seen : out) duplicate = duplicate || same_address(seen, a);
    if (!duplicate) out.push_back(a);
  }
  ::freeaddrinfo(list);
  return {};
}

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_ADDRESS_HPP

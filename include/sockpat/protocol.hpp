// sockpat: protocol tags and the concepts that constrain the class templates.
#ifndef SOCKPAT_PROTOCOL_HPP
#define SOCKPAT_PROTOCOL_HPP

#include <concepts>  // std::same_as

#include "sockpat/detail/address.hpp"

namespace sockpat {

/// TCP over IPv4 or IPv6.
struct Tcp {
  static constexpr detail::SocketType type = detail::SocketType::stream;
  static constexpr bool local = false;
};
/// UDP over IPv4 or IPv6.
struct Udp {
  static constexpr detail::SocketType type = detail::SocketType::datagram;
  static constexpr bool local = false;
};
/// Unix-domain stream sockets (a path, or Linux's abstract namespace).
struct Unix {
  static constexpr detail::SocketType type = detail::SocketType::stream;
  static constexpr bool local = true;
};
/// Unix-domain datagram sockets.
struct UnixDatagram {
  static constexpr detail::SocketType type = detail::SocketType::datagram;
  static constexpr bool local = true;
};

template <class P>
concept Protocol = requires {
  { P::type } -> std::convertible_to<detail::SocketType>;
  { P::local } -> std::convertible_to<bool>;
};

template <class P>
concept StreamProtocol = Protocol<P> && (P::type == detail::SocketType::stream);

template <class P>
concept DatagramProtocol = Protocol<P> && (P::type == detail::SocketType::datagram);

/// Protocols addressed by IP (and so resolvable from a host name and a port).
template <class P>
concept InternetProtocol = Protocol<P> && (!P::local);

/// Protocols addressed by a Unix-domain path.
template <class P>
concept LocalProtocol = Protocol<P> && P::local;

}  // namespace sockpat

#endif  // SOCKPAT_PROTOCOL_HPP

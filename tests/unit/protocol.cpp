#include "sockpat/protocol.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

TEST_SUITE("protocol") {
TEST_CASE("the protocol tags satisfy the concepts that describe them, and no others") {
  static_assert(sockpat::StreamProtocol<sockpat::Tcp> && !sockpat::DatagramProtocol<sockpat::Tcp>);
  static_assert(sockpat::DatagramProtocol<sockpat::Udp> && !sockpat::StreamProtocol<sockpat::Udp>);
  static_assert(sockpat::StreamProtocol<sockpat::Unix> && sockpat::LocalProtocol<sockpat::Unix>);
  static_assert(sockpat::DatagramProtocol<sockpat::UnixDatagram> && sockpat::LocalProtocol<sockpat::UnixDatagram>);
  static_assert(sockpat::InternetProtocol<sockpat::Tcp> && sockpat::InternetProtocol<sockpat::Udp>);
  static_assert(!sockpat::Protocol<int>);
  CHECK(sockpat::Tcp::type == sockpat::detail::SocketType::stream);
  CHECK(sockpat::Udp::type == sockpat::detail::SocketType::datagram);
}
}

#include "sockpat/endpoint.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <cstddef>  // offsetof
#include <stdexcept>
#include <string>
#include <unordered_set>

using sockpat::Endpoint;

TEST_SUITE("endpoint" * doctest::timeout(60)) {
TEST_CASE("an IPv4 endpoint from a host and a port") {
  const Endpoint e("127.0.0.1", 80);
  CHECK(e.is_v4());
  CHECK(e.family() == sockpat::Family::ipv4);
  CHECK(e.port() == 80);
  CHECK(e.host() == "127.0.0.1");
  CHECK(e.to_string() == "127.0.0.1:80");
}

TEST_CASE("an IPv6 endpoint is written with brackets") {
  const Endpoint e("::1", 443);
  CHECK(e.is_v6());
  CHECK(e.host() == "::1");
  CHECK(e.to_string() == "[::1]:443");
}

TEST_CASE("to_string round-trips through parse for v4, v6, Unix and abstract endpoints") {
  for (const char* text : {"127.0.0.1:80", "0.0.0.0:0", "255.255.255.255:65535", "[::1]:80", "[::]:1",
                           "[2001:db8::1]:8443", "[fe80::1%1]:9", "[::ffff:127.0.0.1]:22", "unix:/tmp/x.sock",
                           "unix:relative/path",
#if defined(__linux__)
                           "unix:@abstract-name"
#endif
                           }) {
    CAPTURE(text);
    const auto e = Endpoint::parse(text);
    CHECK(e.to_string() == text);
    CHECK(Endpoint::parse(e.to_string()) == e);
  }
}

TEST_CASE("an unnamed Unix-domain address is written unix:(unnamed), not unix:") {
  // What getsockname gives for a socketpair end or an unbound client: the family and no path.
  const auto named = Endpoint::unix_path("/tmp/x.sock");
  const auto unnamed = Endpoint::from_native(&named.raw().storage, offsetof(sockpat::detail::unix_address, sun_path));
  CHECK(unnamed.is_unix());
  CHECK(unnamed.path().empty());
  CHECK(unnamed.to_string() == "unix:(unnamed)");
}

TEST_CASE("a host and port in a message: an IPv6 literal in brackets, as to_string writes it") {
  CHECK(sockpat::detail::host_port("2001:db8::1", 9) == "[2001:db8::1]:9");
  CHECK(sockpat::detail::host_port("2001:db8::1", 9) == Endpoint("2001:db8::1", 9).to_string());
  CHECK(sockpat::detail::host_port("fe80::1%1", 80) == "[fe80::1%1]:80");
  CHECK(sockpat::detail::host_port("127.0.0.1", 80) == "127.0.0.1:80");
  CHECK(sockpat::detail::host_port("example.com", 443) == "example.com:443");
}

TEST_CASE("parse reads the parts of each form") {
  const auto v4 = Endpoint::parse("10.1.2.3:4567");
  CHECK(v4 == Endpoint("10.1.2.3", 4567));
  const auto v6 = Endpoint::parse("[::1]:80");
  CHECK(v6 == Endpoint("::1", 80));
  const auto un = Endpoint::parse("unix:/run/app.sock");
  CHECK(un.is_unix());
  CHECK_FALSE(un.is_abstract());
  CHECK(un.path() == "/run/app.sock");
#if defined(__linux__)
  const auto abs = Endpoint::parse("unix:@name");
  CHECK(abs.is_unix());
  CHECK(abs.is_abstract());
  CHECK(abs.path() == "name");
  CHECK(abs != Endpoint::unix_path("name"));
#else
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("unix:@name"), doctest::Contains("only on Linux"), std::invalid_argument);
#endif
}

TEST_CASE("bad ports are rejected with a message that quotes the input") {
  CHECK_THROWS_WITH_AS(Endpoint("127.0.0.1", 70000), doctest::Contains("70000"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Endpoint("127.0.0.1", -1), doctest::Contains("-1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("127.0.0.1:70000"), doctest::Contains("\"127.0.0.1:70000\""),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("127.0.0.1:"), doctest::Contains("\"127.0.0.1:\""), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("127.0.0.1:8x"), doctest::Contains("\"127.0.0.1:8x\""), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("127.0.0.1:+80"), doctest::Contains("port"), std::invalid_argument);
}

TEST_CASE("malformed hosts are rejected with a message that quotes the input") {
  CHECK_THROWS_WITH_AS(Endpoint("1.2.3", 80), doctest::Contains("\"1.2.3\""), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Endpoint("256.1.1.1", 80), doctest::Contains("\"256.1.1.1\""), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("1.2.3:80"), doctest::Contains("\"1.2.3:80\""), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("::1:80"), doctest::Contains("brackets"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("[::1:80"), doctest::Contains("]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("[::1]80"), doctest::Contains("\"[::1]80\""), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("[127.0.0.1]:80"), doctest::Contains("IPv6"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("no-port-here"), doctest::Contains("\"no-port-here\""), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse(""), doctest::Contains("\"\""), std::invalid_argument);
}

TEST_CASE("an empty host is rejected") {
  CHECK_THROWS_WITH_AS(Endpoint("", 80), doctest::Contains("empty host"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse(":80"), doctest::Contains("empty host"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("[]:80"), doctest::Contains("empty host"), std::invalid_argument);
}

TEST_CASE("a host name where a numeric address is needed points the user at resolve()") {
  CHECK_THROWS_WITH_AS(Endpoint("localhost", 80), doctest::Contains("\"localhost\" is not a numeric"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(Endpoint("localhost", 80), doctest::Contains("sockpat::resolve()"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Endpoint("db.internal", 5432), doctest::Contains("sockpat::resolve()"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("localhost:80"), doctest::Contains("sockpat::resolve()"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("localhost:80"), doctest::Contains("\"localhost:80\""),
                       std::invalid_argument);
}

TEST_CASE("an over-long Unix path is rejected, and the longest one that fits is kept whole") {
  const std::string longest(107, 'a');
  CHECK(Endpoint::unix_path(longest).path() == longest);
  const std::string too_long(108, 'a');
  CHECK_THROWS_WITH_AS((void)Endpoint::unix_path(too_long), doctest::Contains(too_long.c_str()), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)Endpoint::parse("unix:" + too_long), doctest::Contains("too long"), std::invalid_argument);
  CHECK_THROWS_AS((void)Endpoint::parse("unix:"), std::invalid_argument);
  CHECK_THROWS_AS((void)Endpoint::unix_path(std::string("a\0b", 3)), std::invalid_argument);
}

TEST_CASE("equality compares family, address and port") {
  CHECK(Endpoint("127.0.0.1", 80) == Endpoint("127.0.0.1", 80));
  CHECK(Endpoint("127.0.0.1", 80) != Endpoint("127.0.0.1", 81));
  CHECK(Endpoint("127.0.0.1", 80) != Endpoint("127.0.0.2", 80));
  CHECK(Endpoint("::1", 80) != Endpoint("127.0.0.1", 80));
  CHECK(Endpoint::unix_path("/a") == Endpoint::parse("unix:/a"));
  CHECK(Endpoint() == Endpoint());
  CHECK(Endpoint().empty());
}

TEST_CASE("endpoints hash consistently with equality") {
  std::unordered_set<Endpoint> set;
  set.insert(Endpoint("127.0.0.1", 80));
  set.insert(Endpoint::parse("127.0.0.1:80"));
  set.insert(Endpoint("::1", 80));
  set.insert(Endpoint::unix_path("/tmp/s"));
  set.insert(Endpoint::parse("unix:/tmp/s"));
  CHECK(set.size() == 3);
  CHECK(set.count(Endpoint("127.0.0.1", 80)) == 1);
}

TEST_CASE("with_port changes the port only, and checks it") {
  const auto e = Endpoint("::1", 1).with_port(2);
  CHECK(e == Endpoint("::1", 2));
  CHECK_THROWS_AS((void)e.with_port(65536), std::invalid_argument);
}

TEST_CASE("any() is the wildcard address of a family") {
  CHECK(Endpoint::any(sockpat::Family::ipv4, 5).to_string() == "0.0.0.0:5");
  CHECK(Endpoint::any(sockpat::Family::ipv6, 5).to_string() == "[::]:5");
}

TEST_CASE("resolve returns numeric hosts as they are") {
  const auto v4 = sockpat::resolve("127.0.0.1", 99);
  REQUIRE(v4.size() == 1);
  CHECK(v4[0] == Endpoint("127.0.0.1", 99));
  const auto v6 = sockpat::resolve("::1", 99);
  REQUIRE(v6.size() == 1);
  CHECK(v6[0] == Endpoint("::1", 99));
}

TEST_CASE("resolve turns localhost into loopback addresses") {
  const auto all = sockpat::resolve("localhost", 8);
  REQUIRE_FALSE(all.empty());
  for (const auto& e : all) {
    CAPTURE(e.to_string());
    CHECK(e.port() == 8);
    CHECK((e.host().rfind("127.", 0) == 0 || e.host() == "::1"));
  }
  const auto v4 = sockpat::resolve("localhost", 8, sockpat::Family::ipv4);
  REQUIRE_FALSE(v4.empty());
  CHECK(v4[0].is_v4());
}

TEST_CASE("resolve reports bad input and unknown names") {
  CHECK_THROWS_WITH_AS((void)sockpat::resolve("", 80), doctest::Contains("empty host"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)sockpat::resolve("localhost", 70000), doctest::Contains("70000"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)sockpat::resolve("no-such-host.invalid", 80), doctest::Contains("no-such-host.invalid"),
                       std::system_error);
  CHECK_THROWS_WITH_AS((void)sockpat::resolve("1.2.3", 80), doctest::Contains("\"1.2.3\""), std::invalid_argument);
  CHECK_THROWS_AS((void)sockpat::resolve("127.1", 80), std::invalid_argument);
  std::error_code ec;
  CHECK(sockpat::resolve("1.2.3", 80, ec).empty());
  CHECK(ec == std::errc::invalid_argument);
  CHECK(sockpat::resolve("no-such-host.invalid", 80, ec).empty());
  CHECK(ec);
  CHECK(sockpat::resolve("", 80, ec).empty());
  CHECK(ec == std::errc::invalid_argument);
}
}

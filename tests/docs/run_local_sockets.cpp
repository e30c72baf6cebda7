// Runs the snippets of docs/guides/local-sockets.md marked `<!-- snippet: run NAME -->`: the
// guide's code as a user pastes it, on a path in the temporary directory or an abstract name of
// this process's own. The header is made from the guide at build time
// (tests/docs/check_snippets.py --emit). Each snippet reads what it sent (a read that gets
// nothing throws timed_out), and the tests check what the guide says around it.
#include "local-sockets.snippets.hpp"

#include <doctest/doctest.h>

#include "support/loopback.hpp"  // test::TempSocketPath, test::unix_sockets_supported, test::process_id

#include <filesystem>    // std::filesystem::exists
#include <string>        // std::string
#include <system_error>  // std::system_error

using namespace std::chrono_literals;

TEST_SUITE("docs: local sockets guide") {
TEST_CASE("'A stream on a path': hello goes through; the file stays, and the next run removes it before binding" *
          doctest::timeout(30)) {
  test::TempSocketPath path("docs-path");
#if defined(_WIN32)
  if (!test::unix_sockets_supported()) {  // Windows before 10 1803, Wine 8: the guide's clear error
    CHECK_THROWS_AS(snippet_path::snippet(path.path()), std::system_error);
    return;
  }
#endif
  snippet_path::snippet(path.path());
  CHECK(std::filesystem::exists(path.path()));  // "The socket file stays after the listener closes"
  std::error_code ec;
  auto stale = sockpat::UnixListener::bind(sockpat::Endpoint::unix_path(path.path()), {}, ec);
  CHECK(ec == std::errc::address_in_use);  // "a second bind to it fails"
  snippet_path::snippet(path.path());      // the snippet's remove() makes a second run work
}

#if defined(__linux__)
TEST_CASE("'Abstract names (Linux)': the client connects by the parsed name, and the name is gone after" *
          doctest::timeout(30)) {
  const std::string name = "sockpat-docs-" + std::to_string(test::process_id());
  snippet_abstract::snippet(name);
  // "gone when the last socket bound to it closes": it binds again at once.
  auto again = sockpat::UnixListener::bind(sockpat::Endpoint::unix_abstract(name));
  CHECK(again.local_endpoint().to_string() == "unix:@" + name);
}

TEST_CASE("'Datagrams': the status datagram reaches the server, whose answer goes back to the client's name" *
          doctest::timeout(30)) {
  snippet_datagrams::snippet("sockpat-docs-dgram-" + std::to_string(test::process_id()));
}
#endif

TEST_CASE("'A connected pair': ping goes from one end to the other" * doctest::timeout(30)) {
#if defined(_WIN32)
  CHECK_THROWS_AS(snippet_pair::snippet(), std::system_error);  // no socketpair: the guide's Windows note
#else
  snippet_pair::snippet();
#endif
}
}

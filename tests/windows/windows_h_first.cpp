// Windows-only: a user who includes <windows.h> first, in full (no WIN32_LEAN_AND_MEAN, no
// NOMINMAX), so that it brings the old <winsock.h> and the min/max macros, still compiles and
// runs sockpat. MinGW-w64's <winsock2.h> copes (with a warning of its own, which this file's
// target silences); MSVC cannot, and sockpat stops there with an #error saying what to do.
#include <windows.h>

// MSVC's <windows.h> defines min and max as function-like macros unless NOMINMAX; MinGW's does
// only for C. This file plays MSVC's part so that the test means the same on both: sockpat must
// never write max( or min( where the macro could expand. The standard headers come first, as
// MSVC's STL guards itself against these macros and libstdc++ does not.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <climits>
#include <concepts>
#include <cerrno>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>
#if !defined(min)
#define min(a, b) (((a) < (b)) ? (a) : (b))
#endif
#if !defined(max)
#define max(a, b) (((a) > (b)) ? (a) : (b))
#endif

#include "sockpat.hpp"

#if !defined(min) || !defined(max)
#error "the user's min and max macros must survive sockpat"
#endif

#include <doctest/doctest.h>

using namespace std::chrono_literals;

TEST_CASE("sockpat works after a full <windows.h> whose min/max macros are still in force") {
  auto listener = sockpat::TcpListener::bind({"127.0.0.1", 0});
  auto client = sockpat::TcpConnection::connect(listener.local_endpoint(), 5s);
  auto server = listener.accept(5s);
  client.write_all("windows.h first", 5s);
  std::string got(15, '\0');
  server.read_exactly(got, 5s);
  CHECK(got == "windows.h first");
  CHECK(min(3, 4) == 3);  // the user's macro
}

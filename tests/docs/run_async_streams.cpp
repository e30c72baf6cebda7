// Runs the snippets of docs/guides/async-streams.md marked `<!-- snippet: run NAME -->` against a
// real peer on loopback: the guide's code as a user pastes it, not a copy of it. The header is
// made from the guide at build time (tests/docs/check_snippets.py --emit).
#include "async-streams.snippets.hpp"

#include <doctest/doctest.h>

#include <chrono>        // std::chrono_literals
#include <optional>      // std::optional
#include <stop_token>    // std::stop_source
#include <string>        // std::string
#include <system_error>  // std::system_error
#include <vector>        // std::vector

using namespace std::chrono_literals;

namespace {

// The fan-out snippet is the body of a handler: it gets the connection's writer and reader.
sockpat::Task<void> fan_out_handler(sockpat::StreamReader reader, sockpat::StreamWriter writer) {
  co_await snippet_fan_out::snippet(writer, reader);
}

// The goodbye snippet is a handler's body too.
sockpat::Task<void> goodbye_handler(sockpat::StreamReader reader, sockpat::StreamWriter writer) {
  co_await snippet_goodbye::snippet(reader, writer);
}

int as_result_ended = 0;                       // handlers that returned (no exception) after the peer went
sockpat::Event* both_ended = nullptr;          // set when the second one has
sockpat::Task<void> as_result_handler(sockpat::StreamReader reader, sockpat::StreamWriter writer) {
  co_await writer.write("ready\n");
  co_await snippet_as_result::snippet(reader);
  if (++as_result_ended == 2) both_ended->set();
}

// Answers the combinators snippet's reader: a line at once, and a second only once asked.
sockpat::Task<void> two_lines_handler(sockpat::StreamReader reader, sockpat::StreamWriter writer) {
  co_await writer.write("hello\n");
  auto asked = co_await reader.read_line();
  if (asked) co_await writer.write("after\n");
  co_await writer.drain();
}

int cancelled_fetches = 0;
sockpat::Task<int> fetch(std::chrono::milliseconds d, int v) {
  try {
    co_await sockpat::sleep(d);
  } catch (const std::system_error& e) {
    if (e.code() == std::errc::operation_canceled) ++cancelled_fetches;
    throw;
  }
  co_return v;
}

template <class F>
void on_loop(F body) {
  sockpat::EventLoop loop;
  loop.run_until_complete(body());
}

}  // namespace

TEST_SUITE("docs: async-streams guide") {
TEST_CASE("'Tasks and the loop' runs: answer() is 42 and main_task ends, its detached task with it" *
          doctest::timeout(30)) {
  CHECK(sockpat::run(snippet_tasks_and_loop::answer()) == 42);
  snippet_tasks_and_loop::snippet();  // sockpat::run(main_task()), as the guide writes it
}

TEST_CASE("'A server': the echo handler echoes every line and closes after the client's end" *
          doctest::timeout(30)) {
  on_loop([]() -> sockpat::Task<void> {
    auto server = co_await sockpat::start_server(snippet_server::echo, "127.0.0.1", 0);
    auto [reader, writer] = co_await sockpat::open_connection("127.0.0.1", server.local_endpoint().port(), 5s);
    std::string sent;
    for (int i = 0; i < 100; ++i) sent += "line " + std::to_string(i) + "\n";
    co_await writer.write(sent);
    writer.write_eof();
    std::string echoed;
    for (;;) {
      auto chunk = co_await reader.read(65536);
      if (chunk.empty()) break;
      echoed += chunk;
    }
    CHECK(echoed == sent);
    server.close();
    co_await server.wait_closed();
    CHECK(server.stats().handler_errors == 0);
  });
}

TEST_CASE("'A server': serve() keeps serving until it is stopped from outside" * doctest::timeout(30)) {
  on_loop([]() -> sockpat::Task<void> {
    std::stop_source stop;
    auto served = co_await sockpat::as_result(sockpat::wait_for(snippet_server::serve(stop.get_token()), 200ms));
    REQUIRE_FALSE(served);
    CHECK(served.error() == std::errc::timed_out);
  });
}

TEST_CASE("'as_result': a handler reading with as_result returns normally when the peer closes or resets" *
          doctest::timeout(30)) {
  on_loop([]() -> sockpat::Task<void> {
    as_result_ended = 0;
    sockpat::Event ended;
    both_ended = &ended;
    auto server = co_await sockpat::start_server(as_result_handler, "127.0.0.1", 0);
    const auto port = server.local_endpoint().port();
    {
      auto [reader, writer] = co_await sockpat::open_connection("127.0.0.1", port, 5s);
      CHECK(co_await reader.read_line() == "ready\n");
      writer.close();  // a clean end: "the peer closed"
      co_await writer.wait_closed();
    }
    {
      auto [reader, writer] = co_await sockpat::open_connection("127.0.0.1", port, 5s);
      CHECK(co_await reader.read_line() == "ready\n");
      writer.abort();  // a reset: "gone: ..."
    }
    co_await sockpat::wait_for(ended.wait(), 10s);  // before close(), which would cancel them
    CHECK(as_result_ended == 2);
    server.close();
    co_await server.wait_closed();
    CHECK(server.stats().handler_errors == 0);
  });
}

TEST_CASE("'Task groups, queues and events': the fan-out handler sends back every line, then ends with the client" *
          doctest::timeout(30)) {
  on_loop([]() -> sockpat::Task<void> {
    auto server = co_await sockpat::start_server(fan_out_handler, "127.0.0.1", 0);
    auto [reader, writer] = co_await sockpat::open_connection("127.0.0.1", server.local_endpoint().port(), 5s);
    for (int i = 0; i < 200; ++i) {
      const std::string line = "message " + std::to_string(i) + "\n";
      co_await writer.write(line);
      CHECK(co_await reader.read_line() == line);  // through the queue and the writer task
    }
    writer.write_eof();
    CHECK(co_await reader.read(100) == "");  // the handler ended: the server closed the connection
    server.close();
    co_await server.wait_closed();
    CHECK(server.stats().handler_errors == 0);
  });
}

TEST_CASE("'Combinators': gather of different types and of a brace list gives every value" * doctest::timeout(30)) {
  on_loop([]() -> sockpat::Task<void> { CHECK(co_await snippet_combinators::combine() == 1 + 2 + 3); });
}

TEST_CASE("'Combinators': read_or_stop returns the line that came first, or 'stopped', and the cancelled read "
          "loses nothing" * doctest::timeout(30)) {
  on_loop([]() -> sockpat::Task<void> {
    auto server = co_await sockpat::start_server(two_lines_handler, "127.0.0.1", 0);
    auto [reader, writer] = co_await sockpat::open_connection("127.0.0.1", server.local_endpoint().port(), 5s);
    sockpat::Event stop;
    CHECK(co_await snippet_combinators::read_or_stop(reader, stop) == "hello\n");
    stop.set();  // the server sends nothing more until asked: the stop wins
    CHECK(co_await snippet_combinators::read_or_stop(reader, stop) == "stopped");
    co_await writer.write("more\n");
    CHECK(co_await reader.read_line(5s) == "after\n");
    writer.close();
    co_await writer.wait_closed();
    server.close();
    co_await server.wait_closed();
    CHECK(server.stats().handler_errors == 0);
  });
}

TEST_CASE("'Combinators': ready_in_time keeps the values ready at the deadline and cancels the rest" *
          doctest::timeout(30)) {
  on_loop([]() -> sockpat::Task<void> {
    cancelled_fetches = 0;
    std::vector<sockpat::Task<int>> fetches;
    fetches.push_back(fetch(1ms, 1));
    fetches.push_back(fetch(1h, 2));
    fetches.push_back(fetch(2ms, 3));
    fetches.push_back(fetch(1h, 4));
    const auto ready = co_await snippet_wait_deadline::ready_in_time(std::move(fetches));
    CHECK(ready == std::vector<int>{1, 3});
    CHECK(cancelled_fetches == 2);  // and had ended: the group joined them
  });
}

TEST_CASE("'Cancellation': a handler cancelled by the server's close still sends its goodbye, then the connection ends" *
          doctest::timeout(30)) {
  on_loop([]() -> sockpat::Task<void> {
    auto server = co_await sockpat::start_server(goodbye_handler, "127.0.0.1", 0);
    auto [reader, writer] = co_await sockpat::open_connection("127.0.0.1", server.local_endpoint().port(), 5s);
    co_await writer.write("hello\n");
    CHECK(co_await sockpat::wait_for(reader.read_line(), 5s) == "hello\n");
    server.close();  // cancels the handler, which waits for the next line
    CHECK(co_await sockpat::wait_for(reader.read_line(), 5s) == "bye\n");
    CHECK(co_await sockpat::wait_for(reader.read(100), 5s) == "");
    co_await sockpat::wait_for(server.wait_closed(), 5s);
    CHECK(server.stats().handler_errors == 0);
  });
}
}

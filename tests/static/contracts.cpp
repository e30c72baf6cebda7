// static_asserts only: the move-only and noexcept contracts, and misuse that must not compile.
#include "sockpat.hpp"

#include <cstddef>
#include <memory>  // std::unique_ptr: a move-only handler
#include <span>
#include <stop_token>
#include <string>
#include <type_traits>
#include <vector>  // std::vector: gather
#include <chrono>  // std::chrono::seconds: wait_for

namespace {

template <class T>
constexpr bool move_only_nothrow = !std::is_copy_constructible_v<T> && !std::is_copy_assignable_v<T> &&
                                   std::is_nothrow_move_constructible_v<T> && std::is_nothrow_move_assignable_v<T>;

static_assert(move_only_nothrow<sockpat::detail::UniqueHandle>);
static_assert(move_only_nothrow<sockpat::TcpSocket>);
static_assert(move_only_nothrow<sockpat::UdpSocket>);
static_assert(move_only_nothrow<sockpat::TcpConnection>);
static_assert(move_only_nothrow<sockpat::UnixConnection>);
static_assert(move_only_nothrow<sockpat::TcpListener>);
static_assert(move_only_nothrow<sockpat::UnixListener>);
static_assert(std::is_nothrow_default_constructible_v<sockpat::TcpConnection>);
static_assert(std::is_nothrow_destructible_v<sockpat::TcpConnection>);
static_assert(!std::is_copy_constructible_v<sockpat::SignalStop>);

// Endpoint is a value: copyable, comparable, hashable.
static_assert(std::is_nothrow_copy_constructible_v<sockpat::Endpoint>);
static_assert(std::is_invocable_r_v<std::size_t, std::hash<sockpat::Endpoint>, const sockpat::Endpoint&>);

// The error_code& twins never throw.
static_assert(noexcept(std::declval<sockpat::TcpConnection&>().read_some(
    std::declval<std::span<std::byte>>(), sockpat::Deadline{}, std::declval<std::error_code&>())));
static_assert(noexcept(std::declval<sockpat::TcpConnection&>().write_all(
    std::declval<std::span<const std::byte>>(), sockpat::Deadline{}, std::declval<std::error_code&>())));
static_assert(noexcept(std::declval<sockpat::TcpListener&>().accept(sockpat::Deadline{},
                                                                    std::declval<std::error_code&>())));
static_assert(noexcept(sockpat::TcpConnection::connect(std::declval<const sockpat::Endpoint&>(),
                                                       sockpat::ConnectOptions{}, std::declval<std::error_code&>())));

// Datagram calls do not exist on stream sockets, and stream calls not on datagram ones.
template <class S>
concept can_send_to = requires(S s, std::span<const std::byte> b, sockpat::Endpoint e) { s.send_to(b, e); };
template <class S>
concept can_receive_from = requires(S s, std::span<std::byte> b, sockpat::Endpoint e) { s.receive_from(b, e); };
static_assert(can_send_to<sockpat::UdpSocket> && can_send_to<sockpat::UnixDatagramSocket>);
static_assert(!can_send_to<sockpat::TcpSocket> && !can_send_to<sockpat::UnixSocket>);
static_assert(can_receive_from<sockpat::UdpSocket> && !can_receive_from<sockpat::TcpSocket>);

template <class S>
concept can_set_no_delay = requires(S s) { s.set_no_delay(true); };
static_assert(can_set_no_delay<sockpat::TcpSocket> && can_set_no_delay<sockpat::TcpConnection>);
static_assert(!can_set_no_delay<sockpat::UdpSocket> && !can_set_no_delay<sockpat::UnixConnection>);

template <class S>
concept can_set_broadcast = requires(S s) { s.set_broadcast(true); };
static_assert(can_set_broadcast<sockpat::UdpSocket> && !can_set_broadcast<sockpat::TcpSocket>);

// A listener or a connection of a datagram protocol is rejected.
template <class P>
concept listener_exists = requires { typename sockpat::Listener<P>; };
template <class P>
concept connection_exists = requires { typename sockpat::Connection<P>; };
static_assert(listener_exists<sockpat::Tcp> && listener_exists<sockpat::Unix>);
static_assert(!listener_exists<sockpat::Udp> && !listener_exists<sockpat::UnixDatagram>);
static_assert(!connection_exists<sockpat::Udp>);

// Host names are for IP protocols; socket pairs for local ones.
template <class C>
concept can_connect_by_name = requires { C::connect("localhost", 1); };
static_assert(can_connect_by_name<sockpat::TcpConnection> && !can_connect_by_name<sockpat::UnixConnection>);
template <class C>
concept can_pair = requires { C::pair(); };
static_assert(can_pair<sockpat::UnixConnection> && !can_pair<sockpat::TcpConnection>);

// A Connection is not a Socket to its users: bind() is not reachable on it.
template <class C>
concept can_bind = requires(C c, sockpat::Endpoint e) { c.bind(e); };
static_assert(can_bind<sockpat::TcpSocket> && !can_bind<sockpat::TcpConnection>);

// A Server owns threads that point at it: neither copied nor moved. One for datagrams does not exist.
static_assert(!std::is_copy_constructible_v<sockpat::TcpServer> && !std::is_move_constructible_v<sockpat::TcpServer>);
template <class P>
concept server_exists = requires { typename sockpat::Server<P>; };
static_assert(server_exists<sockpat::Tcp> && server_exists<sockpat::Unix> && !server_exists<sockpat::Udp>);
// A handler takes the connection (and perhaps the stop token); anything else is rejected.
template <class H>
concept server_handler = std::is_constructible_v<sockpat::TcpServer, sockpat::TcpListener, H>;
static_assert(server_handler<void (*)(sockpat::TcpConnection&)>);
static_assert(server_handler<void (*)(sockpat::TcpConnection&, std::stop_token)>);
static_assert(!server_handler<void (*)(int)> && !server_handler<void (*)(sockpat::UnixConnection&)>);
// A handler may be move-only (it owns what it uses): the server keeps it in a move-only wrapper.
struct MoveOnlyHandler {
  std::unique_ptr<int> owned;
  void operator()(sockpat::TcpConnection&, std::stop_token) {}
};
static_assert(move_only_nothrow<sockpat::TcpServer::Handler>);
static_assert(std::is_constructible_v<sockpat::TcpServer::Handler, MoveOnlyHandler>);
static_assert(server_handler<MoveOnlyHandler> && std::is_constructible_v<sockpat::TcpServer, const char*, int, MoveOnlyHandler>);
static_assert(!std::is_constructible_v<sockpat::UnixServer, const char*, int, void (*)(sockpat::UnixConnection&)>);

// The framings satisfy the concept that decoders and framed connections take.
static_assert(sockpat::Framing<sockpat::DelimiterFraming> && sockpat::Framing<sockpat::LengthPrefixFraming>);
static_assert(!sockpat::Framing<int> && !sockpat::Framing<std::string>);
static_assert(std::is_nothrow_move_constructible_v<sockpat::LineDecoder>);

// The framed error_code& twins never throw.
using Framed = sockpat::FramedConnection<sockpat::Tcp>;
static_assert(noexcept(std::declval<Framed&>().read_line(sockpat::Deadline{}, std::declval<std::error_code&>())));
// One name, one shape: read_frame always names its framing, as StreamReader's does.
template <class C>
concept reads_implicit_frames = requires(C& c) { c.read_frame(sockpat::Deadline{}); };
static_assert(!reads_implicit_frames<Framed>);
static_assert(noexcept(std::declval<Framed&>().read_until("\n", sockpat::Deadline{}, std::declval<std::error_code&>())));
static_assert(noexcept(std::declval<Framed&>().read_frame(std::declval<const sockpat::LengthPrefixFraming&>(), sockpat::Deadline{},
                                                           std::declval<std::error_code&>())));
static_assert(noexcept(std::declval<Framed&>().write_frame(std::declval<const sockpat::LengthPrefixFraming&>(), "x", sockpat::Deadline{},
                                                            std::declval<std::error_code&>())));
static_assert(noexcept(sockpat::connect_with_retry<sockpat::Tcp>(std::declval<const sockpat::Endpoint&>(), sockpat::Deadline{},
                                                                 std::declval<const sockpat::RetryOptions&>(), std::declval<std::error_code&>())));

// The event-loop layer: tasks and streams are move-only; the loop is neither copied nor moved.
static_assert(move_only_nothrow<sockpat::Task<int>> && move_only_nothrow<sockpat::Task<void>>);

// wait_for and as_result cannot own an I/O awaiter (it does not move): they borrow it, and what
// they return is awaitable only as the temporary of its own co_await expression. Kept in a
// variable and awaited later, it would refer to a read that has gone, so that must not compile.
// (co_await cannot appear in a requires-expression: these look for the member it would call.)
template <class A>
concept awaitable_as_lvalue = requires(A& a) { a.operator co_await(); } || requires(A& a) { a.await_ready(); };
template <class A>
concept awaitable_as_rvalue = requires(A&& a) { static_cast<A&&>(a).operator co_await(); } ||
                              requires(A& a) { a.await_ready(); };
using ChunkRead = decltype(std::declval<sockpat::StreamReader&>().read_chunk());
using SomeRead = decltype(std::declval<sockpat::TcpConnection&>().async_read_some(std::declval<std::span<std::byte>>()));
static_assert(!std::is_move_constructible_v<ChunkRead> && !std::is_move_constructible_v<SomeRead>);
using TimedChunk = decltype(sockpat::wait_for(std::declval<ChunkRead>(), std::chrono::seconds(1)));
using TimedRead = decltype(sockpat::wait_for(std::declval<SomeRead>(), std::chrono::seconds(1)));
using CheckedChunk = decltype(sockpat::as_result(std::declval<ChunkRead>()));
using CheckedRead = decltype(sockpat::as_result(std::declval<SomeRead>()));
static_assert(awaitable_as_rvalue<TimedChunk> && !awaitable_as_lvalue<TimedChunk>);
static_assert(awaitable_as_rvalue<TimedRead> && !awaitable_as_lvalue<TimedRead>);
static_assert(awaitable_as_rvalue<CheckedChunk> && !awaitable_as_lvalue<CheckedChunk>);
static_assert(awaitable_as_rvalue<CheckedRead> && !awaitable_as_lvalue<CheckedRead>);
// Nor can it be moved somewhere that outlives the expression.
static_assert(!std::is_move_constructible_v<TimedChunk> && !std::is_move_constructible_v<CheckedChunk>);
// What they own (a task, a gather) may be kept and awaited later, as before.
using TimedTask = decltype(sockpat::wait_for(std::declval<sockpat::Task<int>>(), std::chrono::seconds(1)));
static_assert(awaitable_as_lvalue<TimedTask>);
using TimedGather = decltype(sockpat::wait_for(sockpat::gather(std::declval<std::vector<sockpat::Task<int>>>()),
                                               std::chrono::seconds(1)));
static_assert(awaitable_as_lvalue<TimedGather>);
// Nested: the outer wait_for borrows the inner one in the same way.
using TwiceTimed = decltype(sockpat::wait_for(std::declval<TimedChunk>(), std::chrono::seconds(2)));
static_assert(awaitable_as_rvalue<TwiceTimed> && !awaitable_as_lvalue<TwiceTimed>);
static_assert(!std::is_copy_constructible_v<sockpat::EventLoop> && !std::is_move_constructible_v<sockpat::EventLoop>);
// A TaskGroup exists only as the argument of with_task_group's body, which joins it whatever way
// the body ends (trio's nursery): `sockpat::TaskGroup g;` does not compile, so no group is left
// unjoined with its children running on; nor is it copied or moved out of the body, or joined
// from inside (a child that joined its own group would wait for itself).
template <class G>
concept joinable = requires(G& g) { g.join(); };
static_assert(!std::is_default_constructible_v<sockpat::TaskGroup>);
static_assert(!std::is_copy_constructible_v<sockpat::TaskGroup> && !std::is_move_constructible_v<sockpat::TaskGroup>);
static_assert(!joinable<sockpat::TaskGroup>);
template <class F>
concept group_body = requires(F f) { sockpat::with_task_group(f); };
static_assert(group_body<sockpat::Task<void> (*)(sockpat::TaskGroup&)> && group_body<sockpat::Task<int> (*)(sockpat::TaskGroup&)>);
static_assert(!group_body<void (*)(sockpat::TaskGroup&)> && !group_body<sockpat::Task<void> (*)()>);
static_assert(move_only_nothrow<sockpat::StreamWriter> && move_only_nothrow<sockpat::StreamServer>);

// The async_ members build their awaiters without throwing (errors surface when awaited).
static_assert(noexcept(std::declval<sockpat::TcpConnection&>().async_read_some(std::declval<std::span<std::byte>>())));
static_assert(noexcept(std::declval<sockpat::TcpConnection&>().async_write_all(std::declval<std::span<const std::byte>>())));
static_assert(noexcept(std::declval<sockpat::TcpListener&>().async_accept()));

// Datagram awaiters exist on datagram sockets only.
template <class S>
concept can_async_send_to = requires(S s, std::span<const std::byte> b, sockpat::Endpoint e) { s.async_send_to(b, e); };
static_assert(can_async_send_to<sockpat::UdpSocket> && !can_async_send_to<sockpat::TcpSocket>);

}  // namespace

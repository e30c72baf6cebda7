// http_keepalive_server: a tiny HTTP/1.1 keep-alive server on RequestServer: GET / and GET /hello,
// 404 otherwise. Run: http_keepalive_server [--host H] [--port P] [--threads N] [--idle-timeout S]
//
// Between requests a connection waits in the poller thread, so --threads N workers (default 4) serve
// any number of keep-alive clients; a client holds a worker only while its request is handled.
// A request is its head, up to the blank line ("\r\n\r\n", at most 8 KiB, else 431): GET only
// (405 for other methods), no request bodies (400). HTTP/1.1 keeps the connection unless the
// client says `Connection: close`; HTTP/1.0 closes it unless the client says `keep-alive`.
#include <cstdio>
#include <string>
#include <string_view>

#include "args.hpp"
#include "sockpat.hpp"

namespace {

constexpr std::size_t max_head = 8 * 1024;

bool equal_nocase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

/// Whether a comma-separated header value lists `token` (Connection: keep-alive, Upgrade).
bool lists(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const auto comma = value.find(',');
    if (equal_nocase(trim(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

void respond(sockpat::Request& r, std::string_view status, std::string_view body, bool keep_alive,
             std::string_view extra = {}) {
  std::string head = "HTTP/1.1 ";
  head += status;
  head += "\r\nServer: sockpat\r\nContent-Type: text/plain\r\nContent-Length: ";
  head += std::to_string(body.size());
  head += keep_alive ? "\r\nConnection: keep-alive\r\n" : "\r\nConnection: close\r\n";
  head += extra;
  head += "\r\n";
  r.reply(head);
  r.reply(body);
  if (!keep_alive) r.close();
}

/// One request head (without its blank line): the request line, then header lines.
void handle(sockpat::Request& r) {
  std::string_view head = r.data();
  const auto line_end = head.find("\r\n");
  const std::string_view line = head.substr(0, line_end);
  std::string_view headers = line_end == std::string_view::npos ? std::string_view{} : head.substr(line_end + 2);

  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    respond(r, "400 Bad Request", "bad request line\n", false);
    return;
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    respond(r, "505 HTTP Version Not Supported", "HTTP/1.0 and HTTP/1.1 only\n", false);
    return;
  }

  bool keep_alive = version == "HTTP/1.1";
  bool has_body = false;
  while (!headers.empty()) {
    const auto end = headers.find("\r\n");
    const std::string_view field = headers.substr(0, end);
    headers = end == std::string_view::npos ? std::string_view{} : headers.substr(end + 2);
    const auto colon = field.find(':');
    if (colon == std::string_view::npos) {
      respond(r, "400 Bad Request", "bad header line\n", false);
      return;
    }
    const std::string_view name = field.substr(0, colon);
    const std::string_view value = trim(field.substr(colon + 1));
    if (equal_nocase(name, "Connection")) {
      if (lists(value, "close")) keep_alive = false;
      if (lists(value, "keep-alive")) keep_alive = keep_alive || version == "HTTP/1.0";
    } else if (equal_nocase(name, "Transfer-Encoding") || (equal_nocase(name, "Content-Length") && value != "0")) {
      has_body = true;
    }
  }
  // Only heads are framed here: a body would be read as the next request, so none is accepted.
  if (has_body) {
    respond(r, "400 Bad Request", "request bodies are not accepted\n", false);
    return;
  }
  if (method != "GET") {
    respond(r, "405 Method Not Allowed", "GET only\n", keep_alive, "Allow: GET\r\n");
    return;
  }
  if (target == "/") {
    respond(r, "200 OK", "Hello from sockpat\n", keep_alive);
  } else if (target == "/hello") {
    respond(r, "200 OK", "hello, world\n", keep_alive);
  } else {
    respond(r, "404 Not Found", "not found\n", keep_alive);
  }
}

int serve(const example::Args& args) {
  sockpat::SignalStop signals;
  sockpat::RequestServerOptions options;
  options.threads = static_cast<std::size_t>(args.get_int("threads", 4, 1, 1024));
  options.max_connections = static_cast<std::size_t>(args.get_int("max-connections", 0, 0, 1'000'000));
  options.idle_timeout = std::chrono::seconds(args.get_int("idle-timeout", 15, 1, 86400));
  options.rejection =
      "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

  sockpat::RequestServer server(sockpat::TcpListener::bind(args.get("host", "127.0.0.1"), args.get_port()),
                                sockpat::DelimiterFraming("\r\n\r\n", max_head), handle, options);
  std::printf("listening on %s\n", server.local_endpoint().to_string().c_str());
  std::fflush(stdout);
  server.serve(signals.token());  // returns once SIGINT or SIGTERM stopped it
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"host", "port", "threads", "max-connections", "idle-timeout"},
                           "http_keepalive_server [--host HOST] [--port PORT] [--threads N] [--max-connections N] "
                           "[--idle-timeout SECONDS]");
  try {
    return serve(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "http_keepalive_server: %s\n", e.what());
    return 1;
  }
}

// sockpat_request_echo_server: RequestServer as the benchmark runs it: every --size bytes the
// client sends are one request, and the reply is those bytes. Run: sockpat_request_echo_server
// [--host H] [--port 0] [--size 64] [--threads N] [--batch-poller 1|0]
//
// The load generator sends messages of a fixed size and checks each echo, so the framing here is a
// user Framing of fixed-size frames: the request server's whole path (poller, framing, hand-off to
// a worker, reply, parking) per message, where the other echo servers just copy bytes.
#include <cstdio>        // std::printf
#include <string_view>   // std::string_view
#include <system_error>  // std::error_code

#include "args.hpp"
#include "sockpat.hpp"

namespace {

/// Frames of exactly `size` bytes.
class FixedFraming {
 public:
  explicit FixedFraming(std::size_t size) : size_(size) {}
  [[nodiscard]] sockpat::FrameScan scan(std::string_view data, std::size_t /*from*/ = 0) const noexcept {
    sockpat::FrameScan s;
    if (data.size() < size_) {
      s.need = size_ - data.size();
      return s;
    }
    s.status = sockpat::FrameScan::Status::complete;
    s.size = s.consumed = size_;
    return s;
  }
  [[nodiscard]] std::error_code encode(std::string_view payload, sockpat::FrameParts& parts) const noexcept {
    parts.prefix_size = 0;
    return payload.size() == size_ ? std::error_code{} : make_error_code(sockpat::errc::malformed_frame);
  }
  [[nodiscard]] std::size_t max_frame_size() const noexcept { return size_; }

 private:
  std::size_t size_;
};

int serve(const example::Args& args) {
  sockpat::SignalStop signals;
  sockpat::RequestServerOptions options;
  options.threads = static_cast<std::size_t>(args.get_int("threads", 1, 1, 1024));
  options.batch_poller = args.get_int("batch-poller", 1, 0, 1) != 0;  // 0: the comparison in bench/NOTES.md
  const auto size = static_cast<std::size_t>(args.get_int("size", 64, 1, 16 * 1024 * 1024));
  sockpat::RequestServer server(sockpat::TcpListener::bind(args.get("host", "127.0.0.1"), args.get_port()),
                                FixedFraming(size), [](sockpat::Request& r) { r.reply(r.data()); }, options);
  std::printf("listening on %s\n", server.local_endpoint().to_string().c_str());
  std::fflush(stdout);
  server.serve(signals.token());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const example::Args args(argc, argv, {}, {"host", "port", "threads", "size", "batch-poller"},
                           "sockpat_request_echo_server [--host HOST] [--port PORT] [--size BYTES] [--threads N] [--batch-poller 1|0]");
  try {
    return serve(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sockpat_request_echo_server: %s\n", e.what());
    return 1;
  }
}

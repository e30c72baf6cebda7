// sockpat: the one class that owns a native socket handle.
#ifndef SOCKPAT_DETAIL_UNIQUE_HANDLE_HPP
#define SOCKPAT_DETAIL_UNIQUE_HANDLE_HPP

#include <utility>  // std::exchange

#include "sockpat/detail/handle_observer.hpp"
#include "sockpat/detail/syscall.hpp"

namespace sockpat::detail {

/// Move-only owner of one native handle. The one class in sockpat that spells out the five;
/// everything above it follows the rule of zero.
class UniqueHandle {
 public:
  UniqueHandle() noexcept = default;
  explicit UniqueHandle(native_handle h) noexcept : h_(h) {}
  UniqueHandle(UniqueHandle&& o) noexcept : h_(std::exchange(o.h_, invalid_handle)) {}
  UniqueHandle& operator=(UniqueHandle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, invalid_handle);
    }
    return *this;
  }
  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;
  ~UniqueHandle() { reset(); }  // close errors are dropped here; Socket::close() reports them

  [[nodiscard]] native_handle get() const noexcept { return h_; }
  [[nodiscard]] bool valid() const noexcept { return h_ != invalid_handle; }
  [[nodiscard]] native_handle release() noexcept {
    if (valid()) notify_closing(h_, true);  // the event loop of this thread must forget it
    return std::exchange(h_, invalid_handle);
  }

  /// Closes the handle (if any) and reports what close said.
  std::error_code close() noexcept {
    if (!valid()) return {};
    // Before close: the event loop of this thread finishes the operations pending on it while
    // the number still names this socket.
    notify_closing(h_, false);
    return close_handle(std::exchange(h_, invalid_handle));
  }
  void reset() noexcept { (void)close(); }

 private:
  native_handle h_ = invalid_handle;
};

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_UNIQUE_HANDLE_HPP

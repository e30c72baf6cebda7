// sockpat: the hook through which an event loop learns that one of its descriptors is closing.
#ifndef SOCKPAT_DETAIL_HANDLE_OBSERVER_HPP
#define SOCKPAT_DETAIL_HANDLE_OBSERVER_HPP

#include "sockpat/detail/syscall.hpp"

namespace sockpat::detail {

/// Told before a handle is closed or released on this thread, so that the event loop of this
/// thread can finish the operations pending on it (operation_canceled) and forget it before
/// the descriptor number is reused.
class HandleObserver {
 public:
  virtual void handle_closing(native_handle h, bool released) noexcept = 0;

 protected:
  HandleObserver() = default;
  HandleObserver(const HandleObserver&) = default;
  HandleObserver& operator=(const HandleObserver&) = default;
  ~HandleObserver() = default;
};

/// The observer of the calling thread: its event loop, or null.
inline HandleObserver*& thread_handle_observer() noexcept {
  thread_local HandleObserver* observer = nullptr;
  return observer;
}

inline void notify_closing(native_handle h, bool released) noexcept {
  if (HandleObserver* o = thread_handle_observer()) o->handle_closing(h, released);
}

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_HANDLE_OBSERVER_HPP

// sockpat: a thread that does not preempt the others when it wakes (Linux: SCHED_BATCH), for the
// request server's poller. On one CPU the poller woke at every client's bytes and preempted the
// worker in the middle of its batch, two context switches for a request or two; as SCHED_BATCH it
// runs when the worker waits or its time slice ends, and takes every ready connection at once
// (bench/NOTES.md: 1.34x the round trips per second with poller and worker on one CPU).
#ifndef SOCKPAT_DETAIL_BATCH_THREAD_HPP
#define SOCKPAT_DETAIL_BATCH_THREAD_HPP

#include "sockpat/detail/os.hpp"

namespace sockpat::detail {

/// While alive, the calling thread is SCHED_BATCH; its policy comes back at the end. Only a thread
/// with the default policy is changed (a real-time or idle thread is the user's choice), and a
/// refusal (a seccomp filter, say) leaves it as it was. Elsewhere than Linux: nothing.
class BatchThread {
 public:
  explicit BatchThread(bool on) noexcept {
#if defined(SOCKPAT_LINUX) && defined(SCHED_BATCH)
    if (!on) return;
    int policy = 0;
    sched_param param{};
    if (::pthread_getschedparam(::pthread_self(), &policy, &param) != 0 || policy != SCHED_OTHER) return;
    changed_ = ::pthread_setschedparam(::pthread_self(), SCHED_BATCH, &param) == 0;
#else
    (void)on;
#endif
  }
  ~BatchThread() {
#if defined(SOCKPAT_LINUX) && defined(SCHED_BATCH)
    if (!changed_) return;
    sched_param param{};
    (void)::pthread_setschedparam(::pthread_self(), SCHED_OTHER, &param);
#endif
  }
  BatchThread(const BatchThread&) = delete;
  BatchThread& operator=(const BatchThread&) = delete;

 private:
  [[maybe_unused]] bool changed_ = false;
};

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_BATCH_THREAD_HPP

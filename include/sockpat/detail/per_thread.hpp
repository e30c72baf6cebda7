// sockpat: one object per thread, made on first use and destroyed when its thread ends,
// without a thread_local object that has a destructor. MinGW-w64's emulated TLS was seen
// running such a destructor on storage already released (config.hpp); a thread_local
// pointer is trivially destructible everywhere, and the OS's own thread-exit hook (a pthread
// key, a fiber-local slot on Windows) deletes the object.
#ifndef SOCKPAT_DETAIL_PER_THREAD_HPP
#define SOCKPAT_DETAIL_PER_THREAD_HPP

#include "sockpat/detail/os.hpp"

namespace sockpat::detail {

// Makes the calling thread's T and registers its deletion at the thread's end. Out of line:
// the hot path of per_thread() is one thread-local load and a test.
template <class T>
[[gnu::noinline]] T* make_per_thread() {
  T* object = new T();
#if defined(SOCKPAT_WINDOWS)
  static const DWORD slot = ::FlsAlloc([](void* p) noexcept { delete static_cast<T*>(p); });
  if (slot != FLS_OUT_OF_INDEXES) (void)::FlsSetValue(slot, object);
#else
  struct Key {
    pthread_key_t key{};
    bool ok = ::pthread_key_create(&key, [](void* p) noexcept { delete static_cast<T*>(p); }) == 0;
  };
  static const Key key;
  if (key.ok) (void)::pthread_setspecific(key.key, object);
#endif
  return object;
}

/// The calling thread's T, default-constructed on its first use there. Throws what `new T`
/// throws (std::bad_alloc). When the OS cannot give a thread-exit hook (out of keys), the
/// object is still made and lives until the process ends.
template <class T>
T& per_thread() {
  thread_local T* object = nullptr;
  if (object == nullptr) [[unlikely]] object = make_per_thread<T>();
  return *object;
}

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_PER_THREAD_HPP

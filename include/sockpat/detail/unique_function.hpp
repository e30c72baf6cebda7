// sockpat: UniqueFunction<R(Args...)>, a move-only type-erased callable (C++23's
// std::move_only_function, which C++20 lacks), so that a handler may own a std::unique_ptr.
#ifndef SOCKPAT_DETAIL_UNIQUE_FUNCTION_HPP
#define SOCKPAT_DETAIL_UNIQUE_FUNCTION_HPP

#include <concepts>     // std::same_as
#include <type_traits>  // std::decay_t, std::is_invocable_r_v, std::is_void_v, std::remove_cvref_t
#include <utility>      // std::exchange, std::forward

namespace sockpat::detail {

template <class Signature>
class UniqueFunction;

/// Holds any callable that can be moved, on the heap, behind two function pointers (no vtable,
/// no <functional>): one call through a pointer, as std::function costs.
template <class R, class... Args>
class UniqueFunction<R(Args...)> {
 public:
  UniqueFunction() noexcept = default;

  template <class F>
    requires(!std::same_as<std::remove_cvref_t<F>, UniqueFunction> && std::is_invocable_r_v<R, std::decay_t<F>&, Args...>)
  UniqueFunction(F&& f)  // implicit, as std::function's
      : object_(new std::decay_t<F>(std::forward<F>(f))), call_(&call<std::decay_t<F>>), destroy_(&destroy<std::decay_t<F>>) {}

  UniqueFunction(UniqueFunction&& o) noexcept
      : object_(std::exchange(o.object_, nullptr)), call_(o.call_), destroy_(o.destroy_) {}
  UniqueFunction& operator=(UniqueFunction&& o) noexcept {
    if (this != &o) {
      reset();
      object_ = std::exchange(o.object_, nullptr);
      call_ = o.call_;
      destroy_ = o.destroy_;
    }
    return *this;
  }
  ~UniqueFunction() { reset(); }

  [[nodiscard]] explicit operator bool() const noexcept { return object_ != nullptr; }

  /// Calls the callable; it must hold one.
  R operator()(Args... args) { return call_(object_, std::forward<Args>(args)...); }

 private:
  template <class F>
  static R call(void* object, Args&&... args) {
    if constexpr (std::is_void_v<R>) {
      (*static_cast<F*>(object))(std::forward<Args>(args)...);
    } else {
      return (*static_cast<F*>(object))(std::forward<Args>(args)...);
    }
  }
  template <class F>
  static void destroy(void* object) noexcept {
    delete static_cast<F*>(object);
  }
  void reset() noexcept {
    if (object_ != nullptr) destroy_(std::exchange(object_, nullptr));
  }

  void* object_ = nullptr;
  R (*call_)(void*, Args&&...) = nullptr;
  void (*destroy_)(void*) noexcept = nullptr;
};

}  // namespace sockpat::detail

#endif  // SOCKPAT_DETAIL_UNIQUE_FUNCTION_HPP

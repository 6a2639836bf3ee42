// The one adapter between LibTorch exceptions and absl::Status.
//
// LibTorch reports errors by throwing c10::Error (and subclasses such as
// c10::OutOfMemoryError). No exception may cross a module boundary, so every
// call into torch that can fail on request-controlled input goes through
// TorchCall:
//
//   ASSIGN_OR_RETURN(torch::Tensor y, TorchCall([&] { return model->forward(x); }));
//   RETURN_IF_ERROR(TorchCall([&] { tensor.copy_(other); }));
//
// The callable may return void (-> absl::Status), absl::Status,
// absl::StatusOr<T> (both passed through), or any other T
// (-> absl::StatusOr<T>). CUDA out-of-memory becomes ResourceExhausted; any
// other torch or std error becomes Internal with its message kept (first line
// only), prefixed by `context`.
#pragma once

#include <exception>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace autoquant {

// Maps the exception currently being handled to a Status. Call only inside a
// catch block.
absl::Status StatusFromCurrentException(absl::string_view context);

namespace internal {
template <typename T>
struct IsStatusOr : std::false_type {};
template <typename T>
struct IsStatusOr<absl::StatusOr<T>> : std::true_type {};
}  // namespace internal

template <typename F>
auto TorchCall(F&& f, absl::string_view context = "torch") {
  using R = std::invoke_result_t<F>;
  if constexpr (std::is_void_v<R>) {
    try {
      std::forward<F>(f)();
      return absl::OkStatus();
    } catch (...) {
      return StatusFromCurrentException(context);
    }
  } else if constexpr (std::is_same_v<R, absl::Status> || internal::IsStatusOr<R>::value) {
    try {
      return R(std::forward<F>(f)());
    } catch (...) {
      return R(StatusFromCurrentException(context));
    }
  } else {
    using SR = absl::StatusOr<R>;
    try {
      return SR(std::forward<F>(f)());
    } catch (...) {
      return SR(StatusFromCurrentException(context));
    }
  }
}

}  // namespace autoquant

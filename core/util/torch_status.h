// The one adapter between LibTorch exceptions and absl::Status.
//
// LibTorch reports errors by throwing c10::Error (and subclasses such as
// c10::OutOfMemoryError). No exception may cross a module boundary, so every
// call into torch that can fail on request-controlled input goes through
// TorchCall:
//
//   ASSIGN_OR_RETURN(torch::Tensor y, TorchCall([&] { return model->forward(x); }));
//
// CUDA out-of-memory becomes ResourceExhausted; any other torch or std error
// becomes Internal with its message kept (first line only).
#pragma once

#include <exception>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/strings/string_view.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace autoquant {

// Maps the exception currently being handled to a Status. Call only inside a
// catch block.
absl::Status StatusFromCurrentException(absl::string_view context);

template <typename F>
auto TorchCall(F&& f, absl::string_view context = "torch")
    -> absl::StatusOr<std::invoke_result_t<F>> requires(!std::is_void_v<std::invoke_result_t<F>>) {
  try {
    return std::forward<F>(f)();
  } catch (...) {
    return StatusFromCurrentException(context);
  }
}

template <typename F>
absl::Status TorchCall(F&& f, absl::string_view context = "torch") requires(
    std::is_void_v<std::invoke_result_t<F>>) {
  try {
    std::forward<F>(f)();
    return absl::OkStatus();
  } catch (...) {
    return StatusFromCurrentException(context);
  }
}

}  // namespace autoquant

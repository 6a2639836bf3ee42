// Mapping between autoquant::DType and torch::ScalarType.
#pragma once

#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "core/io/dtype.h"

namespace autoquant {

c10::ScalarType ToTorch(DType dtype);
// InvalidArgument for torch types safetensors (as autoquant uses it) cannot hold.
absl::StatusOr<DType> FromTorch(c10::ScalarType type);

}  // namespace autoquant

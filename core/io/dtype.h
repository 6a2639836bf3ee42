// The tensor element types a safetensors file can hold that autoquant reads
// and writes, with their on-disk names. Torch-free: see torch_dtype.h for the
// mapping to torch::ScalarType.
#pragma once

#include <cstdint>
#include <optional>
#include "absl/strings/string_view.h"

namespace autoquant {

enum class DType : uint8_t { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool, kF8E4M3, kF8E5M2 };

// "F32", "BF16", "F8_E4M3", ... exactly as safetensors spells them.
absl::string_view DTypeName(DType dtype);
// Inverse of DTypeName; nullopt for names autoquant does not handle.
std::optional<DType> DTypeFromName(absl::string_view name);
// Bytes per element.
int DTypeSize(DType dtype);

}  // namespace autoquant

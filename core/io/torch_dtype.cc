#include "core/io/torch_dtype.h"

#include "absl/strings/str_cat.h"

namespace autoquant {

c10::ScalarType ToTorch(DType dtype) {
  switch (dtype) {
    case DType::kF64:
      return c10::kDouble;
    case DType::kF32:
      return c10::kFloat;
    case DType::kF16:
      return c10::kHalf;
    case DType::kBF16:
      return c10::kBFloat16;
    case DType::kI64:
      return c10::kLong;
    case DType::kI32:
      return c10::kInt;
    case DType::kI16:
      return c10::kShort;
    case DType::kI8:
      return c10::kChar;
    case DType::kU8:
      return c10::kByte;
    case DType::kBool:
      return c10::kBool;
    case DType::kF8E4M3:
      return c10::kFloat8_e4m3fn;
    case DType::kF8E5M2:
      return c10::kFloat8_e5m2;
  }
  return c10::kByte;
}

absl::StatusOr<DType> FromTorch(c10::ScalarType type) {
  switch (type) {
    case c10::kDouble:
      return DType::kF64;
    case c10::kFloat:
      return DType::kF32;
    case c10::kHalf:
      return DType::kF16;
    case c10::kBFloat16:
      return DType::kBF16;
    case c10::kLong:
      return DType::kI64;
    case c10::kInt:
      return DType::kI32;
    case c10::kShort:
      return DType::kI16;
    case c10::kChar:
      return DType::kI8;
    case c10::kByte:
      return DType::kU8;
    case c10::kBool:
      return DType::kBool;
    case c10::kFloat8_e4m3fn:
      return DType::kF8E4M3;
    case c10::kFloat8_e5m2:
      return DType::kF8E5M2;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("torch dtype ", c10::toString(type), " has no safetensors equivalent here"));
  }
}

}  // namespace autoquant

#include "core/model/device.h"

#include <torch/cuda.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace autoquant {

absl::StatusOr<torch::Device> ParseDevice(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (name == "cpu") return torch::Device(torch::kCPU);
  int index = 0;
  bool cuda = name == "cuda";
  if (absl::StartsWith(name, "cuda:")) {
    const std::string digits = name.substr(5);
    cuda = !digits.empty() && digits.size() <= 3 && digits.find_first_not_of("0123456789") == std::string::npos &&
           absl::SimpleAtoi(digits, &index);
  }
  if (!cuda) {
    return absl::InvalidArgumentError(absl::StrCat("unknown device '", name, "' (auto | cpu | cuda | cuda:N)"));
  }
  if (!torch::cuda::is_available()) {
    return absl::FailedPreconditionError(
        absl::StrCat("device '", name, "' requested but no CUDA device is visible; use --device cpu"));
  }
  if (index >= static_cast<int>(torch::cuda::device_count())) {
    return absl::FailedPreconditionError(absl::StrCat("device '", name, "' requested but only ",
                                                      torch::cuda::device_count(), " CUDA device(s) are visible"));
  }
  // Plain "cuda" stays the current device, as torch reads it.
  if (name == "cuda") return torch::Device(torch::kCUDA);
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

absl::StatusOr<torch::ScalarType> ParseDtype(const std::string& name, const torch::Device& device) {
  if (name == "auto" || name.empty()) return device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float32" || name == "fp32") return torch::kFloat32;
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", name, "' (auto | bfloat16 | float32)"));
}

}  // namespace autoquant

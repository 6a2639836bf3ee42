#include "core/quant/fp8_linear.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "core/quant/fp8.h"

namespace autoquant {

absl::string_view Fp8MatmulName(Fp8Matmul m) {
  switch (m) {
    case Fp8Matmul::kAuto:
      return "auto";
    case Fp8Matmul::kScaledMm:
      return "scaled_mm";
    case Fp8Matmul::kEmulated:
      return "emulated";
  }
  return "?";
}

absl::StatusOr<Fp8Matmul> ParseFp8Matmul(absl::string_view name) {
  for (Fp8Matmul m : {Fp8Matmul::kAuto, Fp8Matmul::kScaledMm, Fp8Matmul::kEmulated}) {
    if (Fp8MatmulName(m) == name) return m;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown FP8 matmul '", name, "': use auto, scaled_mm or emulated"));
}

bool HasFp8Matmul(const torch::Device& device) {
  if (!device.is_cuda() || !torch::cuda::is_available()) return false;
  int major = 0, minor = 0;
  const int index = device.has_index() ? device.index() : 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index) != cudaSuccess) {
    return false;
  }
  return major > 8 || (major == 8 && minor >= 9);
}

absl::StatusOr<Fp8Matmul> ResolveFp8Matmul(Fp8Matmul requested, const torch::Device& device) {
  const bool has = HasFp8Matmul(device);
  if (requested == Fp8Matmul::kAuto) return has ? Fp8Matmul::kScaledMm : Fp8Matmul::kEmulated;
  if (requested == Fp8Matmul::kScaledMm && !has) {
    return absl::FailedPreconditionError(
        absl::StrCat("FP8 matmul (torch::_scaled_mm) needs a CUDA GPU of compute capability 8.9 or newer; ",
                     device.str(), " has none: use emulated or auto"));
  }
  return requested;
}

Fp8LinearHook::Fp8LinearHook(torch::Tensor weight, torch::Tensor weight_scale, torch::Tensor input_scale,
                             Fp8Matmul mode)
    : weight_(std::move(weight)),
      weight_scale_(std::move(weight_scale)),
      input_scale_(std::move(input_scale)),
      combined_scale_(input_scale_ * weight_scale_),
      mode_(mode),
      // _scaled_mm wants K and N multiples of 16 (the real models' are; tiny test models' may not be).
      scaled_mm_shapes_ok_(weight_.size(0) % 16 == 0 && weight_.size(1) % 16 == 0) {}

torch::Tensor Fp8LinearHook::Forward(LinearImpl& layer, const torch::Tensor& x) {
  const auto out_dtype = x.scalar_type();
  std::vector<int64_t> out_shape = x.sizes().vec();
  out_shape.back() = weight_.size(0);
  torch::Tensor xq = QuantizeFp8(x.reshape({-1, x.size(-1)}), input_scale_);
  torch::Tensor y;
  if (mode_ == Fp8Matmul::kScaledMm && scaled_mm_shapes_ok_) {
    // bias in the output dtype, as _scaled_mm requires; weight_.t() is the column-major mat2 it wants.
    c10::optional<at::Tensor> bias;
    if (layer.bias.defined()) bias = layer.bias.to(out_dtype);
    y = at::_scaled_mm(xq, weight_.t(), input_scale_, weight_scale_, bias, c10::nullopt, out_dtype);
  } else {
    y = at::matmul(xq.to(torch::kFloat32), weight_.to(torch::kFloat32).t()) * combined_scale_;
    if (layer.bias.defined()) y = y + layer.bias.to(torch::kFloat32);
    y = y.to(out_dtype);
  }
  return y.reshape(out_shape);
}

}  // namespace autoquant

// A Linear as an FP8 engine deploys it: per-tensor static FP8 weights and
// inputs (vLLM's ModelOpt / compressed-tensors FP8 linear method).
//
//   y = (q(x / s_x) · w_fp8ᵀ) · s_x · s_w + b,   q = saturate to ±448, cast to e4m3
//
// On a GPU with FP8 matmul (compute capability >= 8.9: Ada, Hopper,
// Blackwell) the product is torch::_scaled_mm, as vLLM's torch fallback
// computes it; elsewhere (and for shapes _scaled_mm refuses: K or N not a
// multiple of 16) it is emulated exactly: e4m3 values are exact in float32,
// the product is accumulated in float32, then scaled and cast. The two agree
// up to accumulation order (measured: bench/results/*-eval-*).
#pragma once

#include <torch/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/model/layers/linear.h"

namespace autoquant {

enum class Fp8Matmul { kAuto, kScaledMm, kEmulated };
absl::string_view Fp8MatmulName(Fp8Matmul m);  // auto | scaled_mm | emulated
// InvalidArgument naming the accepted values.
absl::StatusOr<Fp8Matmul> ParseFp8Matmul(absl::string_view name);

// Whether `device` has FP8 matmul (CUDA, compute capability >= 8.9).
bool HasFp8Matmul(const torch::Device& device);
// kAuto resolved for `device`: kScaledMm where HasFp8Matmul, else kEmulated.
// FailedPrecondition for kScaledMm on a device without FP8 matmul.
absl::StatusOr<Fp8Matmul> ResolveFp8Matmul(Fp8Matmul requested, const torch::Device& device);

class Fp8LinearHook : public LinearHook {
 public:
  // weight: float8_e4m3fn [out, in] on the layer's device; scales: 0-d
  // float32 on that device; mode: kScaledMm or kEmulated (resolved).
  Fp8LinearHook(torch::Tensor weight, torch::Tensor weight_scale, torch::Tensor input_scale, Fp8Matmul mode);
  // Ignores layer.weight (the base's 16-bit weight); uses layer.bias.
  torch::Tensor Forward(LinearImpl& layer, const torch::Tensor& x) override;

  const torch::Tensor& weight() const { return weight_; }
  const torch::Tensor& weight_scale() const { return weight_scale_; }
  const torch::Tensor& input_scale() const { return input_scale_; }
  // kScaledMm falls back to emulation for shapes _scaled_mm refuses.
  bool uses_scaled_mm() const { return mode_ == Fp8Matmul::kScaledMm && scaled_mm_shapes_ok_; }

 private:
  torch::Tensor weight_, weight_scale_, input_scale_, combined_scale_;
  Fp8Matmul mode_;
  bool scaled_mm_shapes_ok_;
};

}  // namespace autoquant

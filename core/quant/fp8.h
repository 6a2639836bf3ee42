// FP8 E4M3 per-tensor quantization: amax, scales, saturating casts, fake
// quantization.
//
// Conventions (shared with ModelOpt's export and vLLM's loaders):
//   scale = amax / 448   (a multiplier: x ~= fp8 * scale)
//   q     = saturate(x / scale) cast to float8_e4m3fn
// The division runs in float32 and the result is clamped to [-448, 448]
// before the cast: torch's plain cast turns overflow into NaN, and rounding
// x in bf16 first (as ModelOpt's export does) would round twice.
// An amax of 0 (or a non-finite one) yields scale 1, as ModelOpt exports it.
#pragma once

#include <torch/types.h>

namespace autoquant {

inline constexpr float kFp8E4M3Max = 448.0f;

// max |x| as a 0-d float32 tensor on x's device.
torch::Tensor Amax(const torch::Tensor& x);
// *acc = max(*acc, max |x|) in place, without a temporary of x's size on a
// GPU; acc: 0-d float32 on x's device, made (zeroed) when undefined.
void AccumulateAmax(const torch::Tensor& x, torch::Tensor* acc);
// amax / 448 as a 0-d float32 tensor (1 where amax is 0 or not finite).
torch::Tensor Fp8ScaleFromAmax(const torch::Tensor& amax);
// x: any float tensor, scale: 0-d float32 -> float8_e4m3fn tensor of x's shape.
torch::Tensor QuantizeFp8(const torch::Tensor& x, const torch::Tensor& scale);
// q: float8_e4m3fn -> float32 q * scale.
torch::Tensor DequantizeFp8(const torch::Tensor& q, const torch::Tensor& scale);
// Quantize then dequantize, back in x's dtype, exactly as ModelOpt's
// fake quantizer computes it (so scores agree with ModelOpt's): amax <= 2^-24
// (or not finite) counts as 1; s = 448 / amax in float32;
// y = e4m3(clamp(x * s, +-448)) * (1 / s). amax: 0-d float32.
torch::Tensor FakeQuantFp8(const torch::Tensor& x, const torch::Tensor& amax);

}  // namespace autoquant

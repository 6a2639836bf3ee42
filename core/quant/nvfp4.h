// NVFP4: E2M1 values in blocks of 16 along the last dimension, one E4M3 scale
// per block, one float32 global scale per tensor.
//
// Conventions (ModelOpt's NVFP4QTensor and export, vLLM's loaders):
//   global scale  g = amax / (6 * 448)          (weight_scale_2, input_scale)
//   block scale   s = e4m3(block_amax / (6 g))  (weight_scale)
//   value         x ~= e2m1 * s * g
// E2M1 magnitudes are {0, 0.5, 1, 1.5, 2, 3, 4, 6}; rounding is to nearest,
// ties to the even code (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2,
// 3.5 -> 4, 5 -> 4), as ModelOpt rounds. Codes are 4 bits, sign in bit 3;
// two per byte, the even index in the low nibble.
//
// Two computations exist because the tools differ, and each use must agree
// with its own reference:
//   - FakeQuantNvfp4 is ModelOpt's fake quantizer (the scores); a zero or
//     tiny block scale becomes 1.
//   - QuantizeNvfp4 is ModelOpt's export (the checkpoint's bytes): block
//     scales are clamped to [2^-9, 448] before the cast and an all-zero
//     block gets scale 1.
//   - QuantDequantNvfp4Input is vLLM's activation quantization (the
//     evaluation: per-block scales from the static global input scale at run
//     time).
// All take float tensors whose last dimension is a multiple of 16.
#pragma once

#include <torch/types.h>

namespace autoquant {

inline constexpr int kNvfp4Block = 16;
inline constexpr float kE2M1Max = 6.0f;

struct Nvfp4Tensor {
  torch::Tensor packed;        // uint8 [..., n / 2]
  torch::Tensor block_scale;   // float8_e4m3fn [..., n / 16]
  torch::Tensor global_scale;  // 0-d float32: amax / (6 * 448)
};

// amax / (6 * 448) as a 0-d float32 tensor.
torch::Tensor Nvfp4GlobalScaleFromAmax(const torch::Tensor& amax);
// ModelOpt's export of a weight with calibrated (per-tensor) amax.
Nvfp4Tensor QuantizeNvfp4(const torch::Tensor& w, const torch::Tensor& amax);
// float32 e2m1 * block scale * global scale, of the unpacked shape.
torch::Tensor DequantizeNvfp4(const Nvfp4Tensor& q);
// ModelOpt's NVFP4 fake quantizer with global amax `amax` (0-d float32), in x's dtype.
torch::Tensor FakeQuantNvfp4(const torch::Tensor& x, const torch::Tensor& amax);
// vLLM's NVFP4 activation quantization (its emulation path), dequantized to
// x's dtype. global_scale: vLLM's input_global_scale, 0-d float32, the
// reciprocal of the checkpoint's amax / (6 * 448) (compressed-tensors stores
// it as is, ModelOpt as input_scale, which vLLM inverts).
torch::Tensor QuantDequantNvfp4Input(const torch::Tensor& x, const torch::Tensor& global_scale);
// vLLM's dequantization of a stored NVFP4 weight (its emulation path):
// e2m1 * (block scale / global_scale), in `dtype`. global_scale: vLLM's
// weight_global_scale (the reciprocal of weight_scale_2).
torch::Tensor DequantizeNvfp4AsVllm(const torch::Tensor& packed, const torch::Tensor& block_scale,
                                    const torch::Tensor& global_scale, torch::ScalarType dtype);

// The 4-bit codes of |x| / scale (already scaled, float32): sign in bit 3. uint8.
torch::Tensor E2M1Codes(const torch::Tensor& scaled);
// Code -> float32 value.
torch::Tensor E2M1Values(const torch::Tensor& codes);
// Codes [..., n] -> bytes [..., n / 2] and back.
torch::Tensor PackE2M1(const torch::Tensor& codes);
torch::Tensor UnpackE2M1(const torch::Tensor& packed);

}  // namespace autoquant

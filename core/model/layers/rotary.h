// Rotary position embedding helpers shared by the Qwen2.5-VL towers.
//
// The two towers apply RoPE at different precisions, and parity with
// transformers depends on it:
//   vision: cos/sin stay float32 and q/k are upcast to float32 for the
//           rotation, then cast back (ApplyRotaryFloat32);
//   text:   cos/sin are cast to the activation dtype first, so the rotation
//           is done in that dtype (ApplyRotaryInDtype).
// Inverse frequencies are always computed on the CPU in float32, exactly as
// transformers does at init, and moved afterwards.
#pragma once

#include <torch/types.h>

#include <utility>

namespace autoquant {

// cat(-x[..., d/2:], x[..., :d/2])
torch::Tensor RotateHalf(const torch::Tensor& x);

// 1 / base^(arange(0, dim, 2) / dim): [dim / 2] float32 on the CPU.
torch::Tensor RopeInvFreq(int64_t dim, double base);

// q, k: [..., heads, head_dim]; cos, sin: [..., head_dim] (broadcast over heads
// after unsqueeze(-2)). Rotation in float32; results in q's / k's dtype.
std::pair<torch::Tensor, torch::Tensor> ApplyRotaryFloat32(const torch::Tensor& q, const torch::Tensor& k,
                                                           const torch::Tensor& cos, const torch::Tensor& sin);

// q, k: [B, heads, S, head_dim]; cos, sin: [B, 1, S, head_dim], already in the
// activation dtype. q * cos + RotateHalf(q) * sin, in that dtype.
std::pair<torch::Tensor, torch::Tensor> ApplyRotaryInDtype(const torch::Tensor& q, const torch::Tensor& k,
                                                           const torch::Tensor& cos, const torch::Tensor& sin);

}  // namespace autoquant

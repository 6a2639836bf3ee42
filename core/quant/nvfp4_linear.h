// A Linear as vLLM's NVFP4 emulation computes it (its "emulation" linear
// backend, the reference its FP4 kernels are tested against):
//
//   x_dq = vLLM's activation quantization of x with the input global scale
//          (QuantDequantNvfp4Input; W4A4 only, weight-only keeps x)
//   w_dq = e2m1 * (block scale / weight global scale), in the model dtype
//   y    = x_dq @ w_dqᵀ (+ b)
//
// Native FP4 GEMMs (Blackwell: CUTLASS / FlashInfer in vLLM, torch's
// _scaled_mm with float4_e2m1fn_x2) need compute capability >= 10.0; no
// machine here has one, so this emulation is the only path (exact on the CPU
// and on Hopper up to the GEMM's accumulation order).
#pragma once

#include <torch/types.h>

#include <optional>

#include "core/model/layers/linear.h"

namespace autoquant {

class Nvfp4LinearHook : public LinearHook {
 public:
  // weight: the dequantized weight [out, in] in the model dtype on the layer's device;
  // input_global: vLLM's input_global_scale (0-d float32 there), undefined for weight-only.
  Nvfp4LinearHook(torch::Tensor weight, torch::Tensor input_global);
  torch::Tensor Forward(LinearImpl& layer, const torch::Tensor& x) override;

  const torch::Tensor& weight() const { return weight_; }
  const torch::Tensor& input_global() const { return input_global_; }

 private:
  torch::Tensor weight_, input_global_;
};

}  // namespace autoquant

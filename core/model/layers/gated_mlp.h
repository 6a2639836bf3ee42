// SiLU-gated MLP: down(silu(gate(x)) * up(x)). The Qwen2.5-VL text decoder
// uses it without biases, the vision blocks with biases. Submodules are
// registered as gate_proj, up_proj, down_proj (checkpoint names).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "core/model/layers/linear.h"

namespace autoquant {

class GatedMlpImpl : public torch::nn::Module {
 public:
  GatedMlpImpl(int64_t hidden, int64_t intermediate, bool bias);
  // x: [..., hidden] -> [..., hidden]
  torch::Tensor forward(const torch::Tensor& x);

  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(GatedMlp);

}  // namespace autoquant

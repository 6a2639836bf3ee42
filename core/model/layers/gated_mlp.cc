#include "core/model/layers/gated_mlp.h"

#include <ATen/ATen.h>

namespace autoquant {

GatedMlpImpl::GatedMlpImpl(int64_t hidden, int64_t intermediate, bool bias) {
  gate_proj = register_module("gate_proj", Linear(hidden, intermediate, bias));
  up_proj = register_module("up_proj", Linear(hidden, intermediate, bias));
  down_proj = register_module("down_proj", Linear(intermediate, hidden, bias));
}

torch::Tensor GatedMlpImpl::forward(const torch::Tensor& x) {
  return down_proj->forward(at::silu(gate_proj->forward(x)) * up_proj->forward(x));
}

}  // namespace autoquant

#include "core/model/layers/gated_mlp.h"

#include <ATen/ATen.h>

#include "core/model/layers/fused_kernels.h"

namespace autoquant {

GatedMlpImpl::GatedMlpImpl(int64_t hidden, int64_t intermediate, bool bias) {
  gate_proj = register_module("gate_proj", Linear(hidden, intermediate, bias));
  up_proj = register_module("up_proj", Linear(hidden, intermediate, bias));
  down_proj = register_module("down_proj", Linear(intermediate, hidden, bias));
}

torch::Tensor GatedMlpImpl::forward(const torch::Tensor& x) {
  torch::Tensor gate = gate_proj->forward(x), up = up_proj->forward(x);
  if (FusedKernelApplies({&gate, &up})) {
    torch::Tensor h = torch::empty_like(gate);
    CheckKernelLaunch(
        kernels::SiluMul(gate.data_ptr(), up.data_ptr(), h.data_ptr(), h.numel(), KernelDType(h), KernelStream(h)));
    return down_proj->forward(h);
  }
  return down_proj->forward(at::silu(gate) * up);
}

}  // namespace autoquant

#include "core/model/layers/rms_norm.h"

#include <ATen/ATen.h>

#include "core/model/layers/fused_kernels.h"

namespace autoquant {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::empty({dim}), /*requires_grad=*/false);
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) const {
  if (FusedKernelApplies({&x, &weight}) && x.dim() > 0) {
    torch::Tensor y = torch::empty_like(x);
    const int64_t cols = x.size(-1);
    CheckKernelLaunch(kernels::RmsNorm(x.data_ptr(), weight.data_ptr(), y.data_ptr(), cols ? x.numel() / cols : 0, cols,
                                       static_cast<float>(eps_), KernelDType(x), KernelStream(x)));
    return y;
  }
  const auto dtype = x.scalar_type();
  torch::Tensor h = x.to(torch::kFloat32);
  torch::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * torch::rsqrt(variance + eps_);
  return weight * h.to(dtype);
}

}  // namespace autoquant

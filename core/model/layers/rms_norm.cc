#include "core/model/layers/rms_norm.h"

#include <ATen/ATen.h>

namespace autoquant {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::empty({dim}), /*requires_grad=*/false);
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) const {
  const auto dtype = x.scalar_type();
  torch::Tensor h = x.to(torch::kFloat32);
  torch::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * torch::rsqrt(variance + eps_);
  return weight * h.to(dtype);
}

}  // namespace autoquant

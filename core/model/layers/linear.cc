#include "core/model/layers/linear.h"

#include <ATen/ATen.h>

namespace autoquant {

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool has_bias)
    : in_features_(in_features), out_features_(out_features) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}), /*requires_grad=*/false);
  if (has_bias) bias = register_parameter("bias", torch::empty({out_features}), /*requires_grad=*/false);
}

torch::Tensor LinearImpl::Dense(const torch::Tensor& x) const {
  // at::linear (fused bias epilogue), as F.linear does: matmul + add rounds differently.
  return at::linear(x, weight, bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt);
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  if (hook_) return hook_->Forward(*this, x);
  return Dense(x);
}

}  // namespace autoquant

#include "core/quant/nvfp4_linear.h"

#include <ATen/ATen.h>

#include "core/quant/nvfp4.h"

namespace autoquant {

Nvfp4LinearHook::Nvfp4LinearHook(torch::Tensor weight, torch::Tensor input_global)
    : weight_(std::move(weight)), input_global_(std::move(input_global)) {}

torch::Tensor Nvfp4LinearHook::Forward(LinearImpl& layer, const torch::Tensor& x) {
  torch::Tensor x2 = x.reshape({-1, x.size(-1)});
  if (input_global_.defined()) x2 = QuantDequantNvfp4Input(x2, input_global_);
  torch::Tensor y = torch::matmul(x2.to(weight_.scalar_type()), weight_.t());
  if (layer.bias.defined()) y = y + layer.bias;
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = weight_.size(0);
  return y.reshape(shape);
}

}  // namespace autoquant

// RMSNorm exactly as transformers' Qwen2RMSNorm computes it: normalize in
// float32, cast back to the input dtype, THEN multiply by the weight (in the
// input dtype). The order matters for bf16 parity.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace autoquant {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  // x: [..., dim] -> [..., dim], same dtype as x.
  torch::Tensor forward(const torch::Tensor& x) const;
  double eps() const { return eps_; }

  torch::Tensor weight;  // [dim]

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

}  // namespace autoquant

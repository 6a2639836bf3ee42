// The one Linear layer every projection of the model goes through.
//
// The quantization engine needs to observe, fake-quantize or replace what a
// Linear computes, per group, without touching model code. It does that by
// installing a LinearHook on chosen layers: the hook receives the layer and
// its input and returns the output (calling layer.Dense(x) for the plain
// result). With no hook, forward is at::linear(x, weight, bias).
//
// Parameters are registered as "weight" ([out, in]) and "bias" ([out], when
// present), so checkpoint loading is a name lookup.
//
// Thread safety: like any torch::nn::Module, not safe to mutate concurrently
// with forward; hooks are installed between forwards.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <memory>
#include <string>

namespace autoquant {

class LinearImpl;

// Overrides a Linear's forward. Implementations live in core/quant/.
class LinearHook {
 public:
  virtual ~LinearHook() = default;
  // x: [..., in] -> [..., out]
  virtual torch::Tensor Forward(LinearImpl& layer, const torch::Tensor& x) = 0;
};

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias);

  // x: [..., in] -> [..., out]; through the hook when one is installed.
  torch::Tensor forward(const torch::Tensor& x);
  // The unhooked computation, at::linear(x, weight, bias).
  torch::Tensor Dense(const torch::Tensor& x) const;

  void set_hook(std::shared_ptr<LinearHook> hook) { hook_ = std::move(hook); }
  const std::shared_ptr<LinearHook>& hook() const { return hook_; }

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out] or undefined

 private:
  int64_t in_features_;
  int64_t out_features_;
  std::shared_ptr<LinearHook> hook_;
};
TORCH_MODULE(Linear);

}  // namespace autoquant

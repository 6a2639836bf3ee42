#include "core/quant/linear_hooks.h"

#include "core/model/layers/fused_kernels.h"
#include "core/quant/format_numerics.h"
#include "core/quant/fp8.h"

namespace autoquant {

namespace {

// scores[f] += Σ clamp(g·d, ±1e10)² (float32 products, float64 sum); scores: float64 on g's device.
void AccumulateSquaredProduct(const torch::Tensor& g, const torch::Tensor& d, const torch::Tensor& scores, size_t f) {
  if (FusedKernelApplies({&g, &d}) && g.sizes() == d.sizes()) {
    CheckKernelLaunch(kernels::AccumulateSquaredProduct(g.data_ptr(), d.data_ptr(), g.numel(), KernelDType(g),
                                                        scores.data_ptr<double>() + f, KernelStream(g)));
    return;
  }
  torch::Tensor prod = (g.to(torch::kFloat32) * d.to(torch::kFloat32)).clamp(-1e10, 1e10);
  scores[f] += prod.square().sum(torch::kFloat64);
}

}  // namespace

torch::Tensor CalibrationHook::Forward(LinearImpl& layer, const torch::Tensor& x) {
  AccumulateAmax(x, &amax_);
  return layer.Dense(x);
}

FakeQuantHook::FakeQuantHook(const LinearImpl& layer, Format format, torch::Tensor input_amax,
                             torch::Tensor weight_amax)
    : format_(format) {
  torch::NoGradGuard no_grad;
  weight_fq_ = FakeQuantWeight(format, layer.weight, weight_amax);
  input_amax_ = input_amax.to(layer.weight.device());
}

torch::Tensor FakeQuantHook::Forward(LinearImpl& layer, const torch::Tensor& x) {
  return at::linear(FakeQuantInput(format_, x, input_amax_), weight_fq_,
                    layer.bias.defined() ? c10::optional<at::Tensor>(layer.bias) : c10::nullopt);
}

torch::Tensor InputQuantHook::Forward(LinearImpl& layer, const torch::Tensor& x) {
  return layer.Dense(FakeQuantInput(format_, x, input_amax_));
}

ScoreHook::ScoreHook(std::vector<Format> formats, std::vector<torch::Tensor> input_amax,
                     std::vector<torch::Tensor> weight_amax)
    : formats_(std::move(formats)), input_amax_(std::move(input_amax)), weight_amax_(std::move(weight_amax)) {}

torch::Tensor ScoreHook::Forward(LinearImpl& layer, const torch::Tensor& x) {
  torch::Tensor y = layer.Dense(x);
  if (!y.requires_grad()) return y;  // the plain forward passes: nothing to score
  if (!scores_.defined()) {
    scores_ = torch::zeros({static_cast<int64_t>(input_amax_.size())},
                           torch::TensorOptions().dtype(torch::kFloat64).device(y.device()));
  }
  auto deltas = std::make_shared<std::vector<torch::Tensor>>();
  {
    torch::NoGradGuard no_grad;
    const auto bias = layer.bias.defined() ? c10::optional<at::Tensor>(layer.bias) : c10::nullopt;
    for (size_t f = 0; f < input_amax_.size(); ++f) {
      torch::Tensor yq = at::linear(FakeQuantInput(formats_[f], x.detach(), input_amax_[f]),
                                    FakeQuantWeight(formats_[f], layer.weight, weight_amax_[f]), bias);
      deltas->push_back(yq - y.detach());  // in the model dtype, as ModelOpt subtracts
    }
  }
  torch::Tensor scores = scores_;
  y.register_hook([deltas, scores](const torch::Tensor& grad) {
    torch::NoGradGuard no_grad;
    for (size_t f = 0; f < deltas->size(); ++f) AccumulateSquaredProduct(grad, (*deltas)[f], scores, f);
    deltas->clear();  // ΔY is needed once; free it as soon as the gradient has used it
  });
  return y;
}

}  // namespace autoquant

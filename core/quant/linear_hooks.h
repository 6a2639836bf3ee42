// The LinearHooks the engine installs on the model's Linears.
//
//   CalibrationHook   records max |input| over every call (quantization off)
//   FakeQuantHook     computes the Linear with fake-quantized input and weight in one format
//   ScoreHook         gradient scoring: computes ΔY = f_q(x) - f(x) per format with only
//                     this Linear quantized and its (unquantized) input, and when the
//                     output's gradient g arrives adds Σ clamp(g·ΔY, ±1e10)² (fp64) to
//                     the per-format score, as ModelOpt's AutoQuantize does
//
// All hooks live on the model's device; accumulators stay there (no host sync
// per call).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "core/model/layers/linear.h"
#include "core/quant/formats.h"

namespace autoquant {

class CalibrationHook : public LinearHook {
 public:
  // slot: a zeroed 0-d float32 tensor on the layer's device to accumulate into
  // (e.g. one element of a buffer that holds every layer's amax, read back in
  // one copy); undefined = a tensor of its own, made on first use.
  explicit CalibrationHook(torch::Tensor slot = {}) : amax_(std::move(slot)) {}
  torch::Tensor Forward(LinearImpl& layer, const torch::Tensor& x) override;
  // 0-d float32; zeros until the layer ran.
  torch::Tensor amax() const { return amax_.defined() ? amax_ : torch::zeros({}); }

 private:
  torch::Tensor amax_;
};

class FakeQuantHook : public LinearHook {
 public:
  // amax values are 0-d float32. The fake-quantized weight is computed once.
  FakeQuantHook(const LinearImpl& layer, Format format, torch::Tensor input_amax, torch::Tensor weight_amax);
  torch::Tensor Forward(LinearImpl& layer, const torch::Tensor& x) override;

 private:
  Format format_;
  torch::Tensor input_amax_;
  torch::Tensor weight_fq_;
};

// For weights already holding dequantized values (scheme checkpoints): only
// the input is fake-quantized, as `format` quantizes inputs.
class InputQuantHook : public LinearHook {
 public:
  InputQuantHook(Format format, torch::Tensor input_amax) : format_(format), input_amax_(std::move(input_amax)) {}
  torch::Tensor Forward(LinearImpl& layer, const torch::Tensor& x) override;

 private:
  Format format_;
  torch::Tensor input_amax_;
};

class ScoreHook : public LinearHook {
 public:
  // One format and (input amax, weight amax) pair per score slot; a format
  // that does not fit this Linear is simply not given a slot by the caller.
  ScoreHook(std::vector<Format> formats, std::vector<torch::Tensor> input_amax, std::vector<torch::Tensor> weight_amax);
  torch::Tensor Forward(LinearImpl& layer, const torch::Tensor& x) override;
  // [formats] float64 accumulated scores.
  const torch::Tensor& scores() const { return scores_; }

 private:
  std::vector<Format> formats_;
  std::vector<torch::Tensor> input_amax_, weight_amax_;
  torch::Tensor scores_;
};

}  // namespace autoquant

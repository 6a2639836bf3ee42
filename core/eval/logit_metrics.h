// The numbers evaluation compares a scheme with the base model by, per
// sample (docs/evaluation.md), and their summaries with 95 % intervals.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace autoquant {

// Next-token negative log-likelihood per sample, over text targets: position
// t predicts token t+1 when both are real tokens (attention_mask) and token
// t+1 is not one of `skip_ids` (image / video placeholders).
// logits: [B, S, V] float32; input_ids: [B, S]; attention_mask: [B, S] or undefined.
struct TokenNll {
  torch::Tensor nll_sum;  // [B] float64
  torch::Tensor tokens;   // [B] int64
};
TokenNll NextTokenNll(const torch::Tensor& logits, const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                      const std::vector<int64_t>& skip_ids);

// [B, V] float32: the logits at each sample's last real token.
torch::Tensor LastTokenLogits(const torch::Tensor& logits, const torch::Tensor& attention_mask);

// Per row of [B, V] float32 logits -> [B] float64.
torch::Tensor LogitMse(const torch::Tensor& base, const torch::Tensor& scheme);
// KL(softmax(base) || softmax(scheme)) per row, computed in float32 -> [B] float64.
torch::Tensor LogitKl(const torch::Tensor& base, const torch::Tensor& scheme);

struct MeanCi {
  double mean = 0, lo = 0, hi = 0;  // lo = hi = mean for n < 2
  int64_t n = 0;
};
// Mean and the 95 % normal-approximation interval mean ± 1.96 s / sqrt(n).
MeanCi MeanWithCi(const std::vector<double>& x);
// Σ num / Σ den with the 95 % interval of a ratio estimator over samples
// (variance Σ (num_i - R den_i)² / (n (n - 1) mean(den)²)).
MeanCi RatioWithCi(const std::vector<double>& num, const std::vector<double>& den);

}  // namespace autoquant

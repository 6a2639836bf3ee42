#include "core/eval/logit_metrics.h"

#include <torch/torch.h>

#include <cmath>

namespace autoquant {
namespace {
constexpr double kZ95 = 1.959963984540054;
}  // namespace

TokenNll NextTokenNll(const torch::Tensor& logits, const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                      const std::vector<int64_t>& skip_ids) {
  const int64_t b = logits.size(0), s = logits.size(1);
  torch::Tensor ids = input_ids.to(logits.device(), torch::kLong);
  torch::Tensor target = ids.slice(1, 1);
  torch::Tensor valid = torch::ones_like(target, torch::kBool);
  if (attention_mask.defined()) {
    torch::Tensor m = attention_mask.to(logits.device()) != 0;
    valid = m.slice(1, 1) & m.slice(1, 0, s - 1);
  }
  for (int64_t id : skip_ids) valid = valid & (target != id);
  torch::Tensor nll = torch::nn::functional::cross_entropy(
      logits.slice(1, 0, s - 1).reshape({-1, logits.size(2)}).to(torch::kFloat32), target.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  nll = nll.reshape({b, s - 1}).to(torch::kFloat64) * valid.to(torch::kFloat64);
  return {nll.sum(1), valid.sum(1).to(torch::kLong)};
}

torch::Tensor LastTokenLogits(const torch::Tensor& logits, const torch::Tensor& attention_mask) {
  const int64_t b = logits.size(0), s = logits.size(1);
  torch::Tensor last;
  if (attention_mask.defined()) {
    torch::Tensor pos = torch::arange(s, torch::TensorOptions().dtype(torch::kLong).device(logits.device()));
    last = ((attention_mask.to(logits.device()) != 0).to(torch::kLong) * pos).argmax(1);
  } else {
    last = torch::full({b}, s - 1, torch::TensorOptions().dtype(torch::kLong).device(logits.device()));
  }
  return logits.index({torch::arange(b, last.options()), last}).to(torch::kFloat32);
}

torch::Tensor LogitMse(const torch::Tensor& base, const torch::Tensor& scheme) {
  return (scheme.to(torch::kFloat32) - base.to(torch::kFloat32)).square().to(torch::kFloat64).mean(-1);
}

torch::Tensor LogitKl(const torch::Tensor& base, const torch::Tensor& scheme) {
  torch::Tensor lp = torch::log_softmax(base.to(torch::kFloat32), -1);
  torch::Tensor lq = torch::log_softmax(scheme.to(torch::kFloat32), -1);
  return (lp.exp() * (lp - lq)).sum(-1).to(torch::kFloat64);
}

MeanCi MeanWithCi(const std::vector<double>& x) {
  MeanCi r;
  r.n = static_cast<int64_t>(x.size());
  if (x.empty()) return r;
  double sum = 0;
  for (double v : x) sum += v;
  r.mean = r.lo = r.hi = sum / r.n;
  if (r.n < 2) return r;
  double ss = 0;
  for (double v : x) ss += (v - r.mean) * (v - r.mean);
  const double half = kZ95 * std::sqrt(ss / (r.n - 1) / r.n);
  r.lo = r.mean - half;
  r.hi = r.mean + half;
  return r;
}

MeanCi RatioWithCi(const std::vector<double>& num, const std::vector<double>& den) {
  MeanCi r;
  r.n = static_cast<int64_t>(num.size());
  double sn = 0, sd = 0;
  for (size_t i = 0; i < num.size(); ++i) {
    sn += num[i];
    sd += den[i];
  }
  if (r.n == 0 || sd <= 0) return r;
  r.mean = r.lo = r.hi = sn / sd;
  if (r.n < 2) return r;
  double ss = 0;
  for (size_t i = 0; i < num.size(); ++i) ss += std::pow(num[i] - r.mean * den[i], 2);
  const double mean_den = sd / r.n;
  const double half = kZ95 * std::sqrt(ss / (r.n * (r.n - 1.0)) / (mean_den * mean_den));
  r.lo = r.mean - half;
  r.hi = r.mean + half;
  return r;
}

}  // namespace autoquant

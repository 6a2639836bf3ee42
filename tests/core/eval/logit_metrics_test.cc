#include "core/eval/logit_metrics.h"

#include <torch/torch.h>

#include <cmath>

#include "gtest/gtest.h"

namespace autoquant {
namespace {

// Loops over positions by hand: what NextTokenNll must equal.
TEST(LogitMetricsTest, NextTokenNllSkipsPaddingAndImageTargets) {
  torch::manual_seed(0);
  const int64_t b = 2, s = 7, v = 11, image = 9;
  torch::Tensor logits = torch::randn({b, s, v});
  torch::Tensor ids = torch::randint(0, 8, {b, s});
  ids[0][3] = image;
  ids[0][4] = image;
  torch::Tensor mask = torch::ones({b, s}, torch::kLong);
  mask[1][0] = 0;  // left padding
  mask[1][1] = 0;
  TokenNll got = NextTokenNll(logits, ids, mask, {image});
  for (int64_t i = 0; i < b; ++i) {
    double sum = 0;
    int64_t n = 0;
    for (int64_t t = 0; t + 1 < s; ++t) {
      if (mask[i][t].item<int64_t>() == 0 || mask[i][t + 1].item<int64_t>() == 0) continue;
      const int64_t target = ids[i][t + 1].item<int64_t>();
      if (target == image) continue;
      sum -= torch::log_softmax(logits[i][t], 0)[target].item<float>();
      ++n;
    }
    EXPECT_NEAR(got.nll_sum[i].item<double>(), sum, 1e-4) << i;
    EXPECT_EQ(got.tokens[i].item<int64_t>(), n) << i;
  }
  EXPECT_EQ(got.tokens[0].item<int64_t>(), 4);  // 6 targets, 2 of them image tokens
  EXPECT_EQ(got.tokens[1].item<int64_t>(), 4);  // 2 padded positions drop 2 targets
}

TEST(LogitMetricsTest, LastTokenIsTheLastRealOne) {
  torch::Tensor logits = torch::arange(2 * 4 * 3, torch::kFloat32).reshape({2, 4, 3});
  torch::Tensor mask = torch::tensor({1, 1, 1, 0, 0, 1, 1, 1}, torch::kLong).reshape({2, 4});  // right pad, left pad
  torch::Tensor last = LastTokenLogits(logits, mask);
  EXPECT_TRUE(torch::equal(last[0], logits[0][2]));
  EXPECT_TRUE(torch::equal(last[1], logits[1][3]));
  EXPECT_TRUE(torch::equal(LastTokenLogits(logits, torch::Tensor())[0], logits[0][3]));
}

TEST(LogitMetricsTest, MseAndKl) {
  torch::manual_seed(1);
  torch::Tensor a = torch::randn({3, 50}), b = a + 0.1 * torch::randn({3, 50});
  EXPECT_NEAR(LogitMse(a, b)[1].item<double>(), (a[1] - b[1]).square().mean().item<float>(), 1e-7);
  torch::Tensor p = torch::softmax(a, -1), q = torch::softmax(b, -1);
  EXPECT_NEAR(LogitKl(a, b)[2].item<double>(), (p[2] * (p[2].log() - q[2].log())).sum().item<float>(), 1e-6);
  EXPECT_GT(LogitKl(a, b).min().item<double>(), 0);
  EXPECT_EQ(LogitKl(a, a).abs().max().item<double>(), 0);
  EXPECT_EQ(LogitMse(a, a).abs().max().item<double>(), 0);
}

TEST(LogitMetricsTest, IntervalsAreTheNormalApproximation) {
  MeanCi m = MeanWithCi({1, 2, 3, 4});
  EXPECT_DOUBLE_EQ(m.mean, 2.5);
  const double half = 1.959963984540054 * std::sqrt(5.0 / 3.0 / 4.0);
  EXPECT_NEAR(m.lo, 2.5 - half, 1e-12);
  EXPECT_NEAR(m.hi, 2.5 + half, 1e-12);
  MeanCi one = MeanWithCi({7});
  EXPECT_EQ(one.lo, 7);
  EXPECT_EQ(one.hi, 7);
  EXPECT_EQ(MeanWithCi({}).n, 0);
  // Ratio: Σnum/Σden, interval from the residuals num_i - R den_i.
  MeanCi r = RatioWithCi({2, 4, 9}, {1, 2, 3});
  EXPECT_DOUBLE_EQ(r.mean, 15.0 / 6.0);
  double ss = 0;
  for (auto [n, d] : {std::pair{2.0, 1.0}, {4.0, 2.0}, {9.0, 3.0}}) ss += std::pow(n - r.mean * d, 2);
  EXPECT_NEAR(r.hi - r.mean, 1.959963984540054 * std::sqrt(ss / 6.0) / 2.0, 1e-12);
  EXPECT_GT(r.hi, r.mean);
}

}  // namespace
}  // namespace autoquant

// KvCache: appends return everything cached so far, growing past the
// capacity keeps the contents, and keys that do not continue the cache throw.
#include "core/model/layers/kv_cache.h"

#include <torch/torch.h>

#include "gtest/gtest.h"

namespace autoquant {
namespace {

TEST(KvCache, AppendsReturnAllTokensAndGrowPastCapacity) {
  torch::InferenceMode guard;
  KvCache cache(/*num_layers=*/2, /*capacity=*/3);
  LayerKvCache& layer = cache.layer(1);
  torch::Tensor k = torch::randn({1, 2, 5, 4}), v = torch::randn({1, 2, 5, 4});
  auto [k2, v2] = layer.Append(k.narrow(2, 0, 2), v.narrow(2, 0, 2));
  EXPECT_EQ(k2.sizes(), (std::vector<int64_t>{1, 2, 2, 4}));
  for (int64_t i = 2; i < 5; ++i) {
    std::tie(k2, v2) = layer.Append(k.narrow(2, i, 1), v.narrow(2, i, 1));
  }
  EXPECT_EQ(layer.length(), 5);
  EXPECT_TRUE(torch::equal(k2, k));
  EXPECT_TRUE(torch::equal(v2, v));
  EXPECT_EQ(cache.layer(0).length(), 0);
  EXPECT_EQ(cache.length(), 0);  // the first layer's count
}

TEST(KvCache, KeysThatDoNotContinueTheCacheThrow) {
  torch::InferenceMode guard;
  LayerKvCache layer(8);
  layer.Append(torch::zeros({1, 2, 3, 4}), torch::zeros({1, 2, 3, 4}));
  EXPECT_THROW(layer.Append(torch::zeros({1, 3, 1, 4}), torch::zeros({1, 3, 1, 4})), c10::Error);
  EXPECT_THROW(layer.Append(torch::zeros({1, 2, 1, 4}, torch::kFloat64), torch::zeros({1, 2, 1, 4}, torch::kFloat64)),
               c10::Error);
  EXPECT_THROW(layer.Append(torch::zeros({1, 2, 1, 4}), torch::zeros({1, 2, 2, 4})), c10::Error);
  EXPECT_EQ(layer.length(), 3);
}

}  // namespace
}  // namespace autoquant

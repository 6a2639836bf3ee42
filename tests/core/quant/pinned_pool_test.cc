// PinnedPool needs the CUDA driver: skipped, with the reason, without a GPU.
#include "core/quant/pinned_pool.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {

#define SKIP_WITHOUT_GPU()                                                                          \
  if (!torch::cuda::is_available()) {                                                               \
    GTEST_SKIP() << "no CUDA device visible: run on the GPU machine with scripts/gpu/run.sh test"; \
  }

TEST(PinnedPoolTest, BuffersAreReusedByTheirSizeClass) {
  SKIP_WITHOUT_GPU();
  PinnedPool pool(64 << 20);
  void* first = nullptr;
  {
    ASSERT_OK_AND_ASSIGN(torch::Tensor a, pool.Empty({1000, 1000}, torch::kFloat8_e4m3fn));  // 1 MB -> 1 MiB class
    EXPECT_TRUE(a.is_pinned());
    first = a.data_ptr();
  }
  EXPECT_EQ(pool.free_bytes(), 1u << 20);
  ASSERT_OK_AND_ASSIGN(torch::Tensor b, pool.Empty({600, 1000}, torch::kByte));  // same class
  EXPECT_EQ(b.data_ptr(), first);
  EXPECT_EQ(pool.allocations(), 1u);
  ASSERT_OK_AND_ASSIGN(torch::Tensor c, pool.Empty({3 << 20}, torch::kByte));  // another class
  EXPECT_EQ(pool.allocations(), 2u);
  EXPECT_EQ(c.numel(), 3 << 20);
}

TEST(PinnedPoolTest, FreeBuffersBeyondTheLimitGoBackToTheDriver) {
  SKIP_WITHOUT_GPU();
  PinnedPool pool(128 << 10);
  {
    std::vector<torch::Tensor> held;
    for (int i = 0; i < 3; ++i) {
      ASSERT_OK_AND_ASSIGN(torch::Tensor t, pool.Empty({64 << 10}, torch::kByte));
      held.push_back(t);
    }
  }
  EXPECT_EQ(pool.free_bytes(), 128u << 10);
}

TEST(PinnedPoolTest, AsynchronousCopiesRoundTrip) {
  SKIP_WITHOUT_GPU();
  torch::manual_seed(0);
  torch::Tensor x = torch::randn({257, 513}, torch::kCUDA).to(torch::kBFloat16);
  ASSERT_OK_AND_ASSIGN(torch::Tensor host, PinnedPool::Shared().Empty(x.sizes(), x.scalar_type()));
  host.copy_(x, /*non_blocking=*/true);
  torch::cuda::synchronize();
  EXPECT_TRUE(torch::equal(host, x.cpu()));
}

}  // namespace
}  // namespace autoquant

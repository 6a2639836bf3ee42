#include "core/scheme/fp8_prefetch.h"

#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;

// Items of 1000 FP8 bytes (plus a 4-byte scale) whose producers count how many ran.
std::vector<Fp8Prefetcher::Producer> Items(int n, std::atomic<int>* produced, int fail_at = -1) {
  std::vector<Fp8Prefetcher::Producer> items;
  for (int i = 0; i < n; ++i) {
    items.push_back([i, produced, fail_at]() -> absl::StatusOr<StoredWeight> {
      if (i == fail_at) return absl::ResourceExhaustedError("out of device memory");
      ++*produced;
      return StoredWeight{torch::full({1000}, float(i)).to(torch::kFloat8_e4m3fn), torch::full({1}, float(i))};
    });
  }
  return items;
}

TEST(Fp8PrefetcherTest, ItemsComeBackInAnyTakeOrder) {
  std::atomic<int> produced{0};
  Fp8Prefetcher p(Items(6, &produced), 1 << 20, /*threads=*/4);
  for (size_t k : {2, 0, 5, 1, 4, 3}) {
    ASSERT_OK_AND_ASSIGN(StoredWeight w, p.Take(k));
    EXPECT_EQ(w.weight_scale.item<float>(), float(k));
    EXPECT_EQ(w.weight.to(torch::kFloat32)[0].item<float>(), float(k));
  }
  EXPECT_EQ(produced.load(), 6);
  EXPECT_EQ(p.Take(3).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(p.Take(6).status().code(), absl::StatusCode::kOutOfRange);
}

// With room for two items, production stays at most two ahead of what was taken.
TEST(Fp8PrefetcherTest, ProductionPausesAtTheBudget) {
  std::atomic<int> produced{0};
  Fp8Prefetcher p(Items(10, &produced), 2 * 1004);
  for (int k = 0; k < 10; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // time to run ahead, were it allowed
    EXPECT_LE(produced.load(), k + 2) << "before taking " << k;
    ASSERT_OK(p.Take(k).status());
  }
  EXPECT_EQ(produced.load(), 10);
}

// Writers on different shards ask for weights far apart while the budget is full of weights nobody asked
// for yet: what is asked for is produced anyway, so every writer finishes.
TEST(Fp8PrefetcherTest, WritersOnDifferentPartsNeverWaitOnEachOther) {
  std::atomic<int> produced{0};
  constexpr int kWriters = 4, kEach = 25;
  Fp8Prefetcher p(Items(kWriters * kEach, &produced), 1004, /*threads=*/3);
  std::vector<std::thread> writers;
  std::atomic<int> good{0};
  for (int w = kWriters - 1; w >= 0; --w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < kEach; ++i) {
        const int k = w * kEach + i;
        absl::StatusOr<StoredWeight> got = p.Take(k);
        if (got.ok() && got->weight_scale.item<float>() == float(k)) ++good;
      }
    });
  }
  for (auto& t : writers) t.join();
  EXPECT_EQ(good.load(), kWriters * kEach);
  EXPECT_EQ(produced.load(), kWriters * kEach);
}

TEST(Fp8PrefetcherTest, AZeroBudgetStillProducesOneAtATime) {
  std::atomic<int> produced{0};
  Fp8Prefetcher p(Items(3, &produced), 0);
  for (int k = 0; k < 3; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_LE(produced.load(), k + 1);
    ASSERT_OK(p.Take(k).status());
  }
}

TEST(Fp8PrefetcherTest, AnErrorIsReturnedForItsItemAndNamedForLaterOnes) {
  std::atomic<int> produced{0};
  Fp8Prefetcher p(Items(5, &produced, /*fail_at=*/2), 1 << 20);
  ASSERT_OK(p.Take(0).status());
  ASSERT_OK(p.Take(1).status());
  absl::Status failed = p.Take(2).status();
  EXPECT_EQ(failed.code(), absl::StatusCode::kResourceExhausted);
  absl::Status later = p.Take(4).status();
  EXPECT_EQ(later.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(later.message(), HasSubstr("an earlier FP8 weight failed: out of device memory"));
  EXPECT_EQ(produced.load(), 2);
}

TEST(Fp8PrefetcherTest, ATorchExceptionBecomesAStatus) {
  std::vector<Fp8Prefetcher::Producer> items = {[]() -> absl::StatusOr<StoredWeight> {
    torch::Tensor a = torch::zeros({2, 3}), b = torch::zeros({4, 5});
    return StoredWeight{torch::matmul(a, b), a};  // shapes do not match: torch throws
  }};
  Fp8Prefetcher p(std::move(items), 1 << 20);
  EXPECT_FALSE(p.Take(0).ok());
}

// A writer that stops early (an error, a cancel) destroys the prefetcher with items untaken and the thread
// waiting for room: destruction returns, and nothing more is produced.
TEST(Fp8PrefetcherTest, DestructionWithUntakenItemsStopsTheThread) {
  std::atomic<int> produced{0};
  {
    Fp8Prefetcher p(Items(100, &produced), 3 * 1004);
    ASSERT_OK(p.Take(0).status());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_LE(produced.load(), 4);
}

}  // namespace
}  // namespace autoquant

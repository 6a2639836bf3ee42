#include "core/util/parallel.h"

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {

TEST(ParallelForTest, CallsEveryIndexOnceOnSeveralThreads) {
  std::vector<std::atomic<int>> calls(1000);
  std::mutex mu;
  std::set<std::thread::id> threads;
  ASSERT_OK(ParallelFor(
      calls.size(),
      [&](size_t i) {
        calls[i]++;
        std::this_thread::sleep_for(std::chrono::microseconds(50));  // long enough that one thread cannot take all
        std::lock_guard<std::mutex> lock(mu);
        threads.insert(std::this_thread::get_id());
        return absl::OkStatus();
      },
      4));
  for (const auto& c : calls) EXPECT_EQ(c.load(), 1);
  EXPECT_GT(threads.size(), 1u);
  EXPECT_LE(threads.size(), 4u);
}

TEST(ParallelForTest, ReturnsTheLowestFailureAndStopsStartingWork) {
  std::atomic<int> started{0};
  absl::Status s = ParallelFor(
      10000,
      [&](size_t i) {
        started++;
        if (i == 7 || i == 9) return absl::DataLossError(absl::StrCat("bad ", i));
        return absl::OkStatus();
      },
      1);  // one thread: the order is deterministic
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), "bad 7");
  EXPECT_EQ(started.load(), 8);
}

TEST(ParallelForTest, NothingToDoIsOk) {
  ASSERT_OK(ParallelFor(0, [](size_t) { return absl::InternalError("never called"); }));
  EXPECT_GE(DefaultParallelism(), 1);
  EXPECT_LE(DefaultParallelism(), 16);
}

}  // namespace
}  // namespace autoquant

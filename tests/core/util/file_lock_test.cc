#include "core/util/file_lock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#include "tests/test_util.h"

namespace autoquant {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

TEST(FileLockTest, ASecondHolderWaitsUntilTheFirstLetsGoAndTheFileGoesWithTheLastHolder) {
  const fs::path path = testing::TempDir() / ".baseline-k.lock";
  std::optional<FileLock> first;
  {
    auto l = FileLock::Acquire(path, nullptr, nullptr);
    ASSERT_TRUE(l.ok()) << l.status();
    first.emplace(*std::move(l));
  }
  std::atomic<bool> second_has_it{false};
  std::atomic<int> waits{0};
  std::thread t([&] {
    auto l = FileLock::Acquire(path, nullptr, [&] { ++waits; });
    ASSERT_TRUE(l.ok()) << l.status();
    second_has_it = true;
  });
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(second_has_it.load());
  first.reset();  // removes the file, then lets go: the waiter starts over on a fresh file
  t.join();
  EXPECT_TRUE(second_has_it.load());
  EXPECT_EQ(waits.load(), 1);
  EXPECT_FALSE(fs::exists(path));  // both let go
}

TEST(FileLockTest, ACancelledWaitEndsCancelledAndLeavesTheHoldersFile) {
  const fs::path path = testing::TempDir() / "x.lock";
  auto held = FileLock::Acquire(path, nullptr, nullptr);
  ASSERT_TRUE(held.ok());
  std::atomic<bool> cancel{false};
  std::thread canceller([&] {
    std::this_thread::sleep_for(200ms);
    cancel = true;
  });
  auto waited = FileLock::Acquire(path, &cancel, nullptr);
  canceller.join();
  EXPECT_EQ(waited.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(fs::exists(path));  // still the holder's
}

TEST(FileLockTest, AnUnopenableLockFileIsAnErrorNamingIt) {
  auto l = FileLock::Acquire(testing::TempDir() / "missing-dir" / "x.lock", nullptr, nullptr);
  EXPECT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("missing-dir"), std::string::npos) << l.status();
}

}  // namespace
}  // namespace autoquant

#include "core/util/file_util.h"

#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;
namespace fs = std::filesystem;

TEST(StagedDirTest, NothingAppearsUntilCommit) {
  auto root = testing::TempDir();
  {
    ASSERT_OK_AND_ASSIGN(StagedDir staged, StagedDir::Create(root / "out", false));
    ASSERT_OK(WriteFileAtomic(staged.path() / "a.txt", "a"));
    EXPECT_FALSE(fs::exists(root / "out"));
  }  // dropped without Commit
  EXPECT_FALSE(fs::exists(root / "out"));
  EXPECT_TRUE(fs::is_empty(root));
}

TEST(StagedDirTest, CommitRenamesIntoPlace) {
  auto root = testing::TempDir();
  ASSERT_OK_AND_ASSIGN(StagedDir staged, StagedDir::Create(root / "out", false));
  ASSERT_OK(WriteFileAtomic(staged.path() / "a.txt", "a"));
  ASSERT_OK(staged.Commit());
  EXPECT_EQ(*ReadFile(root / "out" / "a.txt"), "a");
}

TEST(StagedDirTest, ExistingTargetNeedsOverwrite) {
  auto root = testing::TempDir();
  fs::create_directories(root / "out");
  ASSERT_OK(WriteFileAtomic(root / "out" / "old.txt", "old"));
  auto s = StagedDir::Create(root / "out", false);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(s.status().message(), HasSubstr("--overwrite"));

  ASSERT_OK_AND_ASSIGN(StagedDir staged, StagedDir::Create(root / "out", true));
  ASSERT_OK(WriteFileAtomic(staged.path() / "new.txt", "new"));
  ASSERT_OK(staged.Commit());
  EXPECT_TRUE(fs::exists(root / "out" / "new.txt"));
  EXPECT_FALSE(fs::exists(root / "out" / "old.txt"));
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(root)) ++entries;
  EXPECT_EQ(entries, 1);  // the old directory was removed after the swap
}

TEST(FileUtilTest, ReadMissingFileIsNotFound) {
  auto s = ReadFile("/nonexistent/file");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace autoquant

#include "core/util/path_guard.h"

#include <unistd.h>

#include "core/util/file_util.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;
namespace fs = std::filesystem;

// A base model directory, a calibration file and a (not yet created) baseline cache.
class PathGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::TempDir();
    fs::create_directories(root_ / "base");
    ASSERT_OK(WriteFileAtomic(root_ / "base" / "model.safetensors", "weights"));
    ASSERT_OK(WriteFileAtomic(root_ / "calib.safetensors", "calib"));
    inputs_ = {{root_ / "base", "the base model directory"},
               {root_ / "calib.safetensors", "the calibration file"},
               {root_ / "cache" / "baselines", "the baseline cache"}};
  }
  absl::Status Check(const fs::path& out, bool overwrite = true, OutputKind kind = OutputKind::kDirectory,
                     bool ours = true) {
    return CheckOutputPath({.path = out,
                            .kind = kind,
                            .overwrite = overwrite,
                            .what = "output",
                            .is_ours =
                                [ours](const fs::path&) {
                                  return ours ? absl::OkStatus() : absl::FailedPreconditionError("no manifest");
                                }},
                           inputs_);
  }
  fs::path root_;
  std::vector<ProtectedInput> inputs_;
};

TEST_F(PathGuardTest, FreshOutputBesideTheInputsIsFine) {
  EXPECT_TRUE(Check(root_ / "schemes" / "top10", false).ok());
  EXPECT_TRUE(Check(root_ / "top10", false).ok());
}

TEST_F(PathGuardTest, OutputThatIsAnInputIsRefusedEvenWithOverwriteAndOurMark) {
  for (const fs::path& p : {root_ / "base", root_ / "calib.safetensors"}) {
    absl::Status s = Check(p, /*overwrite=*/true, OutputKind::kDirectory, /*ours=*/true);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << p;
    EXPECT_THAT(s.message(), HasSubstr(" is the ")) << s;
  }
  absl::Status s = Check(root_ / "calib.safetensors", true, OutputKind::kFile);
  EXPECT_THAT(s.message(), HasSubstr("the calibration file"));
}

TEST_F(PathGuardTest, OutputInsideAnInputIsRefused) {
  absl::Status s = Check(root_ / "base" / "top10");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("lies inside the base model directory"));
  // model.safetensors inside the base: what `model forward --output` once overwrote.
  s = Check(root_ / "base" / "model.safetensors", true, OutputKind::kFile);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  // Inside the baseline cache, which does not exist yet.
  s = Check(root_ / "cache" / "baselines" / "x");
  EXPECT_THAT(s.message(), HasSubstr("the baseline cache"));
}

TEST_F(PathGuardTest, OutputContainingAnInputIsRefused) {
  absl::Status s = Check(root_, true);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("contains"));
  // The cache's parent contains the (not yet created) cache.
  s = Check(root_ / "cache", true);
  EXPECT_THAT(s.message(), HasSubstr("contains the baseline cache"));
}

TEST_F(PathGuardTest, DotDotAndSymlinksDoNotGetAround) {
  fs::create_directories(root_ / "elsewhere");
  EXPECT_EQ(Check(root_ / "elsewhere" / ".." / "base").code(), absl::StatusCode::kInvalidArgument);
  fs::create_directory_symlink(root_ / "base", root_ / "link-to-base");
  EXPECT_EQ(Check(root_ / "link-to-base").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Check(root_ / "link-to-base" / "sub").code(), absl::StatusCode::kInvalidArgument);
  fs::create_symlink(root_ / "calib.safetensors", root_ / "link-to-calib");
  EXPECT_EQ(Check(root_ / "link-to-calib", true, OutputKind::kFile).code(), absl::StatusCode::kInvalidArgument);
  // Relative paths resolve against the working directory.
  fs::path cwd = fs::current_path();
  fs::current_path(root_ / "elsewhere");
  absl::Status s = Check("../base/x");
  fs::current_path(cwd);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PathGuardTest, HardLinkToTheCalibrationFileIsRefused) {
  ASSERT_EQ(::link((root_ / "calib.safetensors").c_str(), (root_ / "hard.safetensors").c_str()), 0);
  absl::Status s = Check(root_ / "hard.safetensors", true, OutputKind::kFile);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("the calibration file"));
}

TEST_F(PathGuardTest, ExistingOutputNeedsOverwriteAndOurMark) {
  fs::create_directories(root_ / "top10");
  absl::Status s = Check(root_ / "top10", /*overwrite=*/false);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(s.message(), HasSubstr("--overwrite"));
  s = Check(root_ / "top10", true, OutputKind::kDirectory, /*ours=*/false);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("not a previous output of autoquant (no manifest)"));
  EXPECT_TRUE(Check(root_ / "top10", true, OutputKind::kDirectory, /*ours=*/true).ok());
}

TEST_F(PathGuardTest, AFileIsNeverReplacedByADirectoryOrTheReverse) {
  ASSERT_OK(WriteFileAtomic(root_ / "notes.txt", "mine"));
  absl::Status s = Check(root_ / "notes.txt", true, OutputKind::kDirectory, /*ours=*/true);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("is not a directory"));
  fs::create_directories(root_ / "adir");
  s = Check(root_ / "adir", true, OutputKind::kFile, /*ours=*/true);
  EXPECT_THAT(s.message(), HasSubstr("is not a regular file"));
}

TEST_F(PathGuardTest, ParentMustBeAWritableDirectory) {
  ASSERT_OK(WriteFileAtomic(root_ / "plain", "x"));
  absl::Status s = Check(root_ / "plain" / "top10", false);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("is not a directory"));
}

TEST_F(PathGuardTest, CheckDisjointAlone) {
  EXPECT_TRUE(CheckDisjoint(root_ / "cache2", "baseline cache", inputs_).ok());
  absl::Status s = CheckDisjoint(root_ / "base" / "cache", "baseline cache", inputs_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("baseline cache"));
}

}  // namespace
}  // namespace autoquant

#include "core/util/file_util.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;
namespace fs = std::filesystem;

int CountEntriesIn(const fs::path& dir) {
  int n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

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

TEST(StagedDirTest, TheMarkerStaysOutsideWhatIsPublished) {
  auto root = testing::TempDir();
  ASSERT_OK_AND_ASSIGN(StagedDir staged, StagedDir::Create(root / "out", false));
  ASSERT_OK_AND_ASSIGN(std::string marker, ReadFile(staged.staging() / kStagingMarker));
  EXPECT_THAT(marker, HasSubstr("pid " + std::to_string(::getpid()) + "\n"));
  EXPECT_FALSE(fs::exists(staged.path() / kStagingMarker));
  ASSERT_OK(staged.Commit());
  EXPECT_FALSE(fs::exists(root / "out" / kStagingMarker));
  EXPECT_FALSE(fs::exists(staged.staging()));
}

// Another user who can write in the parent renames the staging directory away
// and puts a symlink to a directory of the victim's in its place, as one who
// wins the race mid-export would: later writes still land in the directory
// created, nothing reaches the victim's, and nothing is published.
TEST(StagedDirTest, WritesGoThroughTheHandleWhenTheStagingNameIsSwappedForASymlink) {
  auto root = testing::TempDir();
  fs::create_directories(root / "victim");
  ASSERT_OK(WriteFileAtomic(root / "victim" / "config.json", "the victim's"));
  std::optional<StagedDir> staged;
  {
    ASSERT_OK_AND_ASSIGN(StagedDir s, StagedDir::Create(root / "out", false));
    staged.emplace(std::move(s));
  }
  ASSERT_OK(WriteFileAtomic(staged->path() / "a.txt", "before"));
  fs::rename(staged->staging(), root / "moved");
  fs::create_directory_symlink(root / "victim", staged->staging());
  ASSERT_OK(WriteFileAtomic(staged->path() / "config.json", "quantized"));
  fs::create_directories(staged->path() / "layer-sensitivity");
  ASSERT_OK(WriteFileAtomic(staged->path() / "layer-sensitivity" / "x.json", "{}"));
  EXPECT_EQ(*ReadFile(root / "victim" / "config.json"), "the victim's");
  EXPECT_FALSE(fs::exists(root / "victim" / "layer-sensitivity"));
  EXPECT_EQ(*ReadFile(root / "moved" / "out" / "config.json"), "quantized");

  absl::Status s = staged->Commit();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("moved or replaced"));
  EXPECT_FALSE(fs::exists(fs::symlink_status(root / "out")));
  const fs::path planted = staged->staging();
  staged.reset();
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(planted)));  // not ours to remove
  EXPECT_EQ(CountEntriesIn(root / "victim"), 1);
  EXPECT_TRUE(fs::is_empty(root / "moved"));  // emptied through the handle
}

// A symlink planted where the scheme will be published is replaced, never
// followed: without overwrite the publish is refused, with it the symlink is
// exchanged for the real directory and removed.
TEST(StagedDirTest, APublishNeverFollowsOrProducesASymlink) {
  auto root = testing::TempDir();
  fs::create_directories(root / "victim");
  ASSERT_OK(WriteFileAtomic(root / "victim" / "keep.txt", "keep"));
  {
    ASSERT_OK_AND_ASSIGN(StagedDir staged, StagedDir::Create(root / "out", false));
    ASSERT_OK(WriteFileAtomic(staged.path() / "a.txt", "a"));
    fs::create_directory_symlink(root / "victim", root / "out");  // planted after the check in Create
    EXPECT_EQ(staged.Commit().code(), absl::StatusCode::kAlreadyExists);
    EXPECT_TRUE(fs::is_symlink(fs::symlink_status(root / "out")));
  }
  ASSERT_OK_AND_ASSIGN(StagedDir staged, StagedDir::Create(root / "out", true));
  ASSERT_OK(WriteFileAtomic(staged.path() / "a.txt", "a"));
  ASSERT_OK(staged.Commit());
  EXPECT_TRUE(fs::is_directory(fs::symlink_status(root / "out")));
  EXPECT_EQ(*ReadFile(root / "out" / "a.txt"), "a");
  EXPECT_EQ(*ReadFile(root / "victim" / "keep.txt"), "keep");
  EXPECT_EQ(CountEntriesIn(root / "victim"), 1);
  EXPECT_EQ(CountEntriesIn(root), 2);  // out, victim: no staging leftover
}

int CountEntries(const fs::path& dir) {
  int n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

// A child process creates a staging directory and dies without cleaning up,
// as a SIGKILLed export would.
TEST(RemoveStaleStagingTest, RemovesADeadProcesssStagingDir) {
  auto root = testing::TempDir();
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto staged = StagedDir::Create(root / "top10", false);
    if (staged.ok()) (void)WriteFileAtomic(staged->path() / "half.safetensors", "partial");
    ::_exit(staged.ok() ? 0 : 1);  // no destructors: the directory stays
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(CountEntries(root), 1);  // the leftover

  ASSERT_OK_AND_ASSIGN(int removed, RemoveStaleStaging(root));
  EXPECT_EQ(removed, 1);
  EXPECT_EQ(CountEntries(root), 0);
}

TEST(RemoveStaleStagingTest, KeepsALiveProcesssStagingDir) {
  auto root = testing::TempDir();
  ASSERT_OK_AND_ASSIGN(StagedDir staged, StagedDir::Create(root / "top10", false));
  ASSERT_OK_AND_ASSIGN(int removed, RemoveStaleStaging(root));
  EXPECT_EQ(removed, 0);
  EXPECT_TRUE(fs::exists(staged.path()));
}

TEST(RemoveStaleStagingTest, AReusedPidIsNotTakenForTheOwner) {
  auto root = testing::TempDir();
  // Our own pid, but a start time that is not ours: the pid was reused.
  fs::path fake = root / ".top10.tmp-abc123";
  fs::create_directories(fake);
  ASSERT_OK(WriteFileAtomic(fake / kStagingMarker, "pid " + std::to_string(::getpid()) + "\nstart 1\nboot \n"));
  ASSERT_OK_AND_ASSIGN(int removed, RemoveStaleStaging(root));
  EXPECT_EQ(removed, 1);
  EXPECT_FALSE(fs::exists(fake));
}

TEST(RemoveStaleStagingTest, KeepsAStagingDirOfAnotherHostOrPidNamespace) {
  // Fleet daemons share a models volume across machines and containers: a pid recorded there says
  // nothing about this machine's processes, so such a directory is never judged dead.
  fs::path root = testing::TempDir();
  const std::string dead = "pid 999999\nstart 1\nboot \n";
  fs::create_directories(root / ".a.tmp-000001");
  ASSERT_OK(WriteFileAtomic(root / ".a.tmp-000001" / kStagingMarker, dead + "host some-other-host\n"));
  fs::create_directories(root / ".b.tmp-000002");
  ASSERT_OK(WriteFileAtomic(root / ".b.tmp-000002" / kStagingMarker, dead + "pidns pid:[1]\n"));
  fs::create_directories(root / ".c.tmp-000003");  // this host and namespace, dead pid: goes
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  ASSERT_OK(
      WriteFileAtomic(root / ".c.tmp-000003" / kStagingMarker,
                      dead + "host " + host + "\npidns " + fs::read_symlink("/proc/self/ns/pid").string() + "\n"));
  ASSERT_OK_AND_ASSIGN(int removed, RemoveStaleStaging(root));
  EXPECT_EQ(removed, 1);
  EXPECT_TRUE(fs::exists(root / ".a.tmp-000001"));
  EXPECT_TRUE(fs::exists(root / ".b.tmp-000002"));
  EXPECT_FALSE(fs::exists(root / ".c.tmp-000003"));
}

TEST(RemoveStaleStagingTest, LeavesEverythingThatIsNotOurStagingAlone) {
  auto root = testing::TempDir();
  // Right name, no marker (someone else's); a marker but a normal name; a symlink to a marked dir.
  fs::create_directories(root / ".data.tmp-00ff00");
  fs::create_directories(root / "top10");
  const std::string dead = "pid 999999999\nstart 1\nboot x\n";
  ASSERT_OK(WriteFileAtomic(root / "top10" / kStagingMarker, dead));
  fs::create_directories(root / "elsewhere" / ".x.tmp-aaaaaa");
  ASSERT_OK(WriteFileAtomic(root / "elsewhere" / ".x.tmp-aaaaaa" / kStagingMarker, dead));
  fs::create_directory_symlink(root / "elsewhere" / ".x.tmp-aaaaaa", root / ".y.tmp-bbbbbb");
  ASSERT_OK(WriteFileAtomic(root / ".z.tmp-cccccc", dead));  // a file, not a directory
  ASSERT_OK_AND_ASSIGN(int removed, RemoveStaleStaging(root));
  EXPECT_EQ(removed, 0);
  EXPECT_EQ(CountEntries(root), 5);
  EXPECT_TRUE(fs::exists(root / "elsewhere" / ".x.tmp-aaaaaa" / kStagingMarker));
  ASSERT_OK_AND_ASSIGN(int missing, RemoveStaleStaging(root / "no-such-dir"));
  EXPECT_EQ(missing, 0);
}

TEST(RemoveStaleStagingTest, AnOldStagingDirWithAnIncompleteMarkerAndNothingElseGoes) {
  auto root = testing::TempDir();
  // Killed right after mkdir, and while writing the marker.
  fs::create_directories(root / ".a.tmp-000001");
  fs::create_directories(root / ".b.tmp-000002");
  ASSERT_OK(WriteFileAtomic(root / ".b.tmp-000002" / kStagingMarker, ""));
  // Unmarked but holding data: not provably ours, kept.
  fs::create_directories(root / ".c.tmp-000003");
  ASSERT_OK(WriteFileAtomic(root / ".c.tmp-000003" / "data", "x"));
  ASSERT_OK_AND_ASSIGN(int young, RemoveStaleStaging(root));
  EXPECT_EQ(young, 0);  // a live process may be about to write its marker
  for (const char* d : {".a.tmp-000001", ".b.tmp-000002", ".c.tmp-000003"}) {
    fs::last_write_time(root / d, fs::file_time_type::clock::now() - std::chrono::minutes(5));
  }
  ASSERT_OK_AND_ASSIGN(int removed, RemoveStaleStaging(root));
  EXPECT_EQ(removed, 2);
  EXPECT_TRUE(fs::exists(root / ".c.tmp-000003" / "data"));
  EXPECT_EQ(CountEntries(root), 1);
}

TEST(RemoveStaleStagingTest, AnUnmarkedEmptyStagingDirOfADeadPidGoesAtOnce) {
  auto root = testing::TempDir();
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);  // reaped: the pid runs nothing now
  const std::string dead = absl::StrCat(".d.tmp-", child, "-00000a");
  const std::string live = absl::StrCat(".l.tmp-", ::getpid(), "-00000b");
  fs::create_directories(root / dead);  // killed between mkdir and its marker
  fs::create_directories(root / live);  // we might be about to write its marker
  ASSERT_OK_AND_ASSIGN(int removed, RemoveStaleStaging(root));
  EXPECT_EQ(removed, 1);
  EXPECT_FALSE(fs::exists(root / dead));
  EXPECT_TRUE(fs::exists(root / live));
}

// A staging directory is created under a name that names its owner and
// renamed to its staging name once its marker is complete, so a kill at any
// point leaves a leftover whose owner can be told at once, whatever pid runs
// now: here our own pid with another start time, as a pid reused since.
TEST(RemoveStaleStagingTest, AStagingDirCutOffBeforeItsMarkerGoesAtOnceWhateverRunsUnderItsPid) {
  auto root = testing::TempDir();
  const std::string me = TempFilePath(root / "x").filename().string();
  const std::string owner = me.substr(me.find(".owner-"));
  const std::string boot = owner.substr(owner.rfind('-') + 1);
  const std::string reused = absl::StrCat(".owner-", ::getpid(), "-1-", boot);
  fs::create_directories(root / (absl::StrCat(".a.tmp-", ::getpid(), "-00000a") + reused));  // before the marker
  fs::create_directories(root / (absl::StrCat(".b.tmp-", ::getpid(), "-00000b") + reused) / "b");
  ASSERT_OK(WriteFileAtomic(root / (absl::StrCat(".b.tmp-", ::getpid(), "-00000b") + reused) / kStagingMarker,
                            "pid 1"));  // a partial marker
  const std::string live = absl::StrCat(".c.tmp-", ::getpid(), "-00000c") + owner;
  fs::create_directories(root / live);  // ours, about to write its marker
  ASSERT_OK_AND_ASSIGN(int removed, RemoveStaleStaging(root));
  EXPECT_EQ(removed, 2);
  EXPECT_EQ(CountEntries(root), 1);
  EXPECT_TRUE(fs::exists(root / live));
}

TEST(StagedDirTest, NoStagingNamedDirectoryEverLacksACompleteMarker) {
  auto root = testing::TempDir();
  for (int i = 0; i < 20; ++i) {
    ASSERT_OK_AND_ASSIGN(StagedDir staged, StagedDir::Create(root / "out", false));
    ASSERT_OK_AND_ASSIGN(std::string marker, ReadFile(staged.staging() / kStagingMarker));
    EXPECT_THAT(marker, HasSubstr("pidns "));  // the last line: complete
    EXPECT_THAT(staged.staging().filename().string(), ::testing::MatchesRegex(R"(\.out\.tmp-[0-9]+-[0-9a-f]{6})"));
  }
  EXPECT_TRUE(fs::is_empty(root));
}

TEST(FileUtilTest, TempSiblingNamesCarryThePid) {
  const std::string name = TempSiblingPath("/models/top10").filename().string();
  EXPECT_TRUE(absl::StartsWith(name, absl::StrCat(".top10.tmp-", ::getpid(), "-"))) << name;
}

TEST(TempFilePathTest, NamesThisProcessAndStaysHidden) {
  const fs::path p = TempFilePath(fs::path("/out") / "calib.safetensors");
  EXPECT_EQ(p.parent_path(), fs::path("/out"));
  const std::string name = p.filename().string();
  EXPECT_THAT(name, ::testing::MatchesRegex(
                        R"(\.calib\.safetensors\.tmp-[0-9]+-[0-9a-f]{6}\.owner-[0-9]+-[0-9]+-[0-9a-f]{8})"));
  EXPECT_THAT(name, HasSubstr(".owner-" + std::to_string(::getpid()) + "-"));
  EXPECT_NE(p.extension(), ".safetensors");  // never taken for a shard or an output
  EXPECT_NE(TempFilePath("/out/calib.safetensors"), p);
}

// WriteFileAtomic's temporary file, left by a writer killed before the
// rename, is removed; one of a live process is kept.
TEST(RemoveStaleStagingTest, RemovesADeadProcesssTemporaryFileOnly) {
  auto root = testing::TempDir();
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // What WriteFileAtomic does up to the rename.
    const fs::path tmp = TempFilePath(root / "baseline-k.json");
    FILE* f = std::fopen(tmp.c_str(), "w");
    ::_exit(f != nullptr && std::fputs("{\"half\":", f) >= 0 && std::fclose(f) == 0 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(CountEntries(root), 1);
  const fs::path mine = TempFilePath(root / "other.json");
  ASSERT_OK(WriteFileAtomic(mine, "live"));  // stands in for a live writer's temporary file
  ASSERT_OK_AND_ASSIGN(int removed, RemoveStaleStaging(root));
  EXPECT_EQ(removed, 1);
  EXPECT_EQ(CountEntries(root), 1);
  EXPECT_TRUE(fs::exists(mine));
}

TEST(RemoveStaleStagingTest, ATemporaryFileOfAReusedPidOrAnotherBootGoes) {
  auto root = testing::TempDir();
  const std::string me = TempFilePath(root / "x").filename().string();
  const std::string owner = me.substr(me.find(".owner-"));  // ".owner-PID-START-BOOT"
  const std::string pid = std::to_string(::getpid());
  const std::string boot = owner.substr(owner.rfind('-') + 1);
  ASSERT_OK(WriteFileAtomic(root / (".a.tmp-000001" + owner), "ours, alive"));
  ASSERT_OK(WriteFileAtomic(root / (".b.tmp-000002.owner-" + pid + "-1-" + boot), "reused pid"));
  ASSERT_OK(WriteFileAtomic(root / (".c.tmp-000003" + owner.substr(0, owner.size() - boot.size()) +
                                    (boot == "00000000" ? "11111111" : "00000000")),
                            "another boot"));
  ASSERT_OK_AND_ASSIGN(int removed, RemoveStaleStaging(root));
  EXPECT_EQ(removed, 2);
  EXPECT_EQ(CountEntries(root), 1);
  EXPECT_TRUE(fs::exists(root / (".a.tmp-000001" + owner)));
}

TEST(RemoveStaleStagingTest, LeavesAnythingButARegularTemporaryFileWithItsOwnerInTheNameAlone) {
  auto root = testing::TempDir();
  fs::create_directories(root / "elsewhere");
  const std::string dead = ".owner-999999999-1-00000000";
  ASSERT_OK(WriteFileAtomic(root / ".z.tmp-cccccc", "no owner in the name"));
  ASSERT_OK(WriteFileAtomic(root / ("notes" + dead), "not a temporary name"));
  ASSERT_OK(WriteFileAtomic(root / "elsewhere" / (".t.tmp-aaaaaa" + dead), "behind a symlink"));
  fs::create_symlink(root / "elsewhere" / (".t.tmp-aaaaaa" + dead), root / (".s.tmp-bbbbbb" + dead));
  fs::create_directories(root / (".d.tmp-dddddd" + dead) / "data");  // a directory, not a file
  ASSERT_OK_AND_ASSIGN(int removed, RemoveStaleStaging(root));
  EXPECT_EQ(removed, 0);
  EXPECT_EQ(CountEntries(root), 5);
  EXPECT_TRUE(fs::exists(root / "elsewhere" / (".t.tmp-aaaaaa" + dead)));
}

TEST(FileUtilTest, ReadFileRefusesAFifoAtOnce) {
  auto root = testing::TempDir();
  ASSERT_EQ(::mkfifo((root / "manifest.json").c_str(), 0644), 0);
  auto s = ReadFile(root / "manifest.json");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition) << s.status();
}

TEST(FileUtilTest, ReadMissingFileIsNotFound) {
  auto s = ReadFile("/nonexistent/file");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace autoquant

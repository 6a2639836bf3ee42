#include "core/io/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/io/safetensors_file.h"
#include "core/util/file_util.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;
namespace fs = std::filesystem;

// The daemon's records, in memory (the job stores keep them in SQLite or PostgreSQL).
class MapRecords : public BlobRecords {
 public:
  absl::StatusOr<std::optional<BlobRecord>> LookupBlob(const std::string& key) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return std::optional<BlobRecord>();
    return std::optional<BlobRecord>(it->second);
  }
  absl::Status RecordBlob(const std::string& key, const BlobRecord& record) override {
    std::lock_guard<std::mutex> lock(mu_);
    map_[key] = record;
    return absl::OkStatus();
  }
  std::mutex mu_;
  std::map<std::string, BlobRecord> map_;
};

// `scale` multiplies the FP8 weight's scale: a tampered piece with the same names, dtypes and shapes.
std::vector<BlobTensor> Tensors(int seed, float scale = 1.0f) {
  torch::manual_seed(seed);
  torch::Tensor w = torch::randn({16, 8}).to(torch::kBFloat16);
  torch::Tensor q = (torch::randn({4, 8}) * 10).to(torch::kFloat8_e4m3fn);
  torch::Tensor s = torch::tensor({0.25f * scale});
  return {{{"a.weight", DType::kBF16, {16, 8}}, w},
          {{"b.weight", DType::kF8E4M3, {4, 8}}, q},
          {{"b.weight_scale", DType::kF32, {1}}, s}};
}

std::string Key(absl::string_view what) { return *BlobKey(what); }

uint64_t DataStart(const fs::path& path) {
  auto file = SafetensorsFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? (*file)->header().data_start : 0;
}

void FlipByte(const fs::path& path, uint64_t offset) {
  fs::permissions(path, fs::perms::owner_write, fs::perm_options::add);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c ^= 0x5a;
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

DirHandle OpenDir(const fs::path& path) {
  fs::create_directories(path);
  auto d = DirHandle::Open(path);
  EXPECT_TRUE(d.ok()) << d.status();
  return *std::move(d);
}

ino_t Inode(const fs::path& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

TEST(BlobStoreTest, PutWritesAReadOnlyBlobNamedByItsHeaderAndFindReturnsItThroughTheRecord) {
  fs::path root = testing::TempDir() / "blobs";
  MapRecords records;
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  EXPECT_TRUE(absl::IsNotFound(store.Find(records, Key("x")).status()));
  bool written = false;
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0), &records, &written));
  EXPECT_TRUE(written);
  EXPECT_EQ(put.path, root / "sha256" / (put.id + ".safetensors"));
  EXPECT_EQ(put.tensors.size(), 3u);
  EXPECT_EQ(records.map_.at(Key("x")), (BlobRecord{put.id, fs::file_size(put.path)}));
  struct stat st;
  ASSERT_EQ(::stat(put.path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  // The file is an ordinary safetensors file with the tensors' bytes.
  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(put.path));
  ASSERT_OK_AND_ASSIGN(torch::Tensor a, file->Get("a.weight"));
  EXPECT_TRUE(torch::equal(a, Tensors(0)[0].value));
  EXPECT_EQ(file->metadata().at("format"), "pt");
  EXPECT_EQ(file->metadata().at("sha256:a.weight"), put.sha256.at("a.weight"));

  ASSERT_OK_AND_ASSIGN(Blob found, store.Find(records, Key("x")));
  EXPECT_EQ(found.id, put.id);
  EXPECT_EQ(found.sha256, put.sha256);
  // A fresh store (another process) agrees.
  ASSERT_OK_AND_ASSIGN(BlobStore other, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob again, other.Find(records, Key("x")));
  EXPECT_EQ(again.id, put.id);
}

// A job store on a full disk: lookups work, records are refused.
class FullRecords : public MapRecords {
 public:
  absl::Status RecordBlob(const std::string&, const BlobRecord&) override {
    return absl::ResourceExhaustedError("the disk holding the job store is full");
  }
};

TEST(BlobStoreTest, ARecordTheJobStoreCannotKeepDoesNotFailThePutOnlyLosesReuse) {
  fs::path root = testing::TempDir() / "blobs-unrecorded";
  FullRecords records;
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  bool written = false;
  absl::Status unrecorded;
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0), &records, &written, &unrecorded));
  EXPECT_TRUE(written);
  EXPECT_TRUE(absl::IsResourceExhausted(unrecorded)) << unrecorded;
  ASSERT_OK(BlobStore::VerifyFile(put.path).status());
  EXPECT_TRUE(absl::IsNotFound(store.Find(records, Key("x")).status()));
}

TEST(BlobStoreTest, EqualContentGivesOneBlobAndOtherContentAnother) {
  fs::path root = testing::TempDir() / "blobs";
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob a, store.Put(Key("a"), Tensors(0)));
  ASSERT_OK_AND_ASSIGN(Blob b, store.Put(Key("b"), Tensors(0)));
  ASSERT_OK_AND_ASSIGN(Blob c, store.Put(Key("c"), Tensors(1)));
  EXPECT_EQ(a.id, b.id);
  EXPECT_NE(a.id, c.id);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(root / "sha256")) files += e.is_regular_file();
  EXPECT_EQ(files, 2u);
}

// Issue 23: another user who can write the models root plants a blob that checks out against itself (its
// name hashes its header, its header holds its tensors' digests) with the FP8 scale x64, and a refs/ entry
// naming it for the key the daemon will ask for. Neither is used.
TEST(BlobStoreTest, APlantedSelfConsistentBlobAndItsRefAreNotUsed) {
  fs::path root = testing::TempDir() / "blobs";
  {
    ASSERT_OK_AND_ASSIGN(BlobStore attacker, BlobStore::Open(root));
    ASSERT_OK_AND_ASSIGN(Blob planted, attacker.Put(Key("x"), Tensors(0, /*scale=*/64)));
    ASSERT_OK(BlobStore::VerifyFile(planted.path).status());  // self-consistent
    fs::create_directories(root / "refs");
    ASSERT_OK(WriteFileAtomic(root / "refs" / Key("x"), planted.id + "\n"));
  }
  MapRecords records;  // the daemon recorded nothing for the key
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  auto found = store.Find(records, Key("x"));
  ASSERT_TRUE(absl::IsNotFound(found.status())) << found.status();
  // So the piece is produced; the blob is the one its tensors hash to, never the planted one.
  bool written = false;
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0), &records, &written));
  EXPECT_TRUE(written);
  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(put.path));
  ASSERT_OK_AND_ASSIGN(torch::Tensor scale, file->Get("b.weight_scale"));
  EXPECT_TRUE(torch::equal(scale, Tensors(0)[2].value)) << scale;
  ASSERT_OK_AND_ASSIGN(Blob again, store.Find(records, Key("x")));
  EXPECT_EQ(again.id, put.id);
}

TEST(BlobStoreTest, ABlobIsFoundByKeyOnlyThroughTheDaemonsRecord) {
  fs::path root = testing::TempDir() / "blobs";
  MapRecords records, other;
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0), &records));
  ASSERT_OK(store.Find(records, Key("x")).status());
  // The file is there, but these records never saw it.
  EXPECT_TRUE(absl::IsNotFound(store.Find(other, Key("x")).status()));
  // A record whose size the file does not have.
  other.map_[Key("x")] = BlobRecord{put.id, fs::file_size(put.path) + 1};
  auto sized = store.Find(other, Key("x"));
  ASSERT_TRUE(absl::IsDataLoss(sized.status())) << sized.status();
  EXPECT_THAT(sized.status().message(), HasSubstr("were recorded"));
  // A record that names no blob id, or a blob that is gone.
  other.map_[Key("y")] = BlobRecord{"../../etc/passwd", 1};
  EXPECT_TRUE(absl::IsDataLoss(store.Find(other, Key("y")).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store.Find(records, "../etc/passwd").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store.Put("nothex", Tensors(0)).status()));
  fs::remove(put.path);
  EXPECT_TRUE(absl::IsNotFound(store.Find(records, Key("x")).status()));
}

TEST(BlobStoreTest, WithoutARecordAnExistingFileIsReusedOnlyIfItVerifiesInFull) {
  fs::path root = testing::TempDir() / "blobs";
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  bool written = false;
  ASSERT_OK_AND_ASSIGN(Blob first, store.Put(Key("x"), Tensors(0), nullptr, &written));
  EXPECT_TRUE(written);
  // Equal content, another process: verified in full, kept (same file).
  ASSERT_OK_AND_ASSIGN(BlobStore fresh, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob same, fresh.Put(Key("other-key"), Tensors(0), nullptr, &written));
  EXPECT_FALSE(written);
  EXPECT_EQ(same.id, first.id);
  EXPECT_EQ(Inode(same.path), Inode(first.path));
  // A file of that id whose tensor bytes changed: written again, as a new file that verifies.
  const ino_t damaged = Inode(first.path);
  FlipByte(first.path, DataStart(first.path) + 3);
  ASSERT_OK_AND_ASSIGN(Blob rewritten, store.Put(Key("x"), Tensors(0), nullptr, &written));
  EXPECT_TRUE(written);
  EXPECT_EQ(rewritten.id, first.id);
  EXPECT_NE(Inode(rewritten.path), damaged) << "kept the damaged file";
  ASSERT_OK(BlobStore::VerifyFile(rewritten.path).status());
  // Bytes after the tensors are not covered by any digest: such a file is not reused either.
  {
    fs::permissions(rewritten.path, fs::perms::owner_write, fs::perm_options::add);
    std::ofstream(rewritten.path, std::ios::app | std::ios::binary) << "trailing";
    fs::permissions(rewritten.path, fs::perms::owner_write, fs::perm_options::remove);
  }
  auto trailing = BlobStore::VerifyFile(rewritten.path);
  ASSERT_TRUE(absl::IsDataLoss(trailing.status())) << trailing.status();
  ASSERT_OK_AND_ASSIGN(Blob clean, store.Put(Key("x"), Tensors(0), nullptr, &written));
  EXPECT_TRUE(written);
  ASSERT_OK(BlobStore::VerifyFile(clean.path).status());
}

TEST(BlobStoreTest, AFileOthersCanWriteOrAnotherUserOwnsIsNeverUsed) {
  fs::path root = testing::TempDir() / "blobs";
  MapRecords records;
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0), &records));
  ASSERT_EQ(::chmod(put.path.c_str(), 0666), 0);
  auto writable = store.Find(records, Key("x"));
  ASSERT_TRUE(absl::IsDataLoss(writable.status())) << writable.status();
  EXPECT_THAT(writable.status().message(), HasSubstr("writable by group or others"));
  bool written = false;
  ASSERT_OK_AND_ASSIGN(Blob replaced, store.Put(Key("x"), Tensors(0), &records, &written));
  EXPECT_TRUE(written);
  struct stat st;
  ASSERT_EQ(::stat(replaced.path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  if (::geteuid() != 0) GTEST_SKIP() << "giving a file to another user needs root";
  ASSERT_EQ(::chown(replaced.path.c_str(), 65534, 65534), 0);
  auto foreign = store.Find(records, Key("x"));
  ASSERT_TRUE(absl::IsDataLoss(foreign.status())) << foreign.status();
  EXPECT_THAT(foreign.status().message(), HasSubstr("owned by uid 65534"));
  ASSERT_OK_AND_ASSIGN(Blob ours, store.Put(Key("x"), Tensors(0), &records, &written));
  EXPECT_TRUE(written);
  ASSERT_EQ(::stat(ours.path.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, ::geteuid());
}

TEST(BlobStoreTest, DamagedBlobIsReportedThenReplacedByPut) {
  fs::path root = testing::TempDir() / "blobs";
  MapRecords records;
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0), &records));
  DirHandle dir = OpenDir(testing::TempDir() / "scheme");
  ASSERT_OK(store.Place(put, dir).status());
  FlipByte(put.path, DataStart(put.path) + 3);  // a byte of a.weight, in place: the scheme's link sees it too

  ASSERT_OK_AND_ASSIGN(BlobStore fresh, BlobStore::Open(root));
  auto found = fresh.Find(records, Key("x"));
  ASSERT_TRUE(absl::IsDataLoss(found.status())) << found.status();
  EXPECT_THAT(found.status().message(), HasSubstr("'a.weight' does not match its recorded SHA-256"));
  // The same store notices too: the rewrite changed the file's stamp.
  EXPECT_TRUE(absl::IsDataLoss(store.Find(records, Key("x")).status()));

  ASSERT_OK_AND_ASSIGN(Blob again, fresh.Put(Key("x"), Tensors(0), &records));
  EXPECT_EQ(again.id, put.id);
  ASSERT_OK(BlobStore::VerifyFile(again.path).status());
  // The scheme that linked the damaged file keeps it (a different inode now): diff reports it.
  EXPECT_NE(Inode(dir.path() / put.FileName()), Inode(again.path));
}

// The verification cache trusts a blob while its stamp is unchanged. An edit in place with the mtime set
// back (utimensat) keeps the inode, size and mtime; the ctime, which nobody can set back, gives it away.
TEST(BlobStoreTest, AnInPlaceEditWithItsMtimeRestoredIsDetected) {
  fs::path root = testing::TempDir() / "blobs";
  MapRecords records;
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0), &records));
  ASSERT_OK(store.Find(records, Key("x")).status());  // verified and remembered
  struct stat before;
  ASSERT_EQ(::stat(put.path.c_str(), &before), 0);
  // Kernels without multigrain timestamps stamp a change with the coarse clock tick it falls in.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(::chmod(put.path.c_str(), 0644), 0);
  {
    const off_t at = static_cast<off_t>(DataStart(put.path) + 3);
    const int fd = ::open(put.path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char c = 0;
    ASSERT_EQ(::pread(fd, &c, 1, at), 1);
    c ^= 0x5a;
    ASSERT_EQ(::pwrite(fd, &c, 1, at), 1);
    ::close(fd);
  }
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, put.path.c_str(), times, 0), 0);
  ASSERT_EQ(::chmod(put.path.c_str(), 0444), 0);
  struct stat after;
  ASSERT_EQ(::stat(put.path.c_str(), &after), 0);
  ASSERT_EQ(after.st_ino, before.st_ino);
  ASSERT_EQ(after.st_size, before.st_size);
  ASSERT_EQ(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
  ASSERT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);

  auto found = store.Find(records, Key("x"));
  ASSERT_TRUE(absl::IsDataLoss(found.status())) << found.status();
  EXPECT_THAT(found.status().message(), HasSubstr("does not match its recorded SHA-256"));
}

TEST(BlobStoreTest, SymlinkedStoreDirectoriesAreRefusedAndNothingIsWrittenThrough) {
  fs::path models = testing::TempDir();
  fs::path elsewhere = testing::TempDir();
  fs::create_directories(models / ".autoquant");
  fs::create_directory_symlink(elsewhere, models / ".autoquant" / "blobs");
  auto opened = BlobStore::Open(models, ".autoquant/blobs");
  ASSERT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition) << opened.status();
  EXPECT_THAT(opened.status().message(), HasSubstr((models / ".autoquant" / "blobs").string() + " is a symbolic link"));
  EXPECT_THAT(opened.status().message(), HasSubstr("Remove the link"));
  EXPECT_TRUE(fs::is_empty(elsewhere));

  // sha256/ as a link, below a real store directory.
  fs::remove(models / ".autoquant" / "blobs");
  fs::create_directories(models / ".autoquant" / "blobs");
  fs::create_directory_symlink(elsewhere, models / ".autoquant" / "blobs" / "sha256");
  opened = BlobStore::Open(models, ".autoquant/blobs");
  ASSERT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition) << opened.status();
  EXPECT_THAT(opened.status().message(), HasSubstr("sha256 is a symbolic link"));
  EXPECT_TRUE(fs::is_empty(elsewhere));

  // .autoquant itself as a link.
  fs::remove_all(models / ".autoquant");
  fs::create_directory_symlink(elsewhere, models / ".autoquant");
  opened = BlobStore::Open(models, ".autoquant/blobs");
  ASSERT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition) << opened.status();
  EXPECT_TRUE(fs::is_empty(elsewhere));

  // A store held open writes into the directory it opened, whatever its name points at later.
  fs::remove(models / ".autoquant");
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(models, ".autoquant/blobs"));
  fs::rename(models / ".autoquant", models / "moved");
  fs::create_directory_symlink(elsewhere, models / ".autoquant");
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0)));
  EXPECT_TRUE(fs::is_empty(elsewhere));
  EXPECT_TRUE(fs::exists(models / "moved" / "blobs" / "sha256" / (put.id + ".safetensors")));
}

TEST(BlobStoreTest, ASymlinkOrFifoWithABlobsNameIsReplacedNotFollowed) {
  fs::path root = testing::TempDir() / "blobs";
  fs::path target = testing::TempDir() / "target.safetensors";
  MapRecords records;
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0), &records));
  fs::copy_file(put.path, target);
  fs::remove(put.path);
  fs::create_symlink(target, put.path);
  auto found = store.Find(records, Key("x"));
  ASSERT_EQ(found.status().code(), absl::StatusCode::kFailedPrecondition) << found.status();
  bool written = false;
  ASSERT_OK_AND_ASSIGN(Blob again, store.Put(Key("x"), Tensors(0), &records, &written));
  EXPECT_TRUE(written);
  EXPECT_FALSE(fs::is_symlink(put.path));
  fs::remove(put.path);
  ASSERT_EQ(::mkfifo(put.path.c_str(), 0644), 0);
  found = store.Find(records, Key("x"));  // at once, not blocked in open()
  ASSERT_EQ(found.status().code(), absl::StatusCode::kFailedPrecondition) << found.status();
  ASSERT_OK(store.Put(Key("x"), Tensors(0), &records).status());
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(put.path)));
}

TEST(BlobStoreTest, ChangedHeaderIsDataLoss) {
  fs::path root = testing::TempDir() / "blobs";
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0)));
  FlipByte(put.path, 20);  // inside the JSON header
  auto v = BlobStore::VerifyFile(put.path);
  ASSERT_TRUE(absl::IsDataLoss(v.status())) << v.status();
}

TEST(BlobStoreTest, PlaceLinksAndDeletingOneSchemeLeavesTheOther) {
  fs::path root = testing::TempDir() / "blobs";
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0)));
  fs::path one = testing::TempDir() / "one", two = testing::TempDir() / "two";
  ASSERT_OK_AND_ASSIGN(BlobPlacement p1, store.Place(put, OpenDir(one)));
  ASSERT_OK_AND_ASSIGN(BlobPlacement p2, store.Place(put, OpenDir(two)));
  EXPECT_EQ(p1, BlobPlacement::kLinked);
  EXPECT_EQ(p2, BlobPlacement::kLinked);
  EXPECT_EQ(fs::hard_link_count(put.path), 3u);
  fs::remove_all(one);
  EXPECT_EQ(fs::hard_link_count(put.path), 2u);
  ASSERT_OK(BlobStore::VerifyFile(root / "sha256" / (put.id + ".safetensors")).status());
  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(two / put.FileName()));
  ASSERT_OK_AND_ASSIGN(torch::Tensor a, file->Get("a.weight"));
  EXPECT_TRUE(torch::equal(a, Tensors(0)[0].value));
}

TEST(BlobStoreTest, PlaceLinksTheVerifiedFileNotWhateverHasItsNameNow) {
  fs::path root = testing::TempDir() / "blobs";
  MapRecords records;
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0), &records));
  ASSERT_OK_AND_ASSIGN(Blob found, store.Find(records, Key("x")));
  // Swapped after the verification: a tampered file of another id renamed onto the name.
  ASSERT_OK_AND_ASSIGN(Blob other, store.Put(Key("y"), Tensors(0, /*scale=*/64)));
  fs::rename(other.path, found.path);
  DirHandle dir = OpenDir(testing::TempDir() / "scheme");
  auto placed = store.Place(found, dir);
  ASSERT_TRUE(absl::IsDataLoss(placed.status())) << placed.status();
  EXPECT_TRUE(fs::is_empty(dir.path()));
  // A copy comes from the verified file itself.
  ASSERT_OK_AND_ASSIGN(BlobPlacement copied, store.Place(found, dir, /*allow_links=*/false));
  EXPECT_EQ(copied, BlobPlacement::kCopied);
  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(dir.path() / found.FileName()));
  ASSERT_OK_AND_ASSIGN(torch::Tensor scale, file->Get("b.weight_scale"));
  EXPECT_TRUE(torch::equal(scale, Tensors(0)[2].value));
}

TEST(BlobStoreTest, PlaceCopiesWhenLinksAreNotWanted) {
  fs::path root = testing::TempDir() / "blobs";
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0)));
  fs::path dir = testing::TempDir() / "copy";
  ASSERT_OK_AND_ASSIGN(BlobPlacement p, store.Place(put, OpenDir(dir), /*allow_links=*/false));
  EXPECT_EQ(p, BlobPlacement::kCopied);
  EXPECT_EQ(fs::hard_link_count(put.path), 1u);
  EXPECT_EQ(fs::hard_link_count(dir / put.FileName()), 1u);
  ASSERT_OK_AND_ASSIGN(std::string a, ReadFile(put.path));
  ASSERT_OK_AND_ASSIGN(std::string b, ReadFile(dir / put.FileName()));
  EXPECT_EQ(a, b);
  struct stat st;
  ASSERT_EQ(::stat((dir / put.FileName()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
}

TEST(BlobStoreTest, PlaceAcrossFilesystemsFallsBackToACopy) {
  // /dev/shm is a tmpfs on Linux; the test tree usually is not: link() gives EXDEV.
  std::error_code ec;
  if (!fs::is_directory("/dev/shm", ec)) GTEST_SKIP() << "no /dev/shm";
  fs::path root = testing::TempDir() / "blobs";
  fs::path dir = fs::path("/dev/shm") / ("aq-blob-test-" + std::to_string(::getpid()));
  fs::remove_all(dir, ec);
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0)));
  DirHandle held = OpenDir(dir);
  struct stat a, b;
  ASSERT_EQ(::stat(root.c_str(), &a), 0);
  ASSERT_EQ(::stat(dir.c_str(), &b), 0);
  auto placed = store.Place(put, held);
  fs::remove_all(dir, ec);
  ASSERT_OK(placed.status());
  EXPECT_EQ(*placed, a.st_dev == b.st_dev ? BlobPlacement::kLinked : BlobPlacement::kCopied);
}

TEST(BlobStoreTest, MismatchedSpecIsInvalidArgument) {
  fs::path root = testing::TempDir() / "blobs";
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  std::vector<BlobTensor> t = Tensors(0);
  t[0].spec.shape = {8, 16};
  auto r = store.Put(Key("x"), t);
  ASSERT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("a.weight"));
}

TEST(BlobStoreTest, GarbageCollectionRemovesOnlyUnlinkedOldBlobsAndTheRefsOfEarlierVersions) {
  fs::path root = testing::TempDir() / "blobs";
  MapRecords records;
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob kept, store.Put(Key("kept"), Tensors(0), &records));
  ASSERT_OK_AND_ASSIGN(Blob orphan, store.Put(Key("orphan"), Tensors(1), &records));
  fs::create_directories(root / "refs");
  ASSERT_OK(WriteFileAtomic(root / "refs" / Key("orphan"), orphan.id + "\n"));
  DirHandle scheme = OpenDir(testing::TempDir() / "scheme");
  ASSERT_OK(store.Place(kept, scheme).status());
  ASSERT_OK_AND_ASSIGN(BlobGcResult dry, store.CollectGarbage(0, /*dry_run=*/true));
  EXPECT_EQ(dry.blobs_removed, 1u);
  EXPECT_EQ(dry.refs_removed, 1u);
  EXPECT_TRUE(fs::exists(orphan.path));
  EXPECT_TRUE(fs::exists(root / "refs"));
  // Young blobs are kept whatever their links: an export of an earlier version may be about to link them.
  ASSERT_OK_AND_ASSIGN(BlobGcResult young, store.CollectGarbage(3600, false));
  EXPECT_EQ(young.blobs_removed, 0u);
  EXPECT_EQ(young.blobs_kept, 2u);
  EXPECT_EQ(young.refs_removed, 1u);
  EXPECT_FALSE(fs::exists(root / "refs"));
  ASSERT_OK_AND_ASSIGN(BlobGcResult r, store.CollectGarbage(0, false));
  EXPECT_EQ(r.blobs_removed, 1u);
  EXPECT_GT(r.bytes_freed, 0u);
  EXPECT_EQ(r.refs_removed, 0u);
  EXPECT_FALSE(fs::exists(orphan.path));
  EXPECT_TRUE(absl::IsNotFound(store.Find(records, Key("orphan")).status()));
  ASSERT_OK(store.Find(records, Key("kept")).status());
  ASSERT_OK(BlobStore::VerifyFile(kept.path).status());
}

// `autoquant gc` and a running export: the export holds the store's use lock from before it looks a blob
// up until every blob is linked; gc refuses meanwhile, naming who holds it, and removes nothing.
TEST(BlobStoreTest, GarbageCollectionRefusesWhileAnExportUsesTheStore) {
  fs::path root = testing::TempDir() / "blobs";
  MapRecords records;
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob orphan, store.Put(Key("orphan"), Tensors(1), &records));
  {
    ASSERT_OK_AND_ASSIGN(FlockFile in_use, store.LockForUse(nullptr));
    ASSERT_OK_AND_ASSIGN(FlockFile another, store.LockForUse(nullptr));  // exports share it
    ASSERT_OK_AND_ASSIGN(BlobStore gc_side, BlobStore::Open(root, "", /*create=*/false));
    auto r = gc_side.CollectGarbage(0, false);
    ASSERT_TRUE(absl::IsUnavailable(r.status())) << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr("in use by a running export"));
    EXPECT_THAT(r.status().message(), HasSubstr(absl::StrCat("pid ", ::getpid())));
    EXPECT_THAT(r.status().message(), HasSubstr("nothing was removed"));
    EXPECT_TRUE(fs::exists(orphan.path));
  }
  ASSERT_OK_AND_ASSIGN(BlobGcResult r, store.CollectGarbage(0, false));
  EXPECT_EQ(r.blobs_removed, 1u);
  // While gc holds it, an export waits; cancelled, it stops waiting.
  ASSERT_OK_AND_ASSIGN(DirHandle held, DirHandle::Open(root));
  ASSERT_OK_AND_ASSIGN(
      FlockFile gc, FlockFile::Acquire(held, "use.lock", FlockFile::kExclusive, std::chrono::milliseconds(0), nullptr));
  std::atomic<bool> cancel{true};
  EXPECT_TRUE(absl::IsCancelled(store.LockForUse(&cancel).status()));
}

}  // namespace
}  // namespace autoquant

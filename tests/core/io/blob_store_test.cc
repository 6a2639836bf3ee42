#include "core/io/blob_store.h"

#include <sys/stat.h>
#include <torch/torch.h>

#include <fstream>

#include "core/io/safetensors_file.h"
#include "core/util/file_util.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::vector<BlobTensor> Tensors(int seed) {
  torch::manual_seed(seed);
  torch::Tensor w = torch::randn({16, 8}).to(torch::kBFloat16);
  torch::Tensor q = (torch::randn({4, 8}) * 10).to(torch::kFloat8_e4m3fn);
  torch::Tensor s = torch::tensor({0.25f});
  return {{{"a.weight", DType::kBF16, {16, 8}}, w},
          {{"b.weight", DType::kF8E4M3, {4, 8}}, q},
          {{"b.weight_scale", DType::kF32, {1}}, s}};
}

std::string Key(absl::string_view what) { return *BlobKey(what); }

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

TEST(BlobStoreTest, PutWritesAReadOnlyBlobNamedByItsHeaderAndFindReturnsIt) {
  fs::path root = testing::TempDir() / "blobs";
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  EXPECT_TRUE(absl::IsNotFound(store.Find(Key("x")).status()));
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0)));
  EXPECT_EQ(put.path, root / "sha256" / (put.id + ".safetensors"));
  EXPECT_EQ(put.tensors.size(), 3u);
  struct stat st;
  ASSERT_EQ(::stat(put.path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  // The file is an ordinary safetensors file with the tensors' bytes.
  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(put.path));
  ASSERT_OK_AND_ASSIGN(torch::Tensor a, file->Get("a.weight"));
  EXPECT_TRUE(torch::equal(a, Tensors(0)[0].value));
  EXPECT_EQ(file->metadata().at("format"), "pt");
  EXPECT_EQ(file->metadata().at("sha256:a.weight"), put.sha256.at("a.weight"));

  ASSERT_OK_AND_ASSIGN(Blob found, store.Find(Key("x")));
  EXPECT_EQ(found.id, put.id);
  EXPECT_EQ(found.sha256, put.sha256);
  // A fresh store (another process) verifies it in full and agrees.
  ASSERT_OK_AND_ASSIGN(BlobStore other, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob again, other.Find(Key("x")));
  EXPECT_EQ(again.id, put.id);
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

TEST(BlobStoreTest, DamagedBlobIsReportedThenReplacedByPut) {
  fs::path root = testing::TempDir() / "blobs";
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0)));
  fs::path dir = testing::TempDir() / "scheme";
  fs::create_directories(dir);
  ASSERT_OK(store.Place(put, dir).status());
  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(put.path));
  const uint64_t data = file->header().data_start;
  file.reset();
  FlipByte(put.path, data + 3);  // a byte of a.weight, in place: the scheme's link sees it too

  ASSERT_OK_AND_ASSIGN(BlobStore fresh, BlobStore::Open(root));
  auto found = fresh.Find(Key("x"));
  ASSERT_TRUE(absl::IsDataLoss(found.status())) << found.status();
  EXPECT_THAT(found.status().message(), HasSubstr("'a.weight' does not match its recorded SHA-256"));
  // The same store notices too: the rewrite changed the file's mtime.
  EXPECT_TRUE(absl::IsDataLoss(store.Find(Key("x")).status()));

  ASSERT_OK_AND_ASSIGN(Blob again, fresh.Put(Key("x"), Tensors(0)));
  EXPECT_EQ(again.id, put.id);
  ASSERT_OK(BlobStore::VerifyFile(again.path).status());
  // The scheme that linked the damaged file keeps it (a different inode now): diff reports it.
  struct stat linked, stored;
  ASSERT_EQ(::stat((dir / put.FileName()).c_str(), &linked), 0);
  ASSERT_EQ(::stat(again.path.c_str(), &stored), 0);
  EXPECT_NE(linked.st_ino, stored.st_ino);
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
  fs::create_directories(one);
  fs::create_directories(two);
  ASSERT_OK_AND_ASSIGN(BlobPlacement p1, store.Place(put, one));
  ASSERT_OK_AND_ASSIGN(BlobPlacement p2, store.Place(put, two));
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

TEST(BlobStoreTest, PlaceCopiesWhenLinksAreNotWanted) {
  fs::path root = testing::TempDir() / "blobs";
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0)));
  fs::path dir = testing::TempDir() / "copy";
  fs::create_directories(dir);
  ASSERT_OK_AND_ASSIGN(BlobPlacement p, store.Place(put, dir, /*allow_links=*/false));
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
  fs::create_directories(dir);
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0)));
  struct stat a, b;
  ASSERT_EQ(::stat(root.c_str(), &a), 0);
  ASSERT_EQ(::stat(dir.c_str(), &b), 0);
  auto placed = store.Place(put, dir);
  fs::remove_all(dir, ec);
  ASSERT_OK(placed.status());
  EXPECT_EQ(*placed, a.st_dev == b.st_dev ? BlobPlacement::kLinked : BlobPlacement::kCopied);
}

TEST(BlobStoreTest, BadKeysAndRefsAreErrors) {
  fs::path root = testing::TempDir() / "blobs";
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  EXPECT_TRUE(absl::IsInvalidArgument(store.Find("../etc/passwd").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store.Put("nothex", Tensors(0)).status()));
  ASSERT_OK(WriteFileAtomic(root / "refs" / Key("y"), "garbage\n"));
  EXPECT_TRUE(absl::IsDataLoss(store.Find(Key("y")).status()));
  // A ref to a blob that was removed: NotFound, so the caller writes it again.
  ASSERT_OK_AND_ASSIGN(Blob put, store.Put(Key("x"), Tensors(0)));
  fs::remove(put.path);
  EXPECT_TRUE(absl::IsNotFound(store.Find(Key("x")).status()));
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

TEST(BlobStoreTest, GarbageCollectionRemovesOnlyUnlinkedOldBlobsAndStaleRefs) {
  fs::path root = testing::TempDir() / "blobs";
  ASSERT_OK_AND_ASSIGN(BlobStore store, BlobStore::Open(root));
  ASSERT_OK_AND_ASSIGN(Blob kept, store.Put(Key("kept"), Tensors(0)));
  ASSERT_OK_AND_ASSIGN(Blob orphan, store.Put(Key("orphan"), Tensors(1)));
  fs::path scheme = testing::TempDir() / "scheme";
  fs::create_directories(scheme);
  ASSERT_OK(store.Place(kept, scheme).status());
  // Young blobs are kept whatever their links: an export may be about to link them.
  ASSERT_OK_AND_ASSIGN(BlobGcResult young, store.CollectGarbage(3600, false));
  EXPECT_EQ(young.blobs_removed, 0u);
  EXPECT_EQ(young.blobs_kept, 2u);
  ASSERT_OK_AND_ASSIGN(BlobGcResult dry, store.CollectGarbage(0, /*dry_run=*/true));
  EXPECT_EQ(dry.blobs_removed, 1u);
  EXPECT_TRUE(fs::exists(orphan.path));
  ASSERT_OK_AND_ASSIGN(BlobGcResult r, store.CollectGarbage(0, false));
  EXPECT_EQ(r.blobs_removed, 1u);
  EXPECT_GT(r.bytes_freed, 0u);
  EXPECT_EQ(r.refs_removed, 1u);
  EXPECT_FALSE(fs::exists(orphan.path));
  EXPECT_TRUE(absl::IsNotFound(store.Find(Key("orphan")).status()));
  ASSERT_OK(store.Find(Key("kept")).status());
  ASSERT_OK(BlobStore::VerifyFile(kept.path).status());
}

}  // namespace
}  // namespace autoquant

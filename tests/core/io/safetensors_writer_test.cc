#include "core/io/safetensors_writer.h"

#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <thread>

#include "core/io/safetensors_file.h"
#include "core/util/file_util.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::vector<std::pair<std::string, torch::Tensor>> EveryDtype() {
  torch::manual_seed(0);
  torch::Tensor f = torch::randn({5, 7});
  return {
      {"f64", f.to(torch::kDouble)},
      {"f32", f},
      {"f16", f.to(torch::kHalf)},
      {"bf16", f.to(torch::kBFloat16)},
      {"i64", torch::randint(-1000, 1000, {3, 2}, torch::kLong)},
      {"i32", torch::randint(-1000, 1000, {3}, torch::kInt)},
      {"i16", torch::randint(-1000, 1000, {2, 2}, torch::kShort)},
      {"i8", torch::randint(-100, 100, {9}, torch::kChar)},
      {"u8", torch::randint(0, 255, {4, 4}, torch::kByte)},
      {"bool", torch::rand({6}) > 0.5},
      {"f8e4m3", (f * 10).to(torch::kFloat8_e4m3fn)},
      {"f8e5m2", (f * 10).to(torch::kFloat8_e5m2)},
      {"scalar", torch::tensor(3.25)},
      {"empty", torch::empty({0, 3}, torch::kBFloat16)},
  };
}

bool BitEqual(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  if (a.numel() == 0) return true;
  auto ab = a.contiguous().reshape({-1}).view(torch::kByte);
  auto bb = b.contiguous().reshape({-1}).view(torch::kByte);
  return torch::equal(ab, bb);
}

TEST(SafetensorsWriterTest, EveryDtypeRoundTripsBitExactly) {
  auto dir = testing::TempDir();
  auto ts = EveryDtype();
  std::vector<TensorSpec> specs;
  for (const auto& [n, t] : ts) specs.push_back(*SpecOf(n, t));
  ASSERT_OK_AND_ASSIGN(auto w, SafetensorsWriter::Create(dir / "all.safetensors", specs, {{"k", "v"}}));
  for (const auto& [n, t] : ts) ASSERT_OK(w.Write(t));
  ASSERT_OK(w.Finish());
  ASSERT_OK_AND_ASSIGN(auto f, SafetensorsFile::Open(dir / "all.safetensors"));
  EXPECT_EQ(f->metadata().at("k"), "v");
  EXPECT_EQ(f->header().data_start % 8, 0u);
  for (const auto& [n, t] : ts) {
    ASSERT_OK_AND_ASSIGN(torch::Tensor got, f->Get(n));
    EXPECT_TRUE(BitEqual(got, t)) << n;
  }
}

// Positional writes from several threads, in any order, make the same file as writing in order.
TEST(SafetensorsWriterTest, WriteAtFromThreadsMatchesWritingInOrder) {
  auto dir = testing::TempDir();
  auto ts = EveryDtype();
  std::vector<TensorSpec> specs;
  for (const auto& [n, t] : ts) specs.push_back(*SpecOf(n, t));
  ASSERT_OK_AND_ASSIGN(auto serial, SafetensorsWriter::Create(dir / "serial.safetensors", specs, {}));
  for (const auto& [n, t] : ts) ASSERT_OK(serial.Write(t));
  ASSERT_OK(serial.Finish());

  ASSERT_OK_AND_ASSIGN(auto w, SafetensorsWriter::Create(dir / "parallel.safetensors", specs, {}));
  std::vector<std::thread> threads;
  std::vector<absl::Status> st(ts.size());
  for (size_t i = ts.size(); i-- > 0;) threads.emplace_back([&, i] { st[i] = w.WriteAt(i, ts[i].second); });
  for (auto& t : threads) t.join();
  for (const auto& s : st) ASSERT_OK(s);
  EXPECT_EQ(w.written(), ts.size());
  ASSERT_OK(w.Finish());
  EXPECT_EQ(*ReadFile(dir / "parallel.safetensors"), *ReadFile(dir / "serial.safetensors"));
}

TEST(SafetensorsWriterTest, WriteAtRejectsRepeatsAndFinishNamesMissingTensors) {
  auto dir = testing::TempDir();
  torch::Tensor a = torch::ones({3}), b = torch::zeros({2});
  ASSERT_OK_AND_ASSIGN(auto w,
                       SafetensorsWriter::Create(dir / "x.safetensors", {*SpecOf("a", a), *SpecOf("b", b)}, {}));
  ASSERT_OK(w.WriteAt(1, b));
  EXPECT_THAT(w.WriteAt(1, b).message(), HasSubstr("written twice"));
  EXPECT_EQ(w.WriteAt(2, b).code(), absl::StatusCode::kFailedPrecondition);
  // A tensor that does not match its spec is not claimed: the right one can still be written.
  EXPECT_EQ(w.WriteAt(0, b).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.Finish().message(), HasSubstr("only 1 of 2"));
  ASSERT_OK(w.WriteAt(0, a));
  ASSERT_OK(w.Finish());
  ASSERT_OK_AND_ASSIGN(auto f, SafetensorsFile::Open(dir / "x.safetensors"));
  EXPECT_TRUE(torch::equal(*f->Get("a"), a));
}

TEST(SafetensorsWriterTest, NonContiguousInputIsWrittenInLogicalOrder) {
  auto dir = testing::TempDir();
  torch::Tensor t = torch::arange(6, torch::kFloat32).reshape({2, 3}).t();
  ASSERT_OK_AND_ASSIGN(auto w, SafetensorsWriter::Create(dir / "t.safetensors", {*SpecOf("t", t)}, {}));
  ASSERT_OK(w.Write(t));
  ASSERT_OK(w.Finish());
  ASSERT_OK_AND_ASSIGN(auto f, SafetensorsFile::Open(dir / "t.safetensors"));
  EXPECT_TRUE(torch::equal(*f->Get("t"), t));
}

TEST(SafetensorsWriterTest, MismatchedTensorIsRejected) {
  auto dir = testing::TempDir();
  ASSERT_OK_AND_ASSIGN(auto w, SafetensorsWriter::Create(dir / "x.safetensors", {{"x", DType::kBF16, {2, 2}}}, {}));
  absl::Status s = w.Write(torch::zeros({2, 2}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("planned as BF16 [2,2] but got F32 [2,2]"));
}

// A meta tensor has the planned dtype and shape but no data: copying it to
// the host throws inside torch, which must come back as a Status.
TEST(SafetensorsWriterTest, TensorWithoutDataIsAnErrorNotAnException) {
  auto dir = testing::TempDir();
  {
    ASSERT_OK_AND_ASSIGN(auto w, SafetensorsWriter::Create(dir / "x.safetensors", {{"w", DType::kF32, {2, 3}}}, {}));
    torch::Tensor meta = torch::empty({2, 3}, torch::dtype(torch::kFloat32).device(torch::kMeta));
    absl::Status s;
    EXPECT_NO_THROW(s = w.Write(meta));
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
    EXPECT_THAT(s.message(), HasSubstr("cannot write tensor 'w'"));
    EXPECT_EQ(w.written(), 0u);
  }
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST(SafetensorsWriterTest, SparseInputIsWrittenDense) {
  auto dir = testing::TempDir();
  torch::Tensor dense = torch::tensor({{0.f, 2.f, 0.f}, {3.f, 0.f, 0.f}});
  ASSERT_OK_AND_ASSIGN(auto w, SafetensorsWriter::Create(dir / "s.safetensors", {*SpecOf("s", dense)}, {}));
  ASSERT_OK(w.Write(dense.to_sparse()));
  ASSERT_OK(w.Finish());
  ASSERT_OK_AND_ASSIGN(auto f, SafetensorsFile::Open(dir / "s.safetensors"));
  EXPECT_TRUE(torch::equal(*f->Get("s"), dense));
}

TEST(SafetensorsWriterTest, UnfinishedWriteLeavesNoFile) {
  auto dir = testing::TempDir();
  {
    ASSERT_OK_AND_ASSIGN(auto w, SafetensorsWriter::Create(dir / "x.safetensors",
                                                           {{"a", DType::kF32, {1}}, {"b", DType::kF32, {1}}}, {}));
    ASSERT_OK(w.Write(torch::ones({1})));
    absl::Status s = w.Finish();
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(s.message(), HasSubstr("only 1 of 2"));
  }
  EXPECT_FALSE(fs::exists(dir / "x.safetensors"));
  EXPECT_TRUE(fs::is_empty(dir));  // the temporary file is gone too
}

// A process killed mid-write (SIGKILL: no destructor runs) leaves its
// temporary file, named after it, never the output; the next
// RemoveStaleStaging in that directory removes it.
TEST(SafetensorsWriterTest, AKilledWritersTemporaryFileIsNamedForItsOwnerAndRemovedLater) {
  auto dir = testing::TempDir();
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // No torch calls after fork: Create writes the header only.
    auto w = SafetensorsWriter::Create(dir / "logits.safetensors", {{"logits", DType::kF32, {4}}}, {});
    ::_exit(w.ok() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  ASSERT_EQ(names.size(), 1u);
  EXPECT_THAT(names[0], ::testing::StartsWith(".logits.safetensors.tmp-"));
  EXPECT_THAT(names[0], HasSubstr(".owner-" + std::to_string(child) + "-"));
  EXPECT_FALSE(fs::exists(dir / "logits.safetensors"));

  // A live writer's temporary file is kept.
  ASSERT_OK_AND_ASSIGN(auto live, SafetensorsWriter::Create(dir / "mine.safetensors", {{"a", DType::kF32, {1}}}, {}));
  ASSERT_OK_AND_ASSIGN(int removed, RemoveStaleStaging(dir));
  EXPECT_EQ(removed, 1);
  names.clear();
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  ASSERT_EQ(names.size(), 1u);
  EXPECT_THAT(names[0], ::testing::StartsWith(".mine.safetensors.tmp-"));
  ASSERT_OK(live.Write(torch::ones({1})));
  ASSERT_OK(live.Finish());
  EXPECT_TRUE(fs::exists(dir / "mine.safetensors"));
}

TEST(SafetensorsWriterTest, DuplicateNamesAreRejected) {
  auto dir = testing::TempDir();
  auto w = SafetensorsWriter::Create(dir / "x.safetensors", {{"a", DType::kF32, {1}}, {"a", DType::kF32, {1}}}, {});
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.status().message(), HasSubstr("duplicate"));
}

TEST(SafetensorsWriterTest, FinishReplacesAnExistingFileAtomically) {
  auto dir = testing::TempDir();
  for (float v : {1.0f, 2.0f}) {
    ASSERT_OK_AND_ASSIGN(auto w, SafetensorsWriter::Create(dir / "x.safetensors", {{"a", DType::kF32, {1}}}, {}));
    ASSERT_OK(w.Write(torch::full({1}, v)));
    ASSERT_OK(w.Finish());
  }
  ASSERT_OK_AND_ASSIGN(auto f, SafetensorsFile::Open(dir / "x.safetensors"));
  EXPECT_EQ(f->Get("a")->item<float>(), 2.0f);
}

}  // namespace
}  // namespace autoquant

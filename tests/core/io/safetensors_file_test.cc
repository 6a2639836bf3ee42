#include "core/io/safetensors_file.h"

#include <torch/torch.h>

#include <sys/stat.h>

#include <cstring>
#include <fstream>

#include "core/io/safetensors_writer.h"
#include "core/util/file_util.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;

void WriteTensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, torch::Tensor>>& ts) {
  std::vector<TensorSpec> specs;
  for (const auto& [n, t] : ts) specs.push_back(*SpecOf(n, t));
  auto w = SafetensorsWriter::Create(path, specs, {{"format", "pt"}});
  ASSERT_TRUE(w.ok()) << w.status();
  for (const auto& [n, t] : ts) ASSERT_OK(w->Write(t));
  ASSERT_OK(w->Finish());
}

TEST(SafetensorsFileTest, MissingFileIsNotFound) {
  auto f = SafetensorsFile::Open("/nonexistent/x.safetensors");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(f.status().message(), HasSubstr("/nonexistent/x.safetensors"));
}

// A FIFO planted as a shard would block open() until a writer came.
TEST(SafetensorsFileTest, AFifoIsRefusedAtOnce) {
  auto dir = testing::TempDir();
  ASSERT_EQ(::mkfifo((dir / "model.safetensors").c_str(), 0644), 0);
  auto f = SafetensorsFile::Open(dir / "model.safetensors");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kFailedPrecondition) << f.status();
  EXPECT_THAT(f.status().message(), ::testing::HasSubstr("not a regular file"));
}

TEST(SafetensorsFileTest, AlignedTensorsAreZeroCopyViews) {
  auto dir = testing::TempDir();
  torch::Tensor a = torch::arange(12, torch::kFloat32).reshape({3, 4});
  WriteTensors(dir / "a.safetensors", {{"a", a}});
  ASSERT_OK_AND_ASSIGN(auto f, SafetensorsFile::Open(dir / "a.safetensors"));
  ASSERT_OK_AND_ASSIGN(torch::Tensor x, f->Get("a"));
  ASSERT_OK_AND_ASSIGN(torch::Tensor y, f->Get("a"));
  EXPECT_TRUE(torch::equal(x, a));
  EXPECT_EQ(x.data_ptr(), y.data_ptr());  // both views of the one mapping
}

TEST(SafetensorsFileTest, WritingToATensorNeverChangesTheFile) {
  auto dir = testing::TempDir();
  WriteTensors(dir / "a.safetensors", {{"a", torch::ones({4})}});
  {
    ASSERT_OK_AND_ASSIGN(auto f, SafetensorsFile::Open(dir / "a.safetensors"));
    ASSERT_OK_AND_ASSIGN(torch::Tensor x, f->Get("a"));
    x.fill_(7);
  }
  ASSERT_OK_AND_ASSIGN(auto f, SafetensorsFile::Open(dir / "a.safetensors"));
  EXPECT_TRUE(torch::equal(*f->Get("a"), torch::ones({4})));
}

TEST(SafetensorsFileTest, TensorOutlivesTheFileObject) {
  auto dir = testing::TempDir();
  WriteTensors(dir / "a.safetensors", {{"a", torch::full({1000}, 3.5)}});
  torch::Tensor x;
  {
    ASSERT_OK_AND_ASSIGN(auto f, SafetensorsFile::Open(dir / "a.safetensors"));
    x = *f->Get("a");
  }
  EXPECT_EQ(x.sum().item<float>(), 3500.0f);
}

TEST(SafetensorsFileTest, MisalignedDataIsCopiedWithCorrectValues) {
  // A header whose JSON length is odd puts the data buffer at an odd offset.
  auto dir = testing::TempDir();
  std::string json = R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}} )";
  if (json.size() % 2 == 0) json += " ";
  std::string image(8, '\0');
  uint64_t n = json.size();
  std::memcpy(image.data(), &n, 8);
  float vals[3] = {1.5f, -2.25f, 1e30f};
  image += json + std::string(reinterpret_cast<char*>(vals), 12);
  std::ofstream(dir / "m.safetensors", std::ios::binary) << image;
  ASSERT_OK_AND_ASSIGN(auto f, SafetensorsFile::Open(dir / "m.safetensors"));
  ASSERT_OK_AND_ASSIGN(torch::Tensor x, f->Get("x"));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(x.data_ptr()) % 4, 0u);
  EXPECT_EQ(x[0].item<float>(), 1.5f);
  EXPECT_EQ(x[1].item<float>(), -2.25f);
  EXPECT_EQ(x[2].item<float>(), 1e30f);
}

TEST(SafetensorsFileTest, MissingTensorNamesTensorAndFile) {
  auto dir = testing::TempDir();
  WriteTensors(dir / "a.safetensors", {{"a", torch::ones({1})}});
  ASSERT_OK_AND_ASSIGN(auto f, SafetensorsFile::Open(dir / "a.safetensors"));
  auto x = f->Get("b");
  EXPECT_EQ(x.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(x.status().message(), HasSubstr("'b'"));
  EXPECT_THAT(x.status().message(), HasSubstr("a.safetensors"));
}

TEST(SafetensorsFileTest, EmptyFileIsTruncated) {
  auto dir = testing::TempDir();
  std::ofstream(dir / "e.safetensors").close();
  auto f = SafetensorsFile::Open(dir / "e.safetensors");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), HasSubstr("truncated"));
}

}  // namespace
}  // namespace autoquant

#include "core/scheme/integrity.h"

#include <torch/torch.h>

#include <fstream>

#include "core/io/checkpoint_writer.h"
#include "core/io/safetensors_file.h"
#include "core/util/file_util.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;
namespace fs = std::filesystem;

// A two-shard checkpoint with a quant manifest that records its digests.
class IntegrityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir() / "scheme";
    fs::create_directories(dir_ / "layer-sensitivity");
    std::vector<PlannedTensor> plan;
    for (const char* name : {"a.weight", "b.weight", "c.weight"}) {
      plan.push_back({{name, DType::kF32, {4, 4}}, [] { return absl::StatusOr<torch::Tensor>(torch::randn({4, 4})); }});
    }
    ASSERT_OK(WriteShardedSafetensors(dir_, plan, {.max_shard_bytes = 128, .always_index = true}).status());
    ASSERT_OK_AND_ASSIGN(TensorDigests d, ComputeTensorDigests(dir_));
    ASSERT_EQ(d.size(), 3u);
    nlohmann::ordered_json m = {{"scheme", "s"},
                                {"producer", {{"name", "autoquant"}}},
                                {"groups", nlohmann::json::object()},
                                {"integrity", IntegrityJson(d)}};
    ASSERT_OK(WriteFileAtomic(dir_ / "layer-sensitivity" / "s_quant_manifest.json", m.dump()));
  }
  // Flips one bit of tensor `name`'s first byte in place.
  void FlipFirstByteOf(const std::string& name) {
    ASSERT_OK_AND_ASSIGN(TensorDigests d, ComputeTensorDigests(dir_));
    const fs::path shard = dir_ / d.at(name).file;
    uint64_t offset = 0;
    {
      ASSERT_OK_AND_ASSIGN(auto f, SafetensorsFile::Open(shard));
      const TensorInfo* info = f->Find(name);
      ASSERT_NE(info, nullptr);
      offset = f->header().data_start + info->begin;
    }
    std::fstream io(shard, std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(offset);
    char c = 0;
    io.get(c);
    io.seekp(offset);
    io.put(static_cast<char>(c ^ 0x01));
  }
  fs::path dir_;
};

TEST_F(IntegrityTest, AnUntouchedSchemeVerifies) { EXPECT_TRUE(VerifySchemeIntegrity(dir_).ok()); }

TEST_F(IntegrityTest, AFlippedByteIsDataLossNamingTheTensorAndShard) {
  FlipFirstByteOf("b.weight");
  absl::Status s = VerifySchemeIntegrity(dir_);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("tensor 'b.weight' in model-0000"));
  EXPECT_THAT(s.message(), HasSubstr("does not match its recorded SHA-256"));
}

TEST_F(IntegrityTest, AManifestWithoutDigestsIsNotTrusted) {
  ASSERT_OK(WriteFileAtomic(dir_ / "layer-sensitivity" / "s_quant_manifest.json", R"({"scheme": "s", "groups": {}})"));
  EXPECT_EQ(VerifySchemeIntegrity(dir_).code(), absl::StatusCode::kFailedPrecondition);
  fs::remove_all(dir_ / "layer-sensitivity");
  EXPECT_EQ(VerifySchemeIntegrity(dir_).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace autoquant

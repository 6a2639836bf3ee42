#include "core/scheme/export.h"

#include <torch/torch.h>

#include <atomic>

#include "core/engine/engine.h"
#include "core/io/checkpoint.h"
#include "core/model/qwen2_5_vl/calib_set.h"
#include "core/model/qwen2_5_vl/presets.h"
#include "core/model/qwen2_5_vl/weights.h"
#include "core/scheme/integrity.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
namespace fs = std::filesystem;

// ExportScheme itself, with a tiny random model's baseline: its options change how the FP8 weights are
// produced, never which bytes are written.
class ExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir();
    ASSERT_OK(InitRandomCheckpoint({.preset = "tiny", .out = dir_ / "base", .seed = 5, .dtype = torch::kBFloat16}));
    ASSERT_OK_AND_ASSIGN(Checkpoint ckpt, Checkpoint::Open(dir_ / "base"));
    ASSERT_OK_AND_ASSIGN(Qwen2_5_VLConfig config, CheckpointConfig(ckpt));
    ASSERT_OK_AND_ASSIGN(
        CalibSet set,
        SynthesizeCalibSet(
            config,
            {.samples = 2, .seq_len = 32, .images_per_sample = 1, .image_height = 56, .image_width = 56, .seed = 1}));
    ASSERT_OK(set.Save(dir_ / "calib.safetensors"));
    ASSERT_OK_AND_ASSIGN(engine_, Engine::Create({.model_dir = dir_ / "base",
                                                  .calib_path = dir_ / "calib.safetensors",
                                                  .baseline_cache = dir_ / "cache",
                                                  .device = "cpu",
                                                  .dtype = "bfloat16"}));
    ASSERT_OK_AND_ASSIGN(baseline_, engine_->GetBaseline({}));
    ASSERT_OK_AND_ASSIGN(base_, Checkpoint::Open(dir_ / "base"));
    SchemeSelection all;
    all.coverage = 1.0;
    ASSERT_OK_AND_ASSIGN(plan_, MakePlan(baseline_, all));
  }
  ExportOptions Options(const std::string& name) {
    ExportOptions o;
    o.scheme = name;
    o.out_dir = dir_ / name;
    o.max_shard_bytes = 1 << 20;  // several shards
    return o;
  }
  fs::path dir_;
  std::unique_ptr<Engine> engine_;
  Baseline baseline_;
  std::optional<Checkpoint> base_;
  Plan plan_;
};

TEST_F(ExportTest, PrefetchedFp8WeightsWriteTheSameBytes) {
  ASSERT_OK_AND_ASSIGN(ExportResult inline_result, ExportScheme(*base_, baseline_, plan_, Options("inline")));
  ASSERT_GT(inline_result.quantized_modules, 0u);
  EXPECT_FALSE(inline_result.fp8_prefetched);
  // The FP8 weights' digests, hashed by their producers, are those of the bytes on disk.
  EXPECT_TRUE(VerifySchemeIntegrity(dir_ / "inline").ok());
  for (uint64_t budget : {uint64_t{1}, uint64_t{64} << 20}) {
    const std::string name = "prefetch-" + std::to_string(budget);
    ExportOptions o = Options(name);
    o.fp8_prefetch_bytes = budget;
    o.writer_threads = budget == 1 ? 1 : 3;
    absl::StatusOr<ExportResult> r = ExportScheme(*base_, baseline_, plan_, o);
    ASSERT_TRUE(r.ok()) << name << ": " << r.status();
    EXPECT_TRUE(r->fp8_prefetched) << name;
    EXPECT_TRUE(VerifySchemeIntegrity(dir_ / name).ok()) << name;
    ASSERT_OK_AND_ASSIGN(TensorDigests a, ComputeTensorDigests(dir_ / "inline"));
    ASSERT_OK_AND_ASSIGN(TensorDigests b, ComputeTensorDigests(dir_ / name));
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [tensor, d] : a) EXPECT_EQ(d.sha256, b.at(tensor).sha256) << name << " " << tensor;
  }
}

// Cancelled while the prefetcher runs ahead: Cancelled, nothing published, and the call returns.
TEST_F(ExportTest, CancelWhilePrefetchingLeavesNothing) {
  std::atomic<bool> cancel{false};
  ExportOptions o = Options("cancelled");
  o.fp8_prefetch_bytes = 1;
  o.cancel = &cancel;
  o.progress = [&](double f) {
    if (f > 0.1) cancel = true;
  };
  absl::Status st = ExportScheme(*base_, baseline_, plan_, o).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kCancelled) << st;
  EXPECT_FALSE(fs::exists(dir_ / "cancelled"));
}

}  // namespace
}  // namespace autoquant

// The GPU export path (FP8 weights quantized from the resident model on the
// GPU, copied back through page-locked memory, produced ahead of the writer)
// writes the bytes the CPU path writes. Skipped, with the reason, without a GPU.
#include <torch/cuda.h>
#include <torch/torch.h>

#include "absl/strings/match.h"
#include "core/engine/engine.h"
#include "core/io/checkpoint.h"
#include "core/model/qwen2_5_vl/calib_set.h"
#include "core/model/qwen2_5_vl/presets.h"
#include "core/model/qwen2_5_vl/weights.h"
#include "core/scheme/integrity.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {

TEST(ExportCudaTest, GpuExportWritesTheCpuExportsFp8Weights) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device visible: run on the GPU machine with scripts/gpu/run.sh test";
  }
  const auto dir = testing::TempDir();
  ASSERT_OK(InitRandomCheckpoint({.preset = "tiny", .out = dir / "base", .seed = 7, .dtype = torch::kBFloat16}));
  ASSERT_OK_AND_ASSIGN(Checkpoint ckpt, Checkpoint::Open(dir / "base"));
  ASSERT_OK_AND_ASSIGN(Qwen2_5_VLConfig config, CheckpointConfig(ckpt));
  ASSERT_OK_AND_ASSIGN(
      CalibSet set,
      SynthesizeCalibSet(
          config,
          {.samples = 2, .seq_len = 32, .images_per_sample = 1, .image_height = 56, .image_width = 56, .seed = 1}));
  ASSERT_OK(set.Save(dir / "calib.safetensors"));
  std::map<std::string, TensorDigests> digests;
  for (const char* device : {"cpu", "cuda"}) {
    ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create({.model_dir = dir / "base",
                                                      .calib_path = dir / "calib.safetensors",
                                                      .baseline_cache = dir / (std::string("cache-") + device),
                                                      .device = device,
                                                      .dtype = "bfloat16"}));
    SchemeRequest r;
    r.out_dir = dir / device;
    r.selection.coverage = 1.0;
    ASSERT_OK_AND_ASSIGN(SchemeResult s, engine->RunScheme(r));
    EXPECT_GT(s.export_resident_weights, 0u) << device;
    EXPECT_TRUE(VerifySchemeIntegrity(r.out_dir).ok()) << device;
    ASSERT_OK_AND_ASSIGN(digests[device], ComputeTensorDigests(r.out_dir));
  }
  size_t fp8 = 0;
  for (const auto& [name, d] : digests["cpu"]) {
    if (absl::EndsWith(name, ".input_scale")) continue;  // calibrated on each device
    EXPECT_EQ(d.sha256, digests["cuda"].at(name).sha256) << name;
    fp8 += absl::EndsWith(name, ".weight_scale") ? 1 : 0;
  }
  EXPECT_GT(fp8, 0u);
}

}  // namespace
}  // namespace autoquant

#include "core/scheme/scheme_loader.h"

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "core/io/checkpoint_writer.h"
#include "core/model/qwen2_5_vl/presets.h"
#include "core/quant/fp8.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"
#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
#include "tests/alloc_fault.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

// The tiny random model with every MLP down_proj in FP8 (ModelOpt layout:
// fp8 weight, 0-d weight_scale and input_scale). `scale_value` overrides the
// first input_scale, `scale_shape` the shape of every input_scale.
class SchemeLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir();
    ASSERT_OK(InitRandomCheckpoint({.preset = "tiny", .out = dir_ / "base", .seed = 3, .dtype = torch::kFloat32}));
  }
  absl::StatusOr<Checkpoint> WriteScheme(const std::string& name, float first_input_scale = 0.01f,
                                         std::vector<int64_t> scale_shape = {}) {
    ASSIGN_OR_RETURN(Checkpoint base, Checkpoint::Open(dir_ / "base"));
    std::vector<PlannedTensor> plan;
    bool first = true;
    for (const auto& tname : base.TensorNames()) {
      const TensorInfo* info = base.Find(tname);
      if (!absl::EndsWith(tname, "mlp.down_proj.weight")) {
        plan.push_back({{tname, info->dtype, info->shape}, [&base, tname] { return base.Get(tname); }});
        continue;
      }
      const std::string m = tname.substr(0, tname.size() - 7);
      ASSIGN_OR_RETURN(torch::Tensor w, base.Get(tname));
      torch::Tensor ws = Fp8ScaleFromAmax(Amax(w));
      torch::Tensor q = QuantizeFp8(w, ws);
      plan.push_back({{tname, DType::kF8E4M3, info->shape}, [q] { return absl::StatusOr<torch::Tensor>(q); }});
      plan.push_back({{m + ".weight_scale", DType::kF32, {}}, [ws] { return absl::StatusOr<torch::Tensor>(ws); }});
      torch::Tensor is = torch::full(scale_shape, first ? first_input_scale : 0.01f);
      first = false;
      plan.push_back(
          {{m + ".input_scale", DType::kF32, scale_shape}, [is] { return absl::StatusOr<torch::Tensor>(is); }});
    }
    fs::create_directories(dir_ / name);
    RETURN_IF_ERROR(WriteShardedSafetensors(dir_ / name, plan, {}).status());
    RETURN_IF_ERROR(WriteFileAtomic(dir_ / name / "config.json", base.config()->dump()));
    return Checkpoint::Open(dir_ / name);
  }
  fs::path dir_;
};

TEST_F(SchemeLoaderTest, Fp8WeightsLoadDequantizedWithInputQuantization) {
  ASSERT_OK_AND_ASSIGN(Checkpoint ckpt, WriteScheme("s"));
  EXPECT_TRUE(HasQuantizedWeights(ckpt));
  ASSERT_OK_AND_ASSIGN(LoadedScheme s, LoadScheme(ckpt, torch::kCPU, torch::kFloat32));
  size_t down_projs = 0;  // vision blocks and text layers both have one
  for (const auto& [name, lin] : s.model->Linears()) down_projs += absl::EndsWith(name, "mlp.down_proj");
  EXPECT_EQ(s.quantized_linears, down_projs);
  EXPECT_GT(down_projs, 0u);
}

TEST_F(SchemeLoaderTest, BadScalesAreInvalidArgument) {
  ASSERT_OK_AND_ASSIGN(Checkpoint nan_scale, WriteScheme("nan", std::nanf("")));
  auto r = LoadScheme(nan_scale, torch::kCPU, torch::kFloat32);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("not a finite non-negative scale"));
  ASSERT_OK_AND_ASSIGN(Checkpoint negative, WriteScheme("neg", -0.5f));
  r = LoadScheme(negative, torch::kCPU, torch::kFloat32);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  ASSERT_OK_AND_ASSIGN(Checkpoint per_channel, WriteScheme("shape", 0.01f, {2}));
  r = LoadScheme(per_channel, torch::kCPU, torch::kFloat32);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("is not a per-tensor scale"));
}

// Out of memory anywhere while loading a scheme, the input-scale tensors
// created after the weights (the last allocations) included, is
// ResourceExhausted, never an exception. The last 64 allocations are all
// tried; every 11th before them samples the weight loading.
TEST_F(SchemeLoaderTest, OutOfMemoryAnywhereIsResourceExhausted) {
  ASSERT_OK_AND_ASSIGN(Checkpoint ckpt, WriteScheme("s"));
  int fired = testing::ExpectOomIsAStatusAt([&] { return LoadScheme(ckpt, torch::kCPU, torch::kFloat32).status(); },
                                            [](int64_t total) {
                                              std::vector<int64_t> ks;
                                              for (int64_t k = 1; k <= total; k += k + 64 < total ? 11 : 1)
                                                ks.push_back(k);
                                              return ks;
                                            });
  EXPECT_GT(fired, 64);
}

}  // namespace
}  // namespace autoquant

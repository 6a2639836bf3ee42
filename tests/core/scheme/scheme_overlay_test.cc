#include "core/scheme/scheme_overlay.h"

#include <torch/torch.h>

#include <functional>

#include "absl/strings/match.h"
#include "core/io/checkpoint_writer.h"
#include "core/model/qwen2_5_vl/calib_set.h"
#include "core/model/qwen2_5_vl/presets.h"
#include "core/model/qwen2_5_vl/weights.h"
#include "core/quant/fp8.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

// An FP8 Linear, computed by hand: e4m3 input and weight as float64 values.
torch::Tensor HandFp8Linear(const torch::Tensor& x, const torch::Tensor& wq, float ws, float is,
                            const torch::Tensor& bias) {
  torch::Tensor xq = (x.to(torch::kFloat64) / is).clamp(-448, 448).to(torch::kFloat32).to(torch::kFloat8_e4m3fn);
  torch::Tensor y = torch::matmul(xq.to(torch::kFloat64), wq.to(torch::kFloat64).t()) * (double(is) * ws);
  if (bias.defined()) y = y + bias.to(torch::kFloat64);
  return y;
}

TEST(Fp8LinearHookTest, EmulationIsTheFp8Product) {
  torch::manual_seed(0);
  Linear lin(48, 32, /*bias=*/true);
  lin->weight = torch::randn({32, 48});
  lin->bias = torch::randn({32});
  torch::Tensor ws = Fp8ScaleFromAmax(Amax(lin->weight));
  torch::Tensor wq = QuantizeFp8(lin->weight, ws);
  const float is = 0.02f;
  Fp8LinearHook hook(wq, ws.reshape({}), torch::tensor(is), Fp8Matmul::kEmulated);
  torch::Tensor x = torch::randn({2, 5, 48}) * 3;
  torch::Tensor y = hook.Forward(*lin, x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 5, 32}));
  torch::Tensor want = HandFp8Linear(x.reshape({-1, 48}), wq, ws.item<float>(), is, lin->bias).reshape({2, 5, 32});
  EXPECT_LT((y.to(torch::kFloat64) - want).abs().max().item<double>(), 1e-4);
  // Not the 16-bit product: the hook really quantizes (inputs beyond 448 * is saturate).
  EXPECT_GT((y - lin->Dense(x)).abs().max().item<float>(), 1e-3);
  EXPECT_FALSE(hook.uses_scaled_mm());
}

TEST(Fp8MatmulTest, ParseAndResolve) {
  EXPECT_EQ(*ParseFp8Matmul("emulated"), Fp8Matmul::kEmulated);
  EXPECT_EQ(ParseFp8Matmul("fast").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ResolveFp8Matmul(Fp8Matmul::kAuto, torch::kCPU), Fp8Matmul::kEmulated);
  auto r = ResolveFp8Matmul(Fp8Matmul::kScaledMm, torch::kCPU);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("8.9"));
}

// The tiny random model and schemes over it: `fp8` decides which Linear
// weights (checkpoint names) are written in FP8, `edit` may change any 16-bit tensor.
class SchemeOverlayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir();
    ASSERT_OK(InitRandomCheckpoint({.preset = "tiny", .out = dir_ / "base", .seed = 5, .dtype = torch::kFloat32}));
    ASSERT_OK_AND_ASSIGN(base_ckpt_, Checkpoint::Open(dir_ / "base"));
    ASSERT_OK_AND_ASSIGN(model_, LoadQwen2_5_VL(base_ckpt_, torch::kCPU, torch::kFloat32));
    ASSERT_OK_AND_ASSIGN(Qwen2_5_VLConfig cfg, CheckpointConfig(base_ckpt_));
    ASSERT_OK_AND_ASSIGN(
        CalibSet set,
        SynthesizeCalibSet(cfg, {.samples = 2, .seq_len = 96, .image_height = 56, .image_width = 56, .seed = 1}));
    ASSERT_OK_AND_ASSIGN(inputs_, set.Batch(0, 2));
  }

  absl::StatusOr<Checkpoint> WriteScheme(const std::string& name, const std::function<bool(const std::string&)>& fp8,
                                         const std::function<void(const std::string&, torch::Tensor&)>& edit = {}) {
    std::vector<PlannedTensor> plan;
    int k = 0;
    for (const auto& tname : base_ckpt_.TensorNames()) {
      const TensorInfo* info = base_ckpt_.Find(tname);
      ASSIGN_OR_RETURN(torch::Tensor w, base_ckpt_.Get(tname));
      if (!fp8(tname)) {
        torch::Tensor t = w.clone();
        if (edit) edit(tname, t);
        plan.push_back({{tname, info->dtype, info->shape}, [t] { return absl::StatusOr<torch::Tensor>(t); }});
        continue;
      }
      const std::string m = tname.substr(0, tname.size() - 7);
      // Scales that differ between fused shards, so that re-quantization to the max has work to do.
      torch::Tensor ws = Fp8ScaleFromAmax(Amax(w)) * (1.0f + 0.5f * (k++ % 3));
      torch::Tensor q = QuantizeFp8(w, ws);
      torch::Tensor is = torch::tensor(0.01f + 0.002f * (k % 2));
      plan.push_back({{tname, DType::kF8E4M3, info->shape}, [q] { return absl::StatusOr<torch::Tensor>(q); }});
      plan.push_back(
          {{m + ".weight_scale", DType::kF32, {}}, [ws] { return absl::StatusOr<torch::Tensor>(ws.reshape({})); }});
      plan.push_back({{m + ".input_scale", DType::kF32, {}}, [is] { return absl::StatusOr<torch::Tensor>(is); }});
    }
    fs::create_directories(dir_ / name);
    RETURN_IF_ERROR(WriteShardedSafetensors(dir_ / name, plan, {}).status());
    RETURN_IF_ERROR(WriteFileAtomic(dir_ / name / "config.json", base_ckpt_.config()->dump()));
    return Checkpoint::Open(dir_ / name);
  }

  static bool TextAttentionAndMlp(const std::string& n) {
    return absl::StrContains(n, "layers.") && !absl::StrContains(n, "visual") && absl::EndsWith(n, "proj.weight");
  }

  torch::Tensor Logits() {
    torch::InferenceMode g;
    auto r = model_->Forward(inputs_);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : torch::Tensor();
  }

  fs::path dir_;
  Checkpoint base_ckpt_;
  Qwen2_5_VLModel model_{nullptr};
  Qwen2_5_VLInputs inputs_;
};

TEST_F(SchemeOverlayTest, RunsTheSchemeWhileInstalledAndTheBaseAfter) {
  ASSERT_OK_AND_ASSIGN(Checkpoint scheme, WriteScheme("s", TextAttentionAndMlp));
  const torch::Tensor base = Logits();
  ASSERT_OK_AND_ASSIGN(SchemeOverlay o, BuildSchemeOverlay(scheme, model_, Fp8Matmul::kAuto));
  EXPECT_EQ(o.matmul, Fp8Matmul::kEmulated);
  size_t text_projs = 0;
  for (const auto& [name, lin] : model_->Linears()) {
    text_projs += absl::StrContains(name, "language_model.layers.") && absl::EndsWith(name, "proj");
  }
  EXPECT_EQ(o.hooks.size(), text_projs);
  EXPECT_GT(o.tensors_checked, 0u);
  // q/k/v and gate/up were written with different scales: all but the largest of each set move.
  EXPECT_GT(o.requantized_shards, 0u);
  torch::Tensor with;
  {
    OverlayGuard g(o);
    with = Logits();
  }
  EXPECT_GT((with - base).abs().max().item<float>(), 1e-4);
  EXPECT_TRUE(torch::equal(Logits(), base));  // hooks gone
  // Shards of one fused GEMM share the max scales, as vLLM loads them.
  std::map<std::string, std::pair<float, float>> by_parent;
  for (const auto& [name, lin] : model_->Linears()) {
    if (!absl::EndsWith(name, "q_proj") && !absl::EndsWith(name, "k_proj") && !absl::EndsWith(name, "v_proj")) continue;
    for (const auto& [l, any_hook] : o.hooks) {
      if (l.get() != lin.get()) continue;
      auto hook = std::dynamic_pointer_cast<Fp8LinearHook>(any_hook);
      ASSERT_NE(hook, nullptr) << name;
      const std::string parent = name.substr(0, name.rfind('.'));
      std::pair<float, float> s{hook->weight_scale().item<float>(), hook->input_scale().item<float>()};
      auto [it, fresh] = by_parent.emplace(parent, s);
      if (!fresh) {
        EXPECT_EQ(it->second, s) << name;
      }
    }
  }
  EXPECT_FALSE(by_parent.empty());
}

TEST_F(SchemeOverlayTest, AQuantizedLinearComputesTheHandFp8Product) {
  ASSERT_OK_AND_ASSIGN(Checkpoint scheme, WriteScheme("s", [](const std::string& n) {
                         return absl::EndsWith(n, "layers.0.mlp.down_proj.weight") && !absl::StrContains(n, "visual");
                       }));
  ASSERT_OK_AND_ASSIGN(SchemeOverlay o, BuildSchemeOverlay(scheme, model_, Fp8Matmul::kEmulated));
  ASSERT_EQ(o.hooks.size(), 1u);
  EXPECT_EQ(o.requantized_shards, 0u);
  auto& [lin, hook] = o.hooks[0];
  std::string key;
  for (const auto& n : scheme.TensorNames()) {
    if (scheme.Find(n)->dtype == DType::kF8E4M3) key = n;
  }
  ASSERT_OK_AND_ASSIGN(torch::Tensor wq, scheme.Get(key));
  const std::string m = key.substr(0, key.size() - 7);
  ASSERT_OK_AND_ASSIGN(torch::Tensor ws, scheme.Get(m + ".weight_scale"));
  ASSERT_OK_AND_ASSIGN(torch::Tensor is, scheme.Get(m + ".input_scale"));
  torch::Tensor x = torch::randn({3, lin->in_features()});
  torch::Tensor y = hook->Forward(*lin, x);
  torch::Tensor want = HandFp8Linear(x, wq, ws.item<float>(), is.item<float>(), lin->bias);
  EXPECT_LT((y.to(torch::kFloat64) - want).abs().max().item<double>(), 1e-4);
}

TEST_F(SchemeOverlayTest, RefusesWhatVllmOrTheBaseWouldNotMatch) {
  // Only q_proj of a layer in FP8: vLLM refuses a fused GEMM with mixed shards.
  ASSERT_OK_AND_ASSIGN(Checkpoint mixed, WriteScheme("mixed", [](const std::string& n) {
                         return absl::EndsWith(n, "layers.0.self_attn.q_proj.weight") &&
                                !absl::StrContains(n, "visual");
                       }));
  auto r = BuildSchemeOverlay(mixed, model_, Fp8Matmul::kEmulated);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("Mixed quant_algo"));

  // A 16-bit tensor that is not the base's: another model's scheme.
  ASSERT_OK_AND_ASSIGN(Checkpoint other,
                       WriteScheme("other", TextAttentionAndMlp, [](const std::string& n, torch::Tensor& t) {
                         if (absl::EndsWith(n, "norm.weight")) t.add_(1e-3);
                       }));
  r = BuildSchemeOverlay(other, model_, Fp8Matmul::kEmulated);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("differs from the base model"));

  // FP8 matmul on a CPU.
  r = BuildSchemeOverlay(other, model_, Fp8Matmul::kScaledMm);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  for (const auto& [name, lin] : model_->Linears()) EXPECT_EQ(lin->hook(), nullptr) << name;
}

}  // namespace
}  // namespace autoquant

namespace autoquant {
namespace {

// _scaled_mm against exact emulation on the GPU (skipped without FP8 matmul):
// 3B-shaped Linears, bf16 activations. Both compute the same e4m3 products;
// they differ in accumulation order and in when bf16 rounding happens.
// Stated tolerance: |Δ| <= 1e-2 * max|y| elementwise (bf16 output has 8 bits of mantissa).
TEST(Fp8LinearHookTest, ScaledMmAgreesWithEmulationOnTheGpu) {
  if (!HasFp8Matmul(torch::Device(torch::kCUDA, 0))) GTEST_SKIP() << "no GPU with FP8 matmul";
  torch::manual_seed(0);
  const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  for (auto [in, out] : {std::pair<int64_t, int64_t>{2048, 11008}, {11008, 2048}, {2048, 256}}) {
    Linear lin(in, out, /*bias=*/out == 256);
    lin->weight = torch::randn({out, in}, opts) * 0.02;
    if (lin->bias.defined()) lin->bias = torch::randn({out}, opts);
    torch::Tensor ws = Fp8ScaleFromAmax(Amax(lin->weight));
    torch::Tensor wq = QuantizeFp8(lin->weight, ws);
    torch::Tensor x = torch::randn({4, 768, in}, opts);
    torch::Tensor is = Fp8ScaleFromAmax(Amax(x));
    Fp8LinearHook fast(wq, ws.reshape({}), is.reshape({}), Fp8Matmul::kScaledMm);
    Fp8LinearHook exact(wq, ws.reshape({}), is.reshape({}), Fp8Matmul::kEmulated);
    ASSERT_TRUE(fast.uses_scaled_mm());
    torch::Tensor a = fast.Forward(*lin, x).to(torch::kFloat32), b = exact.Forward(*lin, x).to(torch::kFloat32);
    const double scale = b.abs().max().item<double>();
    const double max_diff = (a - b).abs().max().item<double>();
    const double mean_rel = ((a - b).abs().mean() / b.abs().mean()).item<double>();
    std::cout << "[scaled_mm vs emulated] " << in << "x" << out << ": max |diff| " << max_diff << " (max |y| " << scale
              << "), mean rel " << mean_rel << "\n";
    EXPECT_LE(max_diff, 1e-2 * scale);
    EXPECT_LT(mean_rel, 1e-3);
  }
}

}  // namespace
}  // namespace autoquant

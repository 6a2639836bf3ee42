// The custom CUDA kernels (core/kernels) against their torch-op references,
// through the torch-side callers that choose between them: each test runs
// the same call with the kernels off (the reference) and on, on fresh random
// data, and compares. The GPU cases skip, saying why, without a CUDA device or
// without kernels in this build; the switch and the CPU cases run everywhere.
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "core/kernels/kernels.h"
#include "core/model/layers/fused_kernels.h"
#include "core/model/layers/gated_mlp.h"
#include "core/model/layers/linear.h"
#include "core/model/layers/rms_norm.h"
#include "core/model/layers/rotary.h"
#include "core/quant/fp8.h"
#include "core/quant/linear_hooks.h"
#include "core/quant/nvfp4.h"
#include "gtest/gtest.h"

namespace autoquant {
namespace {

// Restores the environment's choice after each test.
class KernelsTest : public ::testing::Test {
 protected:
  void TearDown() override { kernels::SetEnabledForTesting(kernels::Compiled()); }

  template <typename Fn>
  static auto Both(Fn&& fn) {
    kernels::SetEnabledForTesting(false);
    auto ref = fn();
    kernels::SetEnabledForTesting(true);
    auto fused = fn();
    return std::make_pair(ref, fused);
  }

  static torch::Device Cuda() { return torch::Device(torch::kCUDA, 0); }
};

#define SKIP_WITHOUT_GPU_KERNELS()                                                                          \
  do {                                                                                                      \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: run on the GPU machine (cuda_test)"; \
    if (!kernels::Compiled()) GTEST_SKIP() << "this build has no CUDA kernels (nvcc not found)";            \
  } while (0)

TEST_F(KernelsTest, SwitchFollowsTheOverride) {
  kernels::SetEnabledForTesting(false);
  EXPECT_FALSE(kernels::Enabled());
  kernels::SetEnabledForTesting(true);
  EXPECT_EQ(kernels::Enabled(), kernels::Compiled());
}

TEST_F(KernelsTest, NeverAppliesToCpuTensors) {
  kernels::SetEnabledForTesting(true);
  torch::Tensor x = torch::randn({4, 8});
  EXPECT_FALSE(FusedKernelApplies({&x}));
  // The CPU path is the reference: the same values with the switch either way.
  torch::Tensor amax = torch::tensor(2.5f);
  torch::Tensor on = FakeQuantFp8(x, amax);
  kernels::SetEnabledForTesting(false);
  EXPECT_TRUE(torch::equal(on, FakeQuantFp8(x, amax)));
}

TEST_F(KernelsTest, FakeQuantIsBitExactInEveryDtype) {
  SKIP_WITHOUT_GPU_KERNELS();
  for (auto dtype : {torch::kBFloat16, torch::kFloat16, torch::kFloat32}) {
    torch::Tensor x = (torch::randn({1000, 77}, torch::dtype(torch::kFloat32).device(Cuda())) * 3).to(dtype);
    // Beyond amax (saturates), exact zeros, and the non-finite values torch propagates.
    x[0][0] = 1000;
    x[0][1] = -1000;
    x[0][2] = 0;
    x[0][3] = std::numeric_limits<float>::quiet_NaN();
    x[0][4] = std::numeric_limits<float>::infinity();
    for (float a : {2.0f, 0.37f, 0.0f, 1e-30f, std::numeric_limits<float>::infinity()}) {
      torch::Tensor amax = torch::tensor(a, torch::device(Cuda()));
      auto [ref, fused] = Both([&] { return FakeQuantFp8(x, amax); });
      ASSERT_EQ(fused.scalar_type(), dtype);
      // Bitwise, NaN included: compare the raw bits.
      EXPECT_TRUE(torch::equal(ref.view(dtype == torch::kFloat32 ? torch::kInt32 : torch::kInt16),
                               fused.view(dtype == torch::kFloat32 ? torch::kInt32 : torch::kInt16)))
          << c10::toString(dtype) << " amax " << a;
    }
  }
}

// NVFP4's fake quantizer: the same bits as the torch reference, for every dtype, all-zero and tiny
// blocks (the scale-of-1 rule), values far beyond amax (the 448 clamp), an amax of 0 and packed and
// unaligned storage.
TEST_F(KernelsTest, Nvfp4FakeQuantIsBitExactInEveryDtype) {
  SKIP_WITHOUT_GPU_KERNELS();
  for (auto dtype : {torch::kBFloat16, torch::kFloat16, torch::kFloat32}) {
    torch::Tensor x = (torch::randn({300, 96}, torch::dtype(torch::kFloat32).device(Cuda())) * 0.1).to(dtype);
    x[0].narrow(0, 0, 16).zero_();
    x[1].narrow(0, 16, 16).mul_(1e-6);
    x[2][5] = 60;
    x[3][7] = -60;
    for (float a : {2.0f, 0.07f, 0.0f}) {
      torch::Tensor amax = torch::tensor(a, torch::device(Cuda()));
      auto [ref, fused] = Both([&] { return FakeQuantNvfp4(x, amax); });
      ASSERT_EQ(fused.scalar_type(), dtype);
      const auto bits = dtype == torch::kFloat32 ? torch::kInt32 : torch::kInt16;
      EXPECT_TRUE(torch::equal(ref.view(bits), fused.view(bits))) << c10::toString(dtype) << " amax " << a;
      // A view that starts one block in.
      torch::Tensor tail = x.view(-1).narrow(0, 16, x.numel() - 16);
      auto [ref2, fused2] = Both([&] { return FakeQuantNvfp4(tail.reshape({-1, 16}), amax); });
      EXPECT_TRUE(torch::equal(ref2.view(bits), fused2.view(bits))) << c10::toString(dtype) << " offset view";
    }
  }
}

// The export's quantization: the same FP8 bytes as torch's division, clamp
// and cast, NaN's sign, signed zeros, saturation and subnormal codes included.
TEST_F(KernelsTest, QuantizeIsBitExactInEveryDtype) {
  SKIP_WITHOUT_GPU_KERNELS();
  for (auto dtype : {torch::kBFloat16, torch::kFloat16, torch::kFloat32}) {
    torch::Tensor x = (torch::randn({999, 37}, torch::dtype(torch::kFloat32).device(Cuda())) * 3).to(dtype);
    const float specials[] = {1000.0f,
                              -1000.0f,
                              0.0f,
                              -0.0f,
                              std::numeric_limits<float>::quiet_NaN(),
                              -std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity(),
                              1e-3f,
                              -2e-4f};
    for (int i = 0; i < 10; ++i) x[0][i] = specials[i];
    for (float s : {2.0f / 448, 0.37f / 448, 1.0f, 1e-30f, 3e3f}) {
      torch::Tensor scale = torch::tensor(s, torch::device(Cuda()));
      auto [ref, fused] = Both([&] { return QuantizeFp8(x, scale).view(torch::kUInt8).cpu(); });
      EXPECT_TRUE(torch::equal(ref, fused)) << c10::toString(dtype) << " scale " << s;
      // Views at odd offsets take the element path.
      torch::Tensor odd = x.flatten().narrow(0, 3, 5000);
      auto [oref, ofused] = Both([&] { return QuantizeFp8(odd, scale).view(torch::kUInt8).cpu(); });
      EXPECT_TRUE(torch::equal(oref, ofused)) << c10::toString(dtype) << " scale " << s << " (unaligned)";
    }
  }
}

TEST_F(KernelsTest, CalibrationAmaxMatchesAndPropagatesNan) {
  SKIP_WITHOUT_GPU_KERNELS();
  auto run = [&](const std::vector<torch::Tensor>& inputs) {
    LinearImpl layer(64, 16, true);
    layer.to(Cuda(), torch::kBFloat16);
    CalibrationHook hook;
    torch::InferenceMode guard;
    for (const auto& x : inputs) hook.Forward(layer, x);
    return hook.amax().cpu();
  };
  std::vector<torch::Tensor> xs;
  for (int i = 0; i < 3; ++i)
    xs.push_back(torch::randn({5, 37, 64}, torch::dtype(torch::kBFloat16).device(Cuda())) * (i + 1));
  auto [ref, fused] = Both([&] { return run(xs); });
  EXPECT_EQ(ref.item<float>(), fused.item<float>());
  EXPECT_GT(fused.item<float>(), 0.0f);
  xs[1][2][3][4] = std::numeric_limits<float>::quiet_NaN();
  auto [ref_nan, fused_nan] = Both([&] { return run(xs); });
  EXPECT_TRUE(std::isnan(ref_nan.item<float>()));
  EXPECT_TRUE(std::isnan(fused_nan.item<float>()));
}

TEST_F(KernelsTest, GradientScoresAgreeToDoubleRounding) {
  SKIP_WITHOUT_GPU_KERNELS();
  torch::manual_seed(3);
  LinearImpl layer(256, 96, true);
  layer.to(Cuda(), torch::kBFloat16);
  torch::nn::init::normal_(layer.weight, 0, 0.05);
  torch::Tensor x = torch::randn({4, 50, 256}, torch::dtype(torch::kBFloat16).device(Cuda()));
  torch::Tensor up = torch::randn({4, 50, 96}, torch::dtype(torch::kBFloat16).device(Cuda())) * 1e3;
  auto run = [&] {
    ScoreHook hook({Format::kFp8, Format::kFp8},
                   {torch::tensor(4.0f, torch::device(Cuda())), torch::tensor(1.5f, torch::device(Cuda()))},
                   {Amax(layer.weight), Amax(layer.weight) * 0.5});
    torch::Tensor xi = x.detach().requires_grad_(true);
    torch::Tensor y = hook.Forward(layer, xi);
    torch::autograd::backward({y}, {up});
    return hook.scores().cpu();
  };
  auto [ref, fused] = Both(run);
  ASSERT_EQ(ref.numel(), 2);
  for (int f = 0; f < 2; ++f) {
    const double r = ref[f].item<double>(), g = fused[f].item<double>();
    EXPECT_GT(r, 0);
    EXPECT_NEAR(g, r, 1e-12 * r) << "format " << f;
  }
}

// The element-wise kernels move 16-byte packs where every pointer is 16-byte
// aligned and finish a ragged tail element by element; views at odd offsets
// take the element path throughout. Each against its torch reference.
TEST_F(KernelsTest, PackedAndElementPathsAgreeOnAlignedUnalignedAndRaggedTensors) {
  SKIP_WITHOUT_GPU_KERNELS();
  torch::manual_seed(5);
  for (auto dtype : {torch::kBFloat16, torch::kFloat32}) {
    const auto opts = torch::dtype(dtype).device(Cuda());
    torch::Tensor base = (torch::randn({4200}, opts.dtype(torch::kFloat32)) * 3).to(dtype);
    torch::Tensor other = (torch::randn({4200}, opts.dtype(torch::kFloat32)) * 3).to(dtype);
    for (int64_t offset : {0, 1, 3, 8}) {
      for (int64_t len : {int64_t{4096}, int64_t{4091} - offset, int64_t{5}}) {
        SCOPED_TRACE(testing::Message() << c10::toString(dtype) << " offset " << offset << " len " << len);
        torch::Tensor x = base.narrow(0, offset, len);
        torch::Tensor u = other.narrow(0, 8 - offset % 8, len);
        ASSERT_TRUE(x.is_contiguous());
        torch::Tensor amax = torch::tensor(2.5f, torch::device(Cuda()));
        auto [fq_ref, fq] = Both([&] { return FakeQuantFp8(x, amax); });
        EXPECT_TRUE(torch::equal(fq_ref, fq));
        auto [max_ref, max] = Both([&] {
          torch::Tensor acc;
          AccumulateAmax(x, &acc);
          return acc.cpu();
        });
        EXPECT_EQ(max_ref.item<float>(), max.item<float>());
        EXPECT_EQ(max.item<float>(), x.abs().max().item<float>());

        torch::Tensor y = torch::empty_like(x);
        ASSERT_EQ(kernels::SiluMul(x.data_ptr(), u.data_ptr(), y.data_ptr(), len, KernelDType(x), KernelStream(x)), "");
        EXPECT_TRUE(torch::equal(y, torch::silu(x) * u));

        torch::Tensor acc = torch::zeros({1}, torch::dtype(torch::kFloat64).device(Cuda()));
        ASSERT_EQ(kernels::AccumulateSquaredProduct(x.data_ptr(), u.data_ptr(), len, KernelDType(x),
                                                    acc.data_ptr<double>(), KernelStream(x)),
                  "");
        const double want =
            (x.to(torch::kFloat32) * u.to(torch::kFloat32)).square().sum(torch::kFloat64).item<double>();
        EXPECT_NEAR(acc.item<double>(), want, 1e-12 * want);
      }
    }
  }
}

TEST_F(KernelsTest, RmsNormMatchesUpToTheSumOrder) {
  SKIP_WITHOUT_GPU_KERNELS();
  for (int64_t cols : {2048, 1280, 40}) {
    RMSNorm norm(cols, 1e-6);
    norm->to(Cuda(), torch::kBFloat16);
    torch::nn::init::normal_(norm->weight, 1, 0.1);
    torch::Tensor x = torch::randn({3, 333, cols}, torch::dtype(torch::kBFloat16).device(Cuda())) * 4;
    torch::NoGradGuard no_grad;
    auto [ref, fused] = Both([&] { return norm->forward(x); });
    torch::Tensor diff = (ref.to(torch::kFloat32) - fused.to(torch::kFloat32)).abs();
    // Only the float32 sum of squares is ordered differently: a rounding flip changes an element by one
    // bf16 step (2^-8 relative) at most, and rarely.
    torch::Tensor tol = ref.to(torch::kFloat32).abs() * (1.0 / 128) + 1e-30;
    EXPECT_TRUE((diff <= tol).all().item<bool>()) << "cols " << cols << " max diff " << diff.max().item<float>();
    EXPECT_LT((diff > 0).to(torch::kFloat32).mean().item<float>(), 0.01f) << "cols " << cols;
  }
  // float32: within float32 rounding of the sum.
  RMSNorm norm(512, 1e-6);
  norm->to(Cuda(), torch::kFloat32);
  torch::nn::init::normal_(norm->weight, 1, 0.1);
  torch::Tensor x = torch::randn({64, 512}, torch::device(Cuda()));
  torch::NoGradGuard no_grad;
  auto [ref, fused] = Both([&] { return norm->forward(x); });
  EXPECT_TRUE(torch::allclose(ref, fused, 1e-6, 1e-7));
}

TEST_F(KernelsTest, RmsNormLeavesGradientsToTheReference) {
  SKIP_WITHOUT_GPU_KERNELS();
  kernels::SetEnabledForTesting(true);
  RMSNorm norm(64, 1e-6);
  norm->to(Cuda(), torch::kBFloat16);
  torch::nn::init::ones_(norm->weight);
  torch::Tensor x = torch::randn({8, 64}, torch::dtype(torch::kBFloat16).device(Cuda())).requires_grad_(true);
  EXPECT_FALSE(FusedKernelApplies({&x}));
  torch::Tensor y = norm->forward(x);
  ASSERT_TRUE(y.requires_grad());
  y.sum().backward();
  EXPECT_TRUE(x.grad().defined());
}

TEST_F(KernelsTest, GatedMlpIsBitExact) {
  SKIP_WITHOUT_GPU_KERNELS();
  GatedMlp mlp(128, 344, false);
  mlp->to(Cuda(), torch::kBFloat16);
  for (auto* l : {&mlp->gate_proj, &mlp->up_proj, &mlp->down_proj}) torch::nn::init::normal_((*l)->weight, 0, 0.2);
  torch::Tensor x = torch::randn({2, 99, 128}, torch::dtype(torch::kBFloat16).device(Cuda())) * 3;
  torch::NoGradGuard no_grad;
  auto [ref, fused] = Both([&] { return mlp->forward(x); });
  EXPECT_TRUE(torch::equal(ref, fused)) << "max diff " << (ref - fused).abs().max().item<float>();
}

TEST_F(KernelsTest, RotaryIsBitExact) {
  SKIP_WITHOUT_GPU_KERNELS();
  const int64_t b = 2, s = 57, h = 16, kv = 2, d = 128;
  auto opts = torch::dtype(torch::kBFloat16).device(Cuda());
  // As the text attention lays them out: the projections' [B, S, H, D] output seen as [B, H, S, D].
  torch::Tensor q = torch::randn({b, s, h, d}, opts).transpose(1, 2);
  torch::Tensor k = torch::randn({b, s, kv, d}, opts).transpose(1, 2);
  torch::Tensor angle = torch::rand({b, 1, s, d}, torch::device(Cuda())) * 100;
  torch::Tensor cos = angle.cos().to(torch::kBFloat16), sin = angle.sin().to(torch::kBFloat16);
  torch::NoGradGuard no_grad;
  auto [ref, fused] = Both([&] { return ApplyRotaryInDtype(q, k, cos, sin); });
  EXPECT_TRUE(torch::equal(ref.first, fused.first));
  EXPECT_TRUE(torch::equal(ref.second, fused.second));
  EXPECT_EQ(fused.first.sizes(), q.sizes());
}

}  // namespace
}  // namespace autoquant

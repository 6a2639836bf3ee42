#include "core/quant/fp8.h"

#include <torch/torch.h>

#include "gtest/gtest.h"

namespace autoquant {
namespace {

TEST(Fp8Test, QuantizeSaturatesInsteadOfProducingNan) {
  // A scale smaller than amax/448 pushes values past E4M3's range: the plain cast
  // would give NaN, the saturating cast gives +-448.
  torch::Tensor x = torch::tensor({1000.0f, -1000.0f, 1.0f});
  torch::Tensor q = QuantizeFp8(x, torch::tensor(1.0f)).to(torch::kFloat32);
  EXPECT_EQ(q[0].item<float>(), 448.0f);
  EXPECT_EQ(q[1].item<float>(), -448.0f);
  EXPECT_EQ(q[2].item<float>(), 1.0f);
  EXPECT_TRUE(torch::isnan(x.to(torch::kFloat8_e4m3fn).to(torch::kFloat32))[0].item<bool>());
}

TEST(Fp8Test, ScaleIsAmaxOver448WithOneForZero) {
  EXPECT_FLOAT_EQ(Fp8ScaleFromAmax(torch::tensor(896.0f)).item<float>(), 2.0f);
  EXPECT_FLOAT_EQ(Fp8ScaleFromAmax(torch::tensor(0.0f)).item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(Fp8ScaleFromAmax(torch::tensor(NAN)).item<float>(), 1.0f);
}

TEST(Fp8Test, RoundTripErrorIsWithinE4M3Bound) {
  torch::manual_seed(0);
  torch::Tensor w = torch::randn({256, 128});
  torch::Tensor scale = Fp8ScaleFromAmax(Amax(w));
  torch::Tensor back = DequantizeFp8(QuantizeFp8(w, scale), scale);
  // Normals: half an ulp = 2^-4 relative; subnormals (below 2^-6 * scale): 2^-10 * scale absolute.
  torch::Tensor bound = torch::maximum(w.abs() * std::pow(2.0f, -4), scale * std::pow(2.0f, -10));
  EXPECT_TRUE(((back - w).abs() <= bound * 1.0001).all().item<bool>());
  // The largest magnitude maps to exactly +-448 * scale.
  EXPECT_FLOAT_EQ(back.abs().max().item<float>(), w.abs().max().item<float>());
}

TEST(Fp8Test, FakeQuantMatchesQuantizeDequantizeAndKeepsDtype) {
  torch::manual_seed(1);
  torch::Tensor x = torch::randn({64, 64}).to(torch::kBFloat16);
  torch::Tensor amax = Amax(x);
  torch::Tensor fq = FakeQuantFp8(x, amax);
  EXPECT_EQ(fq.scalar_type(), torch::kBFloat16);
  torch::Tensor ref = DequantizeFp8(QuantizeFp8(x, Fp8ScaleFromAmax(amax)), Fp8ScaleFromAmax(amax));
  // Multiply-by-448/amax (ModelOpt) and divide-by-amax/448 may differ by one FP8 step at ties.
  EXPECT_LE((fq.to(torch::kFloat32) - ref).abs().max().item<float>(), amax.item<float>() / 448 * 32);
  EXPECT_GT((fq.to(torch::kFloat32) - x.to(torch::kFloat32)).abs().max().item<float>(), 0);
}

TEST(Fp8Test, TinyAmaxFakeQuantizesWithUnitAmaxLikeModelOpt) {
  torch::Tensor x = torch::tensor({1e-9f, 0.5f});
  torch::Tensor fq = FakeQuantFp8(x, torch::tensor(0.0f));
  EXPECT_FLOAT_EQ(fq[1].item<float>(), 0.5f);  // amax treated as 1, 0.5 is representable
}

}  // namespace
}  // namespace autoquant

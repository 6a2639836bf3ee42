#include "core/scheme/fp8_storage.h"

#include <torch/torch.h>

#include "core/quant/fp8.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {

TEST(Fp8StorageTest, CompressedTensorsStoresScalesInTheWeightsDtypeAsOneElement) {
  torch::manual_seed(0);
  torch::Tensor w = (torch::randn({16, 32}) * 0.02).to(torch::kBFloat16);
  w.index_put_({0, 0}, 1.0);  // amax 1: 1 / 448 is not a bf16 value, so storing it rounds
  ASSERT_OK_AND_ASSIGN(StoredWeight s, QuantizeForExport(w, ExportFormat::kCompressedTensors));
  EXPECT_EQ(s.weight_scale.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(s.weight_scale.sizes(), torch::IntArrayRef({1}));
  EXPECT_EQ(s.weight.scalar_type(), torch::kFloat8_e4m3fn);
  // The bytes are quantized with the scale as stored (bf16), not with the float32 amax / 448.
  torch::Tensor stored = s.weight_scale.to(torch::kFloat32).reshape({});
  torch::Tensor want = QuantizeFp8(w, stored);
  EXPECT_TRUE(torch::equal(s.weight.view(torch::kByte), want.view(torch::kByte)));
  EXPECT_FALSE(torch::equal(stored, Fp8ScaleFromAmax(Amax(w))));  // the rounding this is about
  ASSERT_OK_AND_ASSIGN(torch::Tensor in, StoredInputScale(3.0f, DType::kBF16, ExportFormat::kCompressedTensors));
  EXPECT_EQ(in.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(in.sizes(), torch::IntArrayRef({1}));
}

TEST(Fp8StorageTest, ModelOptStoresFloat32ScalarScales) {
  torch::Tensor w = torch::randn({8, 8}).to(torch::kBFloat16);
  ASSERT_OK_AND_ASSIGN(StoredWeight s, QuantizeForExport(w, ExportFormat::kModelOpt));
  EXPECT_EQ(s.weight_scale.scalar_type(), torch::kFloat32);
  EXPECT_EQ(s.weight_scale.dim(), 0);
  EXPECT_TRUE(torch::equal(s.weight_scale, Fp8ScaleFromAmax(Amax(w))));
  EXPECT_EQ(ScaleDType(ExportFormat::kModelOpt, DType::kBF16), DType::kF32);
  EXPECT_EQ(ScaleDType(ExportFormat::kCompressedTensors, DType::kF32), DType::kF32);
}

// The export's scale producer must report a torch failure as a Status, not throw.
TEST(Fp8StorageTest, TorchFailureInTheScaleProducerIsAStatus) {
  auto s = QuantizeForExport(torch::Tensor(), ExportFormat::kCompressedTensors);
  EXPECT_FALSE(s.ok());
  // A float8 "weight" cannot be the source of an amax in float32 arithmetic with where(): torch throws.
  auto q = QuantizeForExport(torch::zeros({2, 2}, torch::kFloat8_e4m3fn), ExportFormat::kModelOpt);
  EXPECT_FALSE(q.ok());
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace autoquant

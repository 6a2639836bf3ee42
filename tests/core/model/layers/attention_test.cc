#include "core/model/layers/attention.h"

#include <torch/torch.h>

#include "core/util/torch_status.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;

// The flash kernel's errors, as torch raises them, feed SegmentAttention's
// fallback rule; these tests need no GPU.
torch::Tensor Loop() { return torch::ones({2}); }

template <typename Throw>
std::function<torch::Tensor()> Failing(Throw t) {
  return [t]() -> torch::Tensor {
    t();
    return torch::zeros({2});
  };
}

TEST(FlashOrFallbackTest, OutOfMemoryIsNeverSwallowed) {
  bool fell_back = false;
  auto oom =
      Failing([] { TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate 4.00 GiB"); });
  auto fallback = [&] {
    fell_back = true;
    return Loop();
  };
  EXPECT_THROW(internal::FlashOrFallback(oom, fallback), c10::OutOfMemoryError);
  EXPECT_FALSE(fell_back);
  // At the Status boundary it is ResourceExhausted, message kept.
  absl::Status s = TorchCall([&] { internal::FlashOrFallback(oom, fallback); }, "vision attention");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("Tried to allocate 4.00 GiB"));
  EXPECT_FALSE(fell_back);
}

TEST(FlashOrFallbackTest, OtherDeviceErrorsPropagate) {
  auto fault = Failing([] { TORCH_CHECK(false, "CUDA error: an illegal memory access was encountered"); });
  EXPECT_THROW(internal::FlashOrFallback(fault, Loop), c10::Error);
  absl::Status s = TorchCall([&] { internal::FlashOrFallback(fault, Loop); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(s.message(), HasSubstr("illegal memory access"));
}

TEST(FlashOrFallbackTest, UnavailableKernelFallsBack) {
  const std::vector<std::function<torch::Tensor()>> unavailable = {
      Failing([] { TORCH_CHECK(false, "USE_FLASH_ATTENTION was not enabled for build."); }),
      Failing([] { TORCH_CHECK(false, "FlashAttention only supports Ampere GPUs or newer."); }),
      Failing([] { TORCH_CHECK(false, "FlashAttention forward only supports head dimension at most 256"); }),
      Failing([] { TORCH_CHECK(false, "CUDA error: no kernel image is available for execution on the device"); }),
      Failing([] {
        TORCH_CHECK_NOT_IMPLEMENTED(false,
                                    "Could not run 'aten::_flash_attention_forward' with arguments from the "
                                    "'CUDA' backend.");
      }),
  };
  for (size_t i = 0; i < unavailable.size(); ++i) {
    torch::Tensor out;
    EXPECT_NO_THROW(out = internal::FlashOrFallback(unavailable[i], Loop)) << i;
    EXPECT_TRUE(torch::equal(out, Loop())) << i;
  }
}

TEST(FlashOrFallbackTest, WorkingKernelIsUsed) {
  torch::Tensor out = internal::FlashOrFallback([] { return torch::full({2}, 7.0f); }, Loop);
  EXPECT_TRUE(torch::equal(out, torch::full({2}, 7.0f)));
}

// On the CPU the per-segment loop is the path: attention within each segment only.
TEST(SegmentAttentionTest, SegmentsDoNotAttendToEachOther) {
  torch::manual_seed(0);
  torch::Tensor q = torch::randn({6, 2, 4}), k = torch::randn({6, 2, 4}), v = torch::randn({6, 2, 4});
  torch::Tensor whole = SegmentAttention(q, k, v, {0, 2, 6}, 0.5);
  torch::Tensor first = SegmentAttention(q.narrow(0, 0, 2), k.narrow(0, 0, 2), v.narrow(0, 0, 2), {0, 2}, 0.5);
  EXPECT_TRUE(torch::allclose(whole.narrow(0, 0, 2), first));
}

// q: [1, 16, 1, 64] against keys that are views of a longer cache buffer, with
// 2 KV heads: what a decode step passes.
struct DecodeCase {
  torch::Tensor q, k, v;
};
DecodeCase MakeDecodeCase(torch::TensorOptions opts) {
  torch::manual_seed(0);
  torch::Tensor buf_k = torch::randn({1, 2, 64, 64}), buf_v = torch::randn({1, 2, 64, 64});
  return {torch::randn({1, 16, 1, 64}).to(opts), buf_k.to(opts).narrow(2, 0, 37), buf_v.to(opts).narrow(2, 0, 37)};
}

TEST(DecodeAttentionTest, OnTheCpuIsCausalAttention) {
  torch::InferenceMode guard;
  DecodeCase c = MakeDecodeCase(torch::kFloat32);
  EXPECT_TRUE(torch::equal(DecodeAttention(c.q, c.k, c.v, 0.125), CausalAttention(c.q, c.k, c.v, /*mask=*/{}, 0.125)));
}

TEST(DecodeAttentionTest, CudaBf16MatchesFloat32Reference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
  torch::InferenceMode guard;
  DecodeCase c = MakeDecodeCase(torch::dtype(torch::kBFloat16).device(torch::kCUDA));
  torch::Tensor out = DecodeAttention(c.q, c.k, c.v, 0.125).to(torch::kCPU, torch::kFloat32);
  auto f32 = [](const torch::Tensor& t) { return t.to(torch::kCPU, torch::kFloat32); };
  torch::Tensor ref = CausalAttention(f32(c.q), f32(c.k), f32(c.v), /*mask=*/{}, 0.125);
  EXPECT_EQ(out.sizes(), ref.sizes());
  EXPECT_LE((out - ref).abs().max().item<double>(), 2e-2);  // bf16 output rounding
}

}  // namespace
}  // namespace autoquant

// Proves the build's LibTorch CUDA support on a real GPU: a CUDA tensor cast
// to float8_e4m3fn and back gives the values E4M3 represents. Skipped, with
// the reason, where no CUDA device is present (CI, development machines).
#include <torch/cuda.h>
#include <torch/torch.h>

#include "gtest/gtest.h"

namespace autoquant {
namespace {

TEST(Fp8CastCudaTest, RoundTripsOnTheGpu) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device visible (torch::cuda::device_count() == 0): "
                    "run on the GPU machine with scripts/gpu/run.sh test";
  }
  // Exactly representable E4M3 values survive; others round to nearest-even.
  torch::Tensor exact = torch::tensor({0.0f, 1.0f, -2.0f, 0.015625f, 448.0f, -448.0f, 3.5f, 0.001953125f});
  torch::Tensor rounded_in = torch::tensor({1.0625f, 1.1875f, 300.0f, 0.3f});
  torch::Tensor rounded_want = torch::tensor({1.0f, 1.25f, 288.0f, 0.3125f});

  auto cuda = torch::Device(torch::kCUDA, 0);
  torch::Tensor back = exact.to(cuda).to(torch::kFloat8_e4m3fn).to(torch::kFloat32).cpu();
  EXPECT_TRUE(torch::equal(back, exact)) << back;
  torch::Tensor r = rounded_in.to(cuda).to(torch::kFloat8_e4m3fn).to(torch::kFloat32).cpu();
  EXPECT_TRUE(torch::equal(r, rounded_want)) << r;

  // The GPU cast agrees with the CPU cast bit for bit on random data in range.
  torch::manual_seed(0);
  torch::Tensor x = (torch::randn({4096}) * 100).clamp(-448, 448);
  torch::Tensor gpu = x.to(cuda).to(torch::kFloat8_e4m3fn).cpu().view(torch::kByte);
  torch::Tensor cpu = x.to(torch::kFloat8_e4m3fn).view(torch::kByte);
  EXPECT_TRUE(torch::equal(gpu, cpu));
  std::cout << "[fp8 proof] device: " << static_cast<int>(torch::cuda::device_count()) << " CUDA device(s); "
            << "e4m3 round trip exact on " << exact.numel() << " values, rounding on " << rounded_in.numel()
            << ", GPU==CPU on " << x.numel() << "\n";
}

}  // namespace
}  // namespace autoquant

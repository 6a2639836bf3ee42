#include "core/model/device.h"

#include <torch/cuda.h>

#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;

TEST(ParseDeviceTest, AnUnknownNameIsInvalidArgumentNamingTheAcceptedOnes) {
  for (const char* name : {"tpu", "", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda:0x", "mps", "meta", "cuda:99999"}) {
    auto d = ParseDevice(name);
    ASSERT_FALSE(d.ok()) << name;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << name << ": " << d.status();
    EXPECT_THAT(d.status().message(), HasSubstr("auto | cpu | cuda | cuda:N")) << name;
  }
}

TEST(ParseDeviceTest, CpuAutoAndCudaResolve) {
  ASSERT_OK_AND_ASSIGN(torch::Device cpu, ParseDevice("cpu"));
  EXPECT_TRUE(cpu.is_cpu());
  ASSERT_OK_AND_ASSIGN(torch::Device aut, ParseDevice("auto"));
  EXPECT_EQ(aut.is_cuda(), torch::cuda::is_available());
  for (const char* name : {"cuda", "cuda:0"}) {
    auto d = ParseDevice(name);
    if (torch::cuda::is_available()) {
      ASSERT_TRUE(d.ok()) << d.status();
      EXPECT_TRUE(d->is_cuda());
    } else {
      EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition) << name;
      EXPECT_THAT(d.status().message(), HasSubstr("no CUDA device"));
    }
  }
  // A device index beyond the visible devices is refused here, not by the first tensor moved there.
  auto far = ParseDevice("cuda:200");
  EXPECT_EQ(far.status().code(), absl::StatusCode::kFailedPrecondition) << far.status();
}

TEST(ParseDtypeTest, AutoFollowsTheDeviceAndUnknownNamesAreInvalidArgument) {
  ASSERT_OK_AND_ASSIGN(torch::ScalarType a, ParseDtype("auto", torch::Device(torch::kCPU)));
  EXPECT_EQ(a, torch::kFloat32);
  ASSERT_OK_AND_ASSIGN(torch::ScalarType e, ParseDtype("", torch::Device(torch::kCUDA)));
  EXPECT_EQ(e, torch::kBFloat16);
  ASSERT_OK_AND_ASSIGN(torch::ScalarType b, ParseDtype("bf16", torch::Device(torch::kCPU)));
  EXPECT_EQ(b, torch::kBFloat16);
  auto bad = ParseDtype("fp16", torch::Device(torch::kCPU));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("auto | bfloat16 | float32"));
}

}  // namespace
}  // namespace autoquant

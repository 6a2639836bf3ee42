// TorchCall, the one adapter from LibTorch's exceptions to absl::Status: what
// each kind of callable returns, and which code and message each exception
// becomes (a real failing torch op among them).
#include "core/util/torch_status.h"

#include <c10/util/Exception.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/match.h"

namespace autoquant {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(TorchCallTest, VoidCallableRunsAndReturnsOk) {
  bool ran = false;
  auto s = TorchCall([&] { ran = true; });
  static_assert(std::is_same_v<decltype(s), absl::Status>);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_TRUE(ran);
}

TEST(TorchCallTest, ValueCallableReturnsStatusOrOfTheValue) {
  auto r = TorchCall([] { return 41 + 1; });
  static_assert(std::is_same_v<decltype(r), absl::StatusOr<int>>);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, 42);

  // Move-only values are moved out, not copied.
  auto p = TorchCall([] { return std::make_unique<int>(7); });
  static_assert(std::is_same_v<decltype(p), absl::StatusOr<std::unique_ptr<int>>>);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(**p, 7);
}

TEST(TorchCallTest, TensorResultOfAWorkingOpIsReturned) {
  auto r = TorchCall([] { return torch::ones({2, 3}).matmul(torch::full({3, 1}, 2.0)); });
  static_assert(std::is_same_v<decltype(r), absl::StatusOr<torch::Tensor>>);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sizes().vec(), (std::vector<int64_t>{2, 1}));
  EXPECT_TRUE(torch::equal(*r, torch::full({2, 1}, 6.0)));
}

// A callable that already speaks Status is passed through: neither re-wrapped
// nor given the context prefix.
TEST(TorchCallTest, StatusAndStatusOrCallablesPassThrough) {
  auto ok = TorchCall([] { return absl::OkStatus(); });
  static_assert(std::is_same_v<decltype(ok), absl::Status>);
  EXPECT_TRUE(ok.ok());

  auto err = TorchCall([] { return absl::NotFoundError("no such group"); }, "ctx");
  static_assert(std::is_same_v<decltype(err), absl::Status>);
  EXPECT_EQ(err.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(err.message(), "no such group");

  auto value = TorchCall([]() -> absl::StatusOr<std::string> { return std::string("v"); });
  static_assert(std::is_same_v<decltype(value), absl::StatusOr<std::string>>);
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, "v");

  auto bad = TorchCall([]() -> absl::StatusOr<int> { return absl::OutOfRangeError("7 bits"); }, "ctx");
  static_assert(std::is_same_v<decltype(bad), absl::StatusOr<int>>);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(bad.status().message(), "7 bits");
}

// The error a user reads: the context, then torch's own first lines, and
// none of the C++ backtrace torch appends.
TEST(TorchCallTest, FailingTorchOpBecomesInternalWithContextAndNoBacktrace) {
  auto r = TorchCall([] { return torch::ones({2, 3}).matmul(torch::ones({4, 5})); }, "forward");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StartsWith(r.status().message(), "forward: ")) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("2x3"));
  EXPECT_THAT(r.status().message(), HasSubstr("4x5"));
  EXPECT_THAT(r.status().message(), Not(HasSubstr("Exception raised from")));

  // The same from a void callable, and with the default context.
  torch::Tensor t = torch::ones({6});
  absl::Status s = TorchCall([&] { t = t.view({7}); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StartsWith(s.message(), "torch: ")) << s;
  EXPECT_THAT(s.message(), HasSubstr("[7]"));
  EXPECT_THAT(s.message(), Not(HasSubstr("Exception raised from")));
  EXPECT_EQ(t.numel(), 6);
}

TEST(TorchCallTest, DeviceOutOfMemoryBecomesResourceExhausted) {
  auto r = TorchCall(
      []() -> int { C10_THROW_ERROR(OutOfMemoryError, "CUDA out of memory. Tried to allocate 2.00 GiB"); }, "score");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StartsWith(r.status().message(), "score: out of device memory: ")) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("Tried to allocate 2.00 GiB"));
  EXPECT_THAT(r.status().message(), Not(HasSubstr("Exception raised from")));
}

TEST(TorchCallTest, HostOutOfMemoryBecomesResourceExhausted) {
  absl::Status s = TorchCall([] { throw std::bad_alloc(); }, "load");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), "load: out of host memory");
}

// Also where a std::exception's message carries a torch-style backtrace: only
// the part before it is kept.
TEST(TorchCallTest, StandardExceptionBecomesInternalWithItsFirstLines) {
  absl::Status s = TorchCall([] { throw std::runtime_error("disk gone"); }, "save");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(), "save: disk gone");

  auto r = TorchCall(
      []() -> absl::StatusOr<int> {
        throw std::invalid_argument("bad shape\nline two\nException raised from f at x.cpp:1\nframe #0");
      },
      "export");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(r.status().message(), "export: bad shape\nline two");
}

TEST(TorchCallTest, NonExceptionThrowBecomesUnknownException) {
  absl::Status s = TorchCall([] { throw 42; }, "kernel");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(), "kernel: unknown exception");
}

TEST(StatusFromCurrentExceptionTest, MapsTheExceptionBeingHandled) {
  try {
    torch::ones({2}).view({3});
    FAIL() << "view({3}) of 2 elements did not throw";
  } catch (...) {
    absl::Status s = StatusFromCurrentException("reshape");
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
    EXPECT_TRUE(absl::StartsWith(s.message(), "reshape: ")) << s;
  }
  try {
    throw std::bad_alloc();
  } catch (...) {
    EXPECT_EQ(StatusFromCurrentException("x").code(), absl::StatusCode::kResourceExhausted);
  }
}

}  // namespace
}  // namespace autoquant

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/kernels/kernels.h"

namespace autoquant::kernels {
namespace {

// -1: follow the environment; 0/1: SetEnabledForTesting.
std::atomic<int> g_override{-1};

bool EnvAllows() {
  static const bool allowed = [] {
    const char* v = std::getenv("AUTOQUANT_CUDA_KERNELS");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return allowed;
}

}  // namespace

bool Compiled() {
#ifdef AUTOQUANT_HAVE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

bool Enabled() {
  if (!Compiled()) return false;
  const int o = g_override.load(std::memory_order_relaxed);
  return o < 0 ? EnvAllows() : o == 1;
}

void SetEnabledForTesting(bool enabled) { g_override.store(enabled ? 1 : 0, std::memory_order_relaxed); }

}  // namespace autoquant::kernels

#ifndef AUTOQUANT_HAVE_CUDA_KERNELS
// Built without nvcc: Enabled() is false, so no caller reaches these; should one, it gets an error, not
// a wrong result.
namespace autoquant::kernels {
namespace {
std::string NotBuilt(const char* what) { return std::string(what) + ": this build has no CUDA kernels"; }
}  // namespace

std::string FakeQuantFp8(const void*, void*, int64_t, DType, const float*, void*) { return NotBuilt("FakeQuantFp8"); }
std::string QuantizeFp8(const void*, void*, int64_t, DType, const float*, void*) { return NotBuilt("QuantizeFp8"); }
std::string FakeQuantNvfp4(const void*, void*, int64_t, DType, const float*, void*) {
  return NotBuilt("FakeQuantNvfp4");
}
std::string AccumulateAbsMax(const void*, int64_t, DType, float*, void*) { return NotBuilt("AccumulateAbsMax"); }
std::string AccumulateSquaredProduct(const void*, const void*, int64_t, DType, double*, void*) {
  return NotBuilt("AccumulateSquaredProduct");
}
std::string RmsNorm(const void*, const void*, void*, int64_t, int64_t, float, DType, void*) {
  return NotBuilt("RmsNorm");
}
std::string SiluMul(const void*, const void*, void*, int64_t, DType, void*) { return NotBuilt("SiluMul"); }
std::string Rotary(const void*, const void*, const void*, void*, int64_t, int64_t, int64_t, int64_t, DType, void*) {
  return NotBuilt("Rotary");
}
}  // namespace autoquant::kernels
#endif

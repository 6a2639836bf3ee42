#include <atomic>
#include <cstdlib>
#include <cstring>

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

// NVFP4 fake quantization in one pass: a thread per block of 16 elements
// finds the block's max |x|, its E4M3 scale and the E2M1 value of each
// element, instead of the reference's chain of torch ops (core/quant/nvfp4.cc
// FakeQuantNvfp4), whose arithmetic it repeats operation by operation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "core/kernels/kernels.h"
#include "core/kernels/launch.cuh"

namespace autoquant::kernels {
namespace {

constexpr int kBlock = 16;

// ModelOpt's fp4_round_magnitude: ties alternate to the even code.
__device__ __forceinline__ float RoundE2M1Magnitude(float a) {
  if (a <= 0.25f) return 0.0f;
  if (a < 0.75f) return 0.5f;
  if (a <= 1.25f) return 1.0f;
  if (a < 1.75f) return 1.5f;
  if (a <= 2.5f) return 2.0f;
  if (a < 3.5f) return 3.0f;
  if (a <= 5.0f) return 4.0f;
  return 6.0f;
}

template <typename T>
__global__ void FakeQuantNvfp4Kernel(const T* __restrict__ x, T* __restrict__ y, int64_t blocks, const float* amax,
                                     bool packed) {
  float g = *amax / 2688.0f;
  if (!(g > 0.0f)) g = 1e-12f;
  const float six_g = 6.0f * g;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks; b += stride) {
    float v[kBlock];
    const T* in = x + b * kBlock;
    if (packed) {
#pragma unroll
      for (int p = 0; p < kBlock / kPack<T>; ++p) {
        const Pack<T> pk = reinterpret_cast<const Pack<T>*>(in)[p];
#pragma unroll
        for (int k = 0; k < kPack<T>; ++k) v[p * kPack<T> + k] = ToFloat(pk.v[k]);
      }
    } else {
#pragma unroll
      for (int k = 0; k < kBlock; ++k) v[k] = ToFloat(in[k]);
    }
    float bmax = 0.0f;
#pragma unroll
    for (int k = 0; k < kBlock; ++k) bmax = fmaxf(bmax, fabsf(v[k]));
    float s = fminf(bmax / six_g, 448.0f);
    s = static_cast<float>(__nv_fp8_e4m3(s)) * g;  // round to nearest even; s <= 448 cannot saturate
    if (!(s >= 1e-5f)) s = 1.0f;
    T out[kBlock];
#pragma unroll
    for (int k = 0; k < kBlock; ++k) {
      const float r = RoundE2M1Magnitude(fabsf(v[k]) / s) * s;
      out[k] = FromFloat<T>(v[k] >= 0.0f ? r : -r);
    }
    T* o = y + b * kBlock;
    if (packed) {
#pragma unroll
      for (int p = 0; p < kBlock / kPack<T>; ++p) {
        Pack<T> pk;
#pragma unroll
        for (int k = 0; k < kPack<T>; ++k) pk.v[k] = out[p * kPack<T> + k];
        reinterpret_cast<Pack<T>*>(o)[p] = pk;
      }
    } else {
#pragma unroll
      for (int k = 0; k < kBlock; ++k) o[k] = out[k];
    }
  }
}

}  // namespace

std::string FakeQuantNvfp4(const void* x, void* y, int64_t n, DType dtype, const float* amax, void* stream) {
  if (n == 0) return "";
  if (n % kBlock != 0) return "FakeQuantNvfp4: the element count is not a multiple of 16";
  auto s = static_cast<cudaStream_t>(stream);
  const bool packed = Aligned16(x) && Aligned16(y);
  return ForDType(dtype, "FakeQuantNvfp4", [&](auto tag) {
    using T = decltype(tag);
    const Grid grid = GridFor(n / kBlock);
    FakeQuantNvfp4Kernel<<<grid.blocks, grid.threads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(y), n / kBlock,
                                                              amax, packed);
  });
}

}  // namespace autoquant::kernels

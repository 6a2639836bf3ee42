// Fused element-wise layers of the forward pass (RMSNorm, SiLU·up, rotary),
// one pass each instead of the reference's 3-8 torch ops; the roundings to the
// storage dtype are the reference's, step by step.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "core/kernels/kernels.h"
#include "core/kernels/launch.cuh"

namespace autoquant::kernels {
namespace {

template <typename T>
__global__ void RmsNormKernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y, int64_t cols,
                              float eps) {
  const T* row = x + blockIdx.x * cols;
  T* out = y + blockIdx.x * cols;
  float sum = 0;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = ToFloat(row[i]);
    sum += v * v;
  }
  sum = BlockReduceSum(sum);
  // torch: mean = sum * (1/N), then rsqrt(mean + eps) in float32.
  const float rs = rsqrtf(sum * (1.0f / static_cast<float>(cols)) + eps);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    out[i] = FromFloat<T>(ToFloat(w[i]) * Round<T>(ToFloat(row[i]) * rs));
  }
}

template <typename T>
__global__ void SiluMulKernel(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ y, int64_t n,
                              bool packed) {
  auto silu_mul = [](T gi, T ui) {
    const float g = ToFloat(gi);
    return FromFloat<T>(Round<T>(g / (1.0f + expf(-g))) * ToFloat(ui));
  };
  ForEachPacked<T>(
      n, packed,
      [&](int64_t p) {
        Pack<T> g = reinterpret_cast<const Pack<T>*>(gate)[p];
        const Pack<T> u = reinterpret_cast<const Pack<T>*>(up)[p];
#pragma unroll
        for (int k = 0; k < kPack<T>; ++k) g.v[k] = silu_mul(g.v[k], u.v[k]);
        reinterpret_cast<Pack<T>*>(y)[p] = g;
      },
      [&](int64_t i) { y[i] = silu_mul(gate[i], up[i]); });
}

template <typename T>
__global__ void RotaryKernel(const T* __restrict__ x, const T* __restrict__ cos, const T* __restrict__ sin,
                             T* __restrict__ out, int64_t n, int64_t seq, int64_t heads, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = i % head_dim;
    const int64_t bs = i / (head_dim * heads);  // b * seq + s
    const float c = ToFloat(cos[bs * head_dim + d]), s = ToFloat(sin[bs * head_dim + d]);
    const float rot = d < half ? -ToFloat(x[i + half]) : ToFloat(x[i - half]);
    out[i] = FromFloat<T>(Round<T>(ToFloat(x[i]) * c) + Round<T>(rot * s));
  }
}

}  // namespace

std::string RmsNorm(const void* x, const void* w, void* y, int64_t rows, int64_t cols, float eps, DType dtype,
                    void* stream) {
  if (rows == 0 || cols == 0) return "";
  auto s = static_cast<cudaStream_t>(stream);
  // One block per row (rows fit a grid's x dimension: 2^31 - 1).
  const unsigned threads = cols >= 1024 ? 256 : 128;
  return ForDType(dtype, "RmsNorm", [&](auto tag) {
    using T = decltype(tag);
    RmsNormKernel<<<static_cast<unsigned>(rows), threads, 0, s>>>(static_cast<const T*>(x), static_cast<const T*>(w),
                                                                  static_cast<T*>(y), cols, eps);
  });
}

std::string SiluMul(const void* gate, const void* up, void* y, int64_t n, DType dtype, void* stream) {
  if (n == 0) return "";
  auto s = static_cast<cudaStream_t>(stream);
  const bool packed = Aligned16(gate) && Aligned16(up) && Aligned16(y);
  return ForDType(dtype, "SiluMul", [&](auto tag) {
    using T = decltype(tag);
    const Grid grid = PackedGridFor<T>(n, packed);
    SiluMulKernel<<<grid.blocks, grid.threads, 0, s>>>(static_cast<const T*>(gate), static_cast<const T*>(up),
                                                       static_cast<T*>(y), n, packed);
  });
}

std::string Rotary(const void* x, const void* cos, const void* sin, void* out, int64_t batch, int64_t seq,
                   int64_t heads, int64_t head_dim, DType dtype, void* stream) {
  const int64_t n = batch * seq * heads * head_dim;
  if (n == 0) return "";
  const Grid grid = GridFor(n);
  auto s = static_cast<cudaStream_t>(stream);
  return ForDType(dtype, "Rotary", [&](auto tag) {
    using T = decltype(tag);
    RotaryKernel<<<grid.blocks, grid.threads, 0, s>>>(static_cast<const T*>(x), static_cast<const T*>(cos),
                                                      static_cast<const T*>(sin), static_cast<T*>(out), n, seq, heads,
                                                      head_dim);
  });
}

}  // namespace autoquant::kernels

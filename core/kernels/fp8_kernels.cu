// FP8 fake quantization and the two reductions the quantization hooks need
// (calibration's running max |x|, gradient scoring's Σ (g·ΔY)²), each one
// pass over its inputs instead of the reference's chain of torch ops.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "core/kernels/kernels.h"
#include "core/kernels/launch.cuh"

namespace autoquant::kernels {
namespace {

constexpr float kFp8Max = 448.0f;

// NaN stays NaN, as torch's clamp.
__device__ __forceinline__ float ClampKeepNan(float v, float lo, float hi) {
  return v != v ? v : fminf(fmaxf(v, lo), hi);
}

template <typename T>
__global__ void FakeQuantKernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, const float* amax, bool packed) {
  float a = *amax;
  // amax <= 2^-24 or not finite counts as 1 (fp8.h).
  if (!(isfinite(a) && a > 5.9604644775390625e-08f)) a = 1.0f;
  const float s = kFp8Max / a;
  const float r = 1.0f / s;
  auto fq = [&](T in) {
    const float v = ClampKeepNan(ToFloat(in) * s, -kFp8Max, kFp8Max);
    const __nv_fp8_e4m3 q(v);  // round to nearest even; |v| <= 448 cannot saturate
    return FromFloat<T>(static_cast<float>(q) * r);
  };
  ForEachPacked<T>(
      n, packed,
      [&](int64_t p) {
        Pack<T> v = reinterpret_cast<const Pack<T>*>(x)[p];
#pragma unroll
        for (int k = 0; k < kPack<T>; ++k) v.v[k] = fq(v.v[k]);
        reinterpret_cast<Pack<T>*>(y)[p] = v;
      },
      [&](int64_t i) { y[i] = fq(x[i]); });
}

// One FP8 code with torch's cast: NaN -> 0x7F with the input's sign
// (c10::Float8_e4m3fn), everything else (|v| <= 448 here) rounded to nearest even.
__device__ __forceinline__ uint8_t Fp8Code(float v) {
  if (v != v) return static_cast<uint8_t>(0x7F | (signbit(v) ? 0x80 : 0));
  return __nv_fp8_e4m3(v).__x;
}

template <typename T>
struct alignas(kPack<T>) CodePack {
  uint8_t v[kPack<T>];
};

template <typename T>
__global__ void QuantizeKernel(const T* __restrict__ x, uint8_t* __restrict__ q, int64_t n, const float* scale,
                               bool packed) {
  const float s = *scale;
  auto code = [&](T in) { return Fp8Code(ClampKeepNan(ToFloat(in) / s, -kFp8Max, kFp8Max)); };
  ForEachPacked<T>(
      n, packed,
      [&](int64_t p) {
        const Pack<T> v = reinterpret_cast<const Pack<T>*>(x)[p];
        CodePack<T> c;
#pragma unroll
        for (int k = 0; k < kPack<T>; ++k) c.v[k] = code(v.v[k]);
        reinterpret_cast<CodePack<T>*>(q)[p] = c;
      },
      [&](int64_t i) { q[i] = code(x[i]); });
}

template <typename T>
__global__ void AbsMaxKernel(const T* __restrict__ x, int64_t n, float* acc, bool packed) {
  // |x| as float bits: non-negative floats (and NaN, above +inf) order as ints.
  int m = 0;
  ForEachPacked<T>(
      n, packed,
      [&](int64_t p) {
        const Pack<T> v = reinterpret_cast<const Pack<T>*>(x)[p];
#pragma unroll
        for (int k = 0; k < kPack<T>; ++k) m = max(m, __float_as_int(fabsf(ToFloat(v.v[k]))));
      },
      [&](int64_t i) { m = max(m, __float_as_int(fabsf(ToFloat(x[i])))); });
  m = BlockReduceMax(m);
  if (threadIdx.x == 0) atomicMax(reinterpret_cast<int*>(acc), m);
}

template <typename T>
__global__ void SquaredProductKernel(const T* __restrict__ g, const T* __restrict__ d, int64_t n, double* acc,
                                     bool packed) {
  double sum = 0;
  auto add = [&](T gi, T di) {
    const float p = ClampKeepNan(ToFloat(gi) * ToFloat(di), -1e10f, 1e10f);
    sum += static_cast<double>(p * p);
  };
  ForEachPacked<T>(
      n, packed,
      [&](int64_t p) {
        const Pack<T> gv = reinterpret_cast<const Pack<T>*>(g)[p];
        const Pack<T> dv = reinterpret_cast<const Pack<T>*>(d)[p];
#pragma unroll
        for (int k = 0; k < kPack<T>; ++k) add(gv.v[k], dv.v[k]);
      },
      [&](int64_t i) { add(g[i], d[i]); });
  sum = BlockReduceSum(sum);
  if (threadIdx.x == 0) atomicAdd(acc, sum);
}

}  // namespace

std::string FakeQuantFp8(const void* x, void* y, int64_t n, DType dtype, const float* amax, void* stream) {
  if (n == 0) return "";
  auto s = static_cast<cudaStream_t>(stream);
  const bool packed = Aligned16(x) && Aligned16(y);
  return ForDType(dtype, "FakeQuantFp8", [&](auto tag) {
    using T = decltype(tag);
    const Grid grid = PackedGridFor<T>(n, packed);
    FakeQuantKernel<<<grid.blocks, grid.threads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(y), n, amax, packed);
  });
}

std::string QuantizeFp8(const void* x, void* q, int64_t n, DType dtype, const float* scale, void* stream) {
  if (n == 0) return "";
  auto s = static_cast<cudaStream_t>(stream);
  return ForDType(dtype, "QuantizeFp8", [&](auto tag) {
    using T = decltype(tag);
    const bool packed = Aligned16(x) && reinterpret_cast<uintptr_t>(q) % kPack<T> == 0;
    const Grid grid = PackedGridFor<T>(n, packed);
    QuantizeKernel<<<grid.blocks, grid.threads, 0, s>>>(static_cast<const T*>(x), static_cast<uint8_t*>(q), n, scale,
                                                        packed);
  });
}

std::string AccumulateAbsMax(const void* x, int64_t n, DType dtype, float* acc, void* stream) {
  if (n == 0) return "";
  auto s = static_cast<cudaStream_t>(stream);
  const bool packed = Aligned16(x);
  return ForDType(dtype, "AccumulateAbsMax", [&](auto tag) {
    using T = decltype(tag);
    const Grid grid = PackedGridFor<T>(n, packed, kReduceBlocks);
    AbsMaxKernel<<<grid.blocks, grid.threads, 0, s>>>(static_cast<const T*>(x), n, acc, packed);
  });
}

std::string AccumulateSquaredProduct(const void* g, const void* d, int64_t n, DType dtype, double* acc, void* stream) {
  if (n == 0) return "";
  auto s = static_cast<cudaStream_t>(stream);
  const bool packed = Aligned16(g) && Aligned16(d);
  return ForDType(dtype, "AccumulateSquaredProduct", [&](auto tag) {
    using T = decltype(tag);
    const Grid grid = PackedGridFor<T>(n, packed, kReduceBlocks);
    SquaredProductKernel<<<grid.blocks, grid.threads, 0, s>>>(static_cast<const T*>(g), static_cast<const T*>(d), n,
                                                              acc, packed);
  });
}

}  // namespace autoquant::kernels

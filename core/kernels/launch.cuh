// What the .cu files share: dtype conversions, launch shapes, block
// reductions and the launch-error check.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/kernels/kernels.h"

namespace autoquant::kernels {

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }

// Round to nearest even, as torch's casts.
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}

// A float rounded through T and back: what a torch op producing T stores.
template <typename T>
__device__ __forceinline__ float Round(float v) {
  return ToFloat(FromFloat<T>(v));
}

constexpr int kThreads = 256;
// Grid-stride reductions: enough blocks to fill an H200 or an RTX 5090 a few times over, few atomics.
constexpr int64_t kReduceBlocks = 1024;

struct Grid {
  unsigned blocks;
  unsigned threads;
};

inline Grid GridFor(int64_t n, int64_t max_blocks = 65535) {
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, max_blocks));
  return Grid{static_cast<unsigned>(blocks), static_cast<unsigned>(kThreads)};
}

// 16-byte packs for element-wise kernels: one vector load or store moves 8
// bf16/fp16 or 4 float32 elements instead of one.
template <typename T>
constexpr int kPack = 16 / sizeof(T);
template <typename T>
struct alignas(16) Pack {
  T v[kPack<T>];
};

inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Launch shape of an element-wise kernel over n elements, packed when `packed`.
template <typename T>
Grid PackedGridFor(int64_t n, bool packed, int64_t max_blocks = 65535) {
  return GridFor(packed ? (n + kPack<T> - 1) / kPack<T> : n, max_blocks);
}

// Calls f(i) for every index i < n of this thread's grid-stride share:
// with `packed`, whole packs first through fp(pack index) (f's index i =
// pack * kPack<T> + k for each of its elements), then the ragged tail by f.
template <typename T, typename FPack, typename F>
__device__ __forceinline__ void ForEachPacked(int64_t n, bool packed, FPack&& fp, F&& f) {
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t done = 0;
  if (packed) {
    const int64_t packs = n / kPack<T>;
    for (int64_t p = tid; p < packs; p += stride) fp(p);
    done = packs * kPack<T>;
  }
  for (int64_t i = done + tid; i < n; i += stride) f(i);
}

template <typename T>
__device__ __forceinline__ T WarpReduceMax(T v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

template <typename T>
__device__ __forceinline__ T WarpReduceSum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Over the whole block (blockDim.x a multiple of 32, at most 1024); the result is valid in thread 0.
template <typename T>
__device__ __forceinline__ T BlockReduceMax(T v) {
  __shared__ T warps[32];
  v = WarpReduceMax(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warps[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < int(blockDim.x / 32) ? warps[lane] : T(0);
    v = WarpReduceMax(v);
  }
  return v;
}

// Result valid in every thread (broadcast through shared memory).
template <typename T>
__device__ __forceinline__ T BlockReduceSum(T v) {
  __shared__ T warps[32];
  __shared__ T total;
  v = WarpReduceSum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warps[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < int(blockDim.x / 32) ? warps[lane] : T(0);
    v = WarpReduceSum(v);
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}

inline std::string LaunchError(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return "";
  return std::string(what) + ": " + cudaGetErrorString(e);
}

// Calls launch(T{}) with T the element type of `dtype`, then reports the launch's error.
template <typename F>
std::string ForDType(DType dtype, const char* what, F&& launch) {
  switch (dtype) {
    case DType::kFloat32:
      launch(float{});
      break;
    case DType::kBFloat16:
      launch(__nv_bfloat16{});
      break;
    case DType::kFloat16:
      launch(__half{});
      break;
  }
  return LaunchError(what);
}

}  // namespace autoquant::kernels

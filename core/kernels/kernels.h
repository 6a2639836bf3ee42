// Custom CUDA kernels where they pay (issue 13), behind a torch-free launcher
// API: nvcc compiles only these .cu files (no torch headers), and the torch
// side (core/quant/fp8.cc, core/model/layers/) chooses between a kernel and
// its reference composition of torch ops, which stays the CPU path and the
// definition the kernels are tested against.
//
// Each launcher takes raw device pointers and a cudaStream_t (as void*, so
// that callers need no CUDA headers), enqueues its work and returns the
// launch's error as a message ("" on success); none synchronizes.
//
// Numerics are the reference's, operation by operation (float32 arithmetic,
// the same roundings to the storage dtype), except where a reduction's order
// differs (noted per kernel).
#pragma once

#include <cstdint>
#include <string>

namespace autoquant::kernels {

enum class DType { kFloat32, kBFloat16, kFloat16 };

// Whether this build has the kernels (CMake found nvcc) and the environment
// does not turn them off (AUTOQUANT_CUDA_KERNELS=0): the one switch, so
// benchmarks can compare both paths in one process run.
bool Enabled();
// Enabled() ignoring the environment.
bool Compiled();
// For tests and benchmarks: overrides the environment for this process.
void SetEnabledForTesting(bool enabled);

// y = x fake-quantized to FP8 E4M3 with amax (*amax, float32, on the device),
// exactly as core/quant/fp8.h FakeQuantFp8 computes it. x and y: n contiguous
// elements of `dtype` (y may be x).
std::string FakeQuantFp8(const void* x, void* y, int64_t n, DType dtype, const float* amax, void* stream);

// y = x fake-quantized to NVFP4 with global amax *amax (float32, on the
// device), exactly as core/quant/nvfp4.h FakeQuantNvfp4 computes it: blocks
// of 16 consecutive elements (n a multiple of 16; a row's last dimension
// must be one too, so that no block straddles rows). y may be x.
std::string FakeQuantNvfp4(const void* x, void* y, int64_t n, DType dtype, const float* amax, void* stream);

// q = float8_e4m3fn(clamp(float(x) / *scale, ±448)), as core/quant/fp8.h
// QuantizeFp8 computes it (IEEE division; NaN stays NaN with its sign, as
// torch's cast). x: n contiguous elements of `dtype`; q: n bytes; *scale:
// float32 on the device.
std::string QuantizeFp8(const void* x, void* q, int64_t n, DType dtype, const float* scale, void* stream);

// *acc = max(*acc, max |x|) (float32 on the device, >= 0 or NaN). NaN in x
// makes *acc NaN, as torch's amax propagates it. Order-independent.
std::string AccumulateAbsMax(const void* x, int64_t n, DType dtype, float* acc, void* stream);

// *acc += Σ clamp(float(g)·float(d), ±1e10)² with each square in float32 and
// the sum in float64 (the reference sums in float64 too, in another order).
std::string AccumulateSquaredProduct(const void* g, const void* d, int64_t n, DType dtype, double* acc, void* stream);

// y[r] = w · cast(x[r] · rsqrt(mean(x[r]²) + eps)) per row of `cols`
// elements (x, y, w contiguous, same dtype); float32 inside, as
// transformers' RMSNorm. The mean is summed in another order than torch's.
std::string RmsNorm(const void* x, const void* w, void* y, int64_t rows, int64_t cols, float eps, DType dtype,
                    void* stream);

// y = cast(cast(silu(gate)) · up) elementwise (silu in float32, as torch).
std::string SiluMul(const void* gate, const void* up, void* y, int64_t n, DType dtype, void* stream);

// Rotary embedding in the storage dtype, as transformers' apply_rotary_pos_emb
// with bf16 cos/sin: out = cast(x·cos) + cast(rotate_half(x)·sin), each
// product and the sum rounded to the dtype. x, out: [B, S, H, D] contiguous;
// cos, sin: [B, S, D] contiguous.
std::string Rotary(const void* x, const void* cos, const void* sin, void* out, int64_t batch, int64_t seq,
                   int64_t heads, int64_t head_dim, DType dtype, void* stream);

}  // namespace autoquant::kernels

// Attention kernels as transformers' "sdpa" implementation calls them.
#pragma once

#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace autoquant {

// Bidirectional attention within segments of a packed sequence (the vision
// tower's windows / frames).
// q, k, v: [S, heads, head_dim]; cu_seqlens: segment boundaries (0 = first,
// S = last), on the host. -> [S, heads, head_dim].
// CPU / float32: one SDPA call per segment, no mask (as transformers does).
// CUDA with bf16/fp16: one varlen flash-attention call over all segments (no
// mask is materialised); falls back to the per-segment loop only if the kernel
// is unavailable (see internal::IsFlashUnavailable). Every other torch error,
// out-of-memory above all, propagates to the caller's TorchCall.
torch::Tensor SegmentAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const std::vector<int32_t>& cu_seqlens, double scale);

// Decoder self-attention with grouped KV heads.
// q: [B, heads, S, D]; k, v: [B, kv_heads, S, D]; mask: undefined (causal,
// no padding) or bool [B, 1, S, S] (true = attend). -> [B, heads, S, D].
torch::Tensor CausalAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              const torch::Tensor& mask, double scale);

// One new token attending to every cached key (a decode step of generation).
// q: [B, heads, 1, D]; k, v: [B, kv_heads, L, D], views of a KV cache (last
// dim contiguous). -> [B, heads, 1, D].
// CUDA with bf16/fp16: the flash kernel directly (it takes grouped KV heads).
// SDPA's own dispatch picks cuDNN attention on Hopper, which builds and caches
// a graph for every new key length: ~40 ms per step on an H200, as the key
// length grows by one each step. Falls back to CausalAttention where the flash
// kernel is unavailable (internal::IsFlashUnavailable), and elsewhere.
torch::Tensor DecodeAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale);

// k: [B, kv_heads, S, D] -> [B, kv_heads * n_rep, S, D] (transformers' repeat_kv).
torch::Tensor RepeatKv(const torch::Tensor& k, int64_t n_rep);

// Boolean mask for padded batches: causal AND key not padding, plus the
// diagonal so that fully padded query rows stay finite (they are never read).
// attention_mask: [B, S] (nonzero = token) -> bool [B, 1, S, S] on its device.
torch::Tensor PaddedCausalMask(const torch::Tensor& attention_mask);

namespace internal {

// Whether an error of the varlen flash-attention call means "this kernel
// cannot run here": not built into this torch, no kernel registered for the
// device, a GPU or head size it does not support, no kernel image for this
// GPU. Never true for out-of-memory: falling back would hide it, and the
// per-segment loop needs more memory, not less.
bool IsFlashUnavailable(const c10::Error& e);

// flash(), or fallback() when flash() throws an error for which
// IsFlashUnavailable holds; any other exception propagates. SegmentAttention's
// fallback rule, separate so that tests can exercise it without a GPU.
torch::Tensor FlashOrFallback(const std::function<torch::Tensor()>& flash,
                              const std::function<torch::Tensor()>& fallback);

}  // namespace internal

}  // namespace autoquant

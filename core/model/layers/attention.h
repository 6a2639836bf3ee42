// Attention kernels as transformers' "sdpa" implementation calls them.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace autoquant {

// Bidirectional attention within segments of a packed sequence (the vision
// tower's windows / frames).
// q, k, v: [S, heads, head_dim]; cu_seqlens: segment boundaries (0 = first,
// S = last), on the host. -> [S, heads, head_dim].
// CPU / float32: one SDPA call per segment, no mask (as transformers does).
// CUDA with bf16/fp16: one varlen flash-attention call over all segments (no
// mask is materialised); falls back to the per-segment loop if the kernel is
// unavailable.
torch::Tensor SegmentAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const std::vector<int32_t>& cu_seqlens, double scale);

// Decoder self-attention with grouped KV heads.
// q: [B, heads, S, D]; k, v: [B, kv_heads, S, D]; mask: undefined (causal,
// no padding) or bool [B, 1, S, S] (true = attend). -> [B, heads, S, D].
torch::Tensor CausalAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              const torch::Tensor& mask, double scale);

// k: [B, kv_heads, S, D] -> [B, kv_heads * n_rep, S, D] (transformers' repeat_kv).
torch::Tensor RepeatKv(const torch::Tensor& k, int64_t n_rep);

// Boolean mask for padded batches: causal AND key not padding, plus the
// diagonal so that fully padded query rows stay finite (they are never read).
// attention_mask: [B, S] (nonzero = token) -> bool [B, 1, S, S] on its device.
torch::Tensor PaddedCausalMask(const torch::Tensor& attention_mask);

}  // namespace autoquant

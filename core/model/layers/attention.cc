#include "core/model/layers/attention.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>

namespace autoquant {
namespace {

bool VarlenDisabled() {
  static const bool disabled = std::getenv("AUTOQUANT_DISABLE_VARLEN") != nullptr;
  return disabled;
}

torch::Tensor SegmentLoop(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                          const std::vector<int32_t>& cu, double scale) {
  // [S, H, D] -> [1, H, S, D] as transformers does before splitting.
  torch::Tensor q4 = q.transpose(0, 1).unsqueeze(0);
  torch::Tensor k4 = k.transpose(0, 1).unsqueeze(0);
  torch::Tensor v4 = v.transpose(0, 1).unsqueeze(0);
  std::vector<torch::Tensor> outs;
  outs.reserve(cu.size());
  for (size_t i = 0; i + 1 < cu.size(); ++i) {
    const int64_t a = cu[i], len = cu[i + 1] - cu[i];
    if (len == 0) continue;
    torch::Tensor o = at::scaled_dot_product_attention(q4.narrow(2, a, len), k4.narrow(2, a, len), v4.narrow(2, a, len),
                                                       /*attn_mask=*/{}, 0.0,
                                                       /*is_causal=*/false, scale);
    outs.push_back(o.transpose(1, 2));  // [1, len, H, D]
  }
  return at::cat(outs, 1).squeeze(0);
}

}  // namespace

torch::Tensor SegmentAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const std::vector<int32_t>& cu_seqlens, double scale) {
  const bool half = q.scalar_type() == torch::kBFloat16 || q.scalar_type() == torch::kFloat16;
  if (q.is_cuda() && half && !VarlenDisabled()) {
    int64_t max_len = 0;
    for (size_t i = 0; i + 1 < cu_seqlens.size(); ++i) {
      max_len = std::max<int64_t>(max_len, cu_seqlens[i + 1] - cu_seqlens[i]);
    }
    return internal::FlashOrFallback(
        [&] {
          torch::Tensor cu = torch::tensor(cu_seqlens, torch::dtype(torch::kInt32)).to(q.device());
          auto out =
              at::_flash_attention_forward(q.contiguous(), k.contiguous(), v.contiguous(), cu, cu, max_len, max_len,
                                           0.0, /*is_causal=*/false, /*return_debug_mask=*/false, scale);
          return std::get<0>(out);
        },
        [&] { return SegmentLoop(q, k, v, cu_seqlens, scale); });
  }
  return SegmentLoop(q, k, v, cu_seqlens, scale);
}

namespace internal {

bool IsFlashUnavailable(const c10::Error& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) return false;
  // The dispatcher has no kernel for this backend.
  if (dynamic_cast<const c10::NotImplementedError*>(&e) != nullptr) return true;
  // torch's own messages for a kernel that cannot run here (flash_api.cpp,
  // attention.cu, the CUDA runtime). Matched on text because torch throws
  // them as plain c10::Error; anything not listed is a real failure.
  static constexpr std::string_view kUnavailable[] = {
      "USE_FLASH_ATTENTION was not enabled for build",
      "FlashAttention only support",  // "...supports Ampere GPUs or newer", "...support fp16 and bf16 data type"
      "FlashAttention forward only supports head dimension",
      "no kernel image is available for execution on the device",
  };
  const std::string_view msg = e.what_without_backtrace();
  for (std::string_view s : kUnavailable) {
    if (msg.find(s) != std::string_view::npos) return true;
  }
  return false;
}

torch::Tensor FlashOrFallback(const std::function<torch::Tensor()>& flash,
                              const std::function<torch::Tensor()>& fallback) {
  try {
    return flash();
  } catch (const c10::Error& e) {
    if (!IsFlashUnavailable(e)) throw;
  }
  return fallback();
}

}  // namespace internal

torch::Tensor RepeatKv(const torch::Tensor& k, int64_t n_rep) {
  if (n_rep == 1) return k;
  const int64_t b = k.size(0), h = k.size(1), s = k.size(2), d = k.size(3);
  return k.unsqueeze(2).expand({b, h, n_rep, s, d}).reshape({b, h * n_rep, s, d});
}

torch::Tensor CausalAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              const torch::Tensor& mask, double scale) {
  const int64_t n_rep = q.size(1) / k.size(1);
  if (!mask.defined()) {
    // transformers: is_causal when q_len > 1 and no mask; enable_gqa instead of repeat_kv.
    return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, 0.0, /*is_causal=*/q.size(2) > 1, scale,
                                            /*enable_gqa=*/n_rep > 1);
  }
  // With a mask transformers repeats the KV heads explicitly.
  return at::scaled_dot_product_attention(q, RepeatKv(k, n_rep), RepeatKv(v, n_rep), mask, 0.0,
                                          /*is_causal=*/false, scale);
}

torch::Tensor DecodeAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale) {
  const bool half = q.scalar_type() == torch::kBFloat16 || q.scalar_type() == torch::kFloat16;
  if (!q.is_cuda() || !half) return CausalAttention(q, k, v, /*mask=*/{}, scale);
  return internal::FlashOrFallback(
      [&] {
        return std::get<0>(at::_scaled_dot_product_flash_attention(q, k, v, 0.0, /*is_causal=*/false,
                                                                   /*return_debug_mask=*/false, scale));
      },
      [&] { return CausalAttention(q, k, v, /*mask=*/{}, scale); });
}

torch::Tensor PaddedCausalMask(const torch::Tensor& attention_mask) {
  const int64_t s = attention_mask.size(1);
  auto opts = torch::dtype(torch::kBool).device(attention_mask.device());
  torch::Tensor causal = torch::ones({s, s}, opts).tril();
  torch::Tensor key_ok = attention_mask.ne(0).unsqueeze(1).unsqueeze(1);  // [B, 1, 1, S]
  torch::Tensor eye = torch::eye(s, opts);
  return (causal.unsqueeze(0).unsqueeze(0) & key_ok) | eye;  // [B, 1, S, S]
}

}  // namespace autoquant

#include "core/model/qwen2_5_vl/text_model.h"

#include <ATen/ATen.h>

#include <cmath>

#include "core/model/layers/attention.h"
#include "core/model/layers/rotary.h"

namespace autoquant {

TextAttentionImpl::TextAttentionImpl(const Qwen2_5_VLTextConfig& c)
    : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim()) {
  q_proj = register_module("q_proj", Linear(c.hidden_size, heads_ * head_dim_, true));
  k_proj = register_module("k_proj", Linear(c.hidden_size, kv_heads_ * head_dim_, true));
  v_proj = register_module("v_proj", Linear(c.hidden_size, kv_heads_ * head_dim_, true));
  o_proj = register_module("o_proj", Linear(heads_ * head_dim_, c.hidden_size, false));
}

torch::Tensor TextAttentionImpl::forward(const torch::Tensor& x, const DecoderInputs& in, LayerKvCache* cache) {
  const int64_t b = x.size(0), s = x.size(1);
  torch::Tensor q = q_proj->forward(x).view({b, s, -1, head_dim_}).transpose(1, 2);
  torch::Tensor k = k_proj->forward(x).view({b, s, -1, head_dim_}).transpose(1, 2);
  torch::Tensor v = v_proj->forward(x).view({b, s, -1, head_dim_}).transpose(1, 2);
  std::tie(q, k) = ApplyRotaryInDtype(q, k, in.cos, in.sin);
  const double scale = 1.0 / std::sqrt(double(head_dim_));
  torch::Tensor a;
  if (cache != nullptr && cache->length() > 0) {  // a decode step
    TORCH_CHECK(s == 1 && !in.mask.defined(), "a KV cache holding tokens takes one new token without a mask, got ", s,
                " tokens");
    std::tie(k, v) = cache->Append(k, v);
    a = DecodeAttention(q, k, v, scale);
  } else {
    if (cache != nullptr) std::tie(k, v) = cache->Append(k, v);  // the prefill
    a = CausalAttention(q, k, v, in.mask, scale);
  }
  return o_proj->forward(a.transpose(1, 2).reshape({b, s, -1}).contiguous());
}

DecoderLayerImpl::DecoderLayerImpl(const Qwen2_5_VLTextConfig& c) {
  self_attn = register_module("self_attn", TextAttention(c));
  mlp = register_module("mlp", GatedMlp(c.hidden_size, c.intermediate_size, /*bias=*/false));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& hidden, const DecoderInputs& in, LayerKvCache* cache) {
  torch::Tensor h = hidden + self_attn->forward(input_layernorm->forward(hidden), in, cache);
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

TextModelImpl::TextModelImpl(const Qwen2_5_VLTextConfig& c) : config_(c) {
  embed_tokens = register_module("embed_tokens", Embedding(c.vocab_size, c.hidden_size));
  layers_list = torch::nn::ModuleList();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(DecoderLayer(c));
    layers_list->push_back(layers.back());
  }
  register_module("layers", layers_list);
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

std::pair<torch::Tensor, torch::Tensor> TextModelImpl::RotaryCosSin(const torch::Tensor& position_ids,
                                                                    torch::ScalarType dtype) const {
  torch::Tensor inv_freq = RopeInvFreq(config_.head_dim(), config_.rope_theta).to(position_ids.device());
  // [3, B, S, head_dim/2]; position * inv_freq is exact in float32 either as
  // transformers' elementwise product (5.x) or its K=1 matmul (4.x).
  torch::Tensor freqs = position_ids.unsqueeze(-1).to(torch::kFloat32) * inv_freq;
  auto recompose = [&](const torch::Tensor& f) {
    std::vector<torch::Tensor> chunks;
    int64_t offset = 0;
    for (size_t i = 0; i < config_.mrope_section.size(); ++i) {
      const int64_t n = config_.mrope_section[i];
      chunks.push_back(f[i % 3].narrow(-1, offset, n));  // section i rotates with t, h or w
      offset += n;
    }
    torch::Tensor half = at::cat(chunks, -1);                 // [B, S, head_dim/2]
    return at::cat({half, half}, -1).unsqueeze(1).to(dtype);  // [B, 1, S, head_dim]
  };
  return {recompose(freqs.cos()), recompose(freqs.sin())};
}

}  // namespace autoquant

// The Qwen2.5-VL text decoder (transformers' Qwen2_5_VLTextModel): token
// embedding, decoder layers (GQA attention with q/k/v bias and M-RoPE,
// SwiGLU MLP), final RMSNorm. Submodules carry the checkpoint's names
// (embed_tokens, layers.N.self_attn.q_proj, ..., norm).
//
// Each DecoderLayer is callable on its own with the DecoderInputs that
// Qwen2_5_VLModel::Prepare builds, so the quantization engine can run the
// decoder layer by layer. Generation (generate.h) passes each layer its
// LayerKvCache as well; without one a forward sees only its own tokens.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <vector>

#include "core/model/layers/embedding.h"
#include "core/model/layers/gated_mlp.h"
#include "core/model/layers/kv_cache.h"
#include "core/model/layers/linear.h"
#include "core/model/layers/rms_norm.h"
#include "core/model/qwen2_5_vl/config.h"

namespace autoquant {

// Everything the decoder layers need besides the hidden states.
struct DecoderInputs {
  torch::Tensor hidden;          // [B, S, hidden], model dtype: embeddings with image features scattered
  torch::Tensor cos, sin;        // [B, 1, S, head_dim], model dtype (M-RoPE sections applied)
  torch::Tensor mask;            // undefined (causal, no padding) or bool [B, 1, S, S], true = attend
  torch::Tensor attention_mask;  // [B, S] int64 (1 = token) or undefined when there is no padding
  torch::Tensor position_ids;    // [3, B, S] int64
  torch::Tensor rope_deltas;     // [B] int64 (max position + 1 - valid tokens)
};

class TextAttentionImpl : public torch::nn::Module {
 public:
  explicit TextAttentionImpl(const Qwen2_5_VLTextConfig& c);
  // x: [B, S, hidden] -> [B, S, hidden]. With a cache, x holds the S tokens
  // after the cache's length() (in.cos/sin are theirs) and attends to the
  // cached keys too; the new keys and values are appended. A cache that holds
  // tokens takes one token at a time (in.mask undefined): SDPA's causal flag
  // would misalign a longer query against the cached keys.
  torch::Tensor forward(const torch::Tensor& x, const DecoderInputs& in, LayerKvCache* cache = nullptr);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t heads_, kv_heads_, head_dim_;
};
TORCH_MODULE(TextAttention);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const Qwen2_5_VLTextConfig& c);
  // hidden: [B, S, hidden] -> [B, S, hidden]; cache: see TextAttentionImpl::forward.
  torch::Tensor forward(const torch::Tensor& hidden, const DecoderInputs& in, LayerKvCache* cache = nullptr);
  TextAttention self_attn{nullptr};
  GatedMlp mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

class TextModelImpl : public torch::nn::Module {
 public:
  explicit TextModelImpl(const Qwen2_5_VLTextConfig& c);

  // position_ids: [3, B, S] int64 -> (cos, sin) [B, 1, S, head_dim] in `dtype`:
  // angles in float32 (on the CPU-computed float32 inv_freq), M-RoPE sections
  // interleaved (t, h, w, t, h, w), cast to `dtype` before use as transformers does.
  std::pair<torch::Tensor, torch::Tensor> RotaryCosSin(const torch::Tensor& position_ids,
                                                       torch::ScalarType dtype) const;

  const Qwen2_5_VLTextConfig& config() const { return config_; }
  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers_list{nullptr};
  std::vector<DecoderLayer> layers;
  RMSNorm norm{nullptr};

 private:
  Qwen2_5_VLTextConfig config_;
};
TORCH_MODULE(TextModel);

}  // namespace autoquant

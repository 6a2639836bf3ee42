// The Qwen2.5-VL vision tower (transformers'
// Qwen2_5_VisionTransformerPretrainedModel): Conv3d patch embedding, window /
// full attention blocks with 2D rotary, and the 2x2 patch merger. Submodules
// carry the checkpoint's names (patch_embed.proj, blocks.N.attn.qkv,
// merger.mlp.0, ...).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <vector>

#include "core/model/layers/gated_mlp.h"
#include "core/model/layers/linear.h"
#include "core/model/layers/rms_norm.h"
#include "core/model/qwen2_5_vl/config.h"
#include "core/model/qwen2_5_vl/vision_windows.h"

namespace autoquant {

// A Conv3d weight ([out, in, kt, kh, kw]) registered as "weight", no bias.
class PatchConvImpl : public torch::nn::Module {
 public:
  PatchConvImpl(int64_t in_channels, int64_t out_channels, int64_t kt, int64_t kp);
  torch::Tensor weight;
};
TORCH_MODULE(PatchConv);

class PatchEmbedImpl : public torch::nn::Module {
 public:
  explicit PatchEmbedImpl(const Qwen2_5_VLVisionConfig& c);
  // pixel_values: [patches, C*T*P*P] -> [patches, hidden] in the weight's dtype.
  torch::Tensor forward(const torch::Tensor& pixel_values);
  PatchConv proj{nullptr};

 private:
  int64_t in_channels_, temporal_, patch_, hidden_;
};
TORCH_MODULE(PatchEmbed);

// Everything a vision block needs besides its input, built once per forward.
struct VisionContext {
  torch::Tensor cos, sin;          // [patches, head_dim] float32, window order
  std::vector<int32_t> cu_window;  // window boundaries (patch units)
  std::vector<int32_t> cu_frame;   // frame boundaries (patch units)
};

class VisionAttentionImpl : public torch::nn::Module {
 public:
  VisionAttentionImpl(int64_t hidden, int64_t heads);
  // x: [S, hidden] -> [S, hidden]
  torch::Tensor forward(const torch::Tensor& x, const VisionContext& ctx, const std::vector<int32_t>& cu_seqlens);
  Linear qkv{nullptr}, proj{nullptr};

 private:
  int64_t heads_, head_dim_;
};
TORCH_MODULE(VisionAttention);

class VisionBlockImpl : public torch::nn::Module {
 public:
  VisionBlockImpl(const Qwen2_5_VLVisionConfig& c, bool full_attention);
  // x: [S, hidden] -> [S, hidden]
  torch::Tensor forward(const torch::Tensor& x, const VisionContext& ctx);
  bool full_attention() const { return full_attention_; }
  RMSNorm norm1{nullptr}, norm2{nullptr};
  VisionAttention attn{nullptr};
  GatedMlp mlp{nullptr};

 private:
  bool full_attention_;
};
TORCH_MODULE(VisionBlock);

// merger.mlp: Linear "0", exact GELU, Linear "2".
class MergerMlpImpl : public torch::nn::Module {
 public:
  MergerMlpImpl(int64_t in, int64_t out);
  torch::Tensor forward(const torch::Tensor& x);
  Linear fc0{nullptr}, fc2{nullptr};
};
TORCH_MODULE(MergerMlp);

class PatchMergerImpl : public torch::nn::Module {
 public:
  PatchMergerImpl(int64_t context_dim, int64_t out_dim, int64_t merge);
  // x: [S, context_dim] -> [S / merge^2, out_dim]
  torch::Tensor forward(const torch::Tensor& x);
  RMSNorm ln_q{nullptr};
  MergerMlp mlp{nullptr};

 private:
  int64_t merged_dim_;
};
TORCH_MODULE(PatchMerger);

class VisionTowerImpl : public torch::nn::Module {
 public:
  explicit VisionTowerImpl(const Qwen2_5_VLVisionConfig& c);
  // pixel_values: [patches, C*T*P*P] (any float dtype); grids: sum of
  // t*h*w == patches, h and w divisible by spatial_merge_size (callers
  // validate). -> [patches / merge^2, out_hidden] in the tower's dtype, in
  // raster order (image, t, row, col), ready to scatter into the text.
  torch::Tensor forward(const torch::Tensor& pixel_values, const std::vector<GridThw>& grids);

  const Qwen2_5_VLVisionConfig& config() const { return config_; }
  PatchEmbed patch_embed{nullptr};
  torch::nn::ModuleList blocks_list{nullptr};
  std::vector<VisionBlock> blocks;
  PatchMerger merger{nullptr};

 private:
  Qwen2_5_VLVisionConfig config_;
};
TORCH_MODULE(VisionTower);

}  // namespace autoquant

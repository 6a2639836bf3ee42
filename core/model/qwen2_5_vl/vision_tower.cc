#include "core/model/qwen2_5_vl/vision_tower.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "core/model/layers/attention.h"
#include "core/model/layers/rotary.h"

namespace autoquant {

PatchConvImpl::PatchConvImpl(int64_t in_channels, int64_t out_channels, int64_t kt, int64_t kp) {
  weight = register_parameter("weight", torch::empty({out_channels, in_channels, kt, kp, kp}), false);
}

PatchEmbedImpl::PatchEmbedImpl(const Qwen2_5_VLVisionConfig& c)
    : in_channels_(c.in_channels), temporal_(c.temporal_patch_size), patch_(c.patch_size), hidden_(c.hidden_size) {
  proj = register_module("proj", PatchConv(c.in_channels, c.hidden_size, c.temporal_patch_size, c.patch_size));
}

torch::Tensor PatchEmbedImpl::forward(const torch::Tensor& pixel_values) {
  torch::Tensor x = pixel_values.reshape({-1, in_channels_, temporal_, patch_, patch_}).to(proj->weight.scalar_type());
  return at::conv3d(x, proj->weight, /*bias=*/{}, /*stride=*/{temporal_, patch_, patch_}).view({-1, hidden_});
}

VisionAttentionImpl::VisionAttentionImpl(int64_t hidden, int64_t heads) : heads_(heads), head_dim_(hidden / heads) {
  qkv = register_module("qkv", Linear(hidden, 3 * hidden, true));
  proj = register_module("proj", Linear(hidden, hidden, true));
}

torch::Tensor VisionAttentionImpl::forward(const torch::Tensor& x, const VisionContext& ctx,
                                           const std::vector<int32_t>& cu_seqlens) {
  const int64_t s = x.size(0);
  // [S, 3*hidden] -> 3 x [S, heads, head_dim]
  auto qkv_parts = qkv->forward(x).reshape({s, 3, heads_, head_dim_}).permute({1, 0, 2, 3}).unbind(0);
  auto [q, k] = ApplyRotaryFloat32(qkv_parts[0], qkv_parts[1], ctx.cos, ctx.sin);
  torch::Tensor out = SegmentAttention(q, k, qkv_parts[2], cu_seqlens, 1.0 / std::sqrt(double(head_dim_)));
  return proj->forward(out.reshape({s, -1}).contiguous());
}

VisionBlockImpl::VisionBlockImpl(const Qwen2_5_VLVisionConfig& c, bool full_attention)
    : full_attention_(full_attention) {
  // Registration order follows transformers (norm1, norm2, attn, mlp) so that
  // named_modules() lists Linears in the same order.
  norm1 = register_module("norm1", RMSNorm(c.hidden_size, 1e-6));
  norm2 = register_module("norm2", RMSNorm(c.hidden_size, 1e-6));
  attn = register_module("attn", VisionAttention(c.hidden_size, c.num_heads));
  mlp = register_module("mlp", GatedMlp(c.hidden_size, c.intermediate_size, /*bias=*/true));
}

torch::Tensor VisionBlockImpl::forward(const torch::Tensor& x, const VisionContext& ctx) {
  torch::Tensor h = x + attn->forward(norm1->forward(x), ctx, full_attention_ ? ctx.cu_frame : ctx.cu_window);
  return h + mlp->forward(norm2->forward(h));
}

MergerMlpImpl::MergerMlpImpl(int64_t in, int64_t out) {
  fc0 = register_module("0", Linear(in, in, true));
  fc2 = register_module("2", Linear(in, out, true));
}

torch::Tensor MergerMlpImpl::forward(const torch::Tensor& x) {
  return fc2->forward(at::gelu(fc0->forward(x), "none"));  // nn.GELU(): exact erf GELU
}

PatchMergerImpl::PatchMergerImpl(int64_t context_dim, int64_t out_dim, int64_t merge)
    : merged_dim_(context_dim * merge * merge) {
  ln_q = register_module("ln_q", RMSNorm(context_dim, 1e-6));
  mlp = register_module("mlp", MergerMlp(merged_dim_, out_dim));
}

torch::Tensor PatchMergerImpl::forward(const torch::Tensor& x) {
  return mlp->forward(ln_q->forward(x).view({-1, merged_dim_}));
}

VisionTowerImpl::VisionTowerImpl(const Qwen2_5_VLVisionConfig& c) : config_(c) {
  patch_embed = register_module("patch_embed", PatchEmbed(c));
  blocks_list = torch::nn::ModuleList();
  for (int64_t i = 0; i < c.depth; ++i) {
    const bool full =
        std::find(c.fullatt_block_indexes.begin(), c.fullatt_block_indexes.end(), i) != c.fullatt_block_indexes.end();
    blocks.push_back(VisionBlock(c, full));
    blocks_list->push_back(blocks.back());
  }
  register_module("blocks", blocks_list);
  merger = register_module("merger", PatchMerger(c.hidden_size, c.out_hidden_size, c.spatial_merge_size));
}

torch::Tensor VisionTowerImpl::forward(const torch::Tensor& pixel_values, const std::vector<GridThw>& grids) {
  const int64_t merge = config_.spatial_merge_size, unit = merge * merge;
  const auto device = pixel_values.device();
  VisionWindows windows = ComputeVisionWindows(grids, config_.window_size, merge, config_.patch_size);
  torch::Tensor window_index = torch::tensor(windows.window_index, torch::dtype(torch::kInt64)).to(device);

  torch::Tensor x = patch_embed->forward(pixel_values);  // [S, hidden]
  const int64_t s = x.size(0);
  auto permute = [&](const torch::Tensor& t) {
    return t.reshape({s / unit, unit, -1}).index_select(0, window_index).reshape({s, -1});
  };
  x = permute(x);

  // 2D rotary: angle = position * inv_freq in float32, laid out [f(row) | f(col)] twice.
  std::vector<int64_t> pos = VisionPatchPositions(grids, merge);
  torch::Tensor pos_t = torch::tensor(pos, torch::dtype(torch::kInt64)).view({s, 2}).to(device);
  torch::Tensor inv_freq = RopeInvFreq(config_.head_dim() / 2, 10000.0).to(device);
  torch::Tensor freqs = pos_t.unsqueeze(-1).to(torch::kFloat32) * inv_freq;  // [S, 2, head_dim/4]
  torch::Tensor hw = freqs.reshape({s, -1});                                 // [S, head_dim/2]
  torch::Tensor emb = at::cat({hw, hw}, -1);                                 // [S, head_dim]
  VisionContext ctx;
  ctx.cos = permute(emb.cos());
  ctx.sin = permute(emb.sin());
  ctx.cu_window = std::move(windows.cu_window_seqlens);
  ctx.cu_frame = FrameCuSeqlens(grids);

  for (auto& blk : blocks) x = blk->forward(x, ctx);
  torch::Tensor merged = merger->forward(x);  // [S/unit, out], window order
  return merged.index_select(0, at::argsort(window_index));
}

}  // namespace autoquant

#include "core/model/qwen2_5_vl/model.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "core/model/layers/attention.h"
#include "core/model/qwen2_5_vl/rope_index.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace {

absl::Status Bad(absl::string_view what) { return absl::InvalidArgumentError(what); }

std::string ShapeString(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) absl::StrAppend(&s, i ? ", " : "", t.size(i));
  return s + "]";
}

bool IsInteger(const torch::Tensor& t) {
  return !t.is_floating_point() && !t.is_complex() && t.scalar_type() != torch::kBool;
}

// The host copy is where an input without readable data (e.g. on the meta
// device) or an unusable device fails: a Status naming the input.
absl::StatusOr<std::vector<int64_t>> ToVector(const torch::Tensor& t, absl::string_view name) {
  return TorchCall(
      [&] {
        torch::Tensor c = t.to(torch::kCPU, torch::kInt64).contiguous();
        return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
      },
      absl::StrCat("reading ", name));
}

absl::StatusOr<std::vector<GridThw>> Grids(const torch::Tensor& grid_thw) {
  ASSIGN_OR_RETURN(std::vector<int64_t> v, ToVector(grid_thw, "image_grid_thw"));
  std::vector<GridThw> grids;
  for (size_t i = 0; i + 2 < v.size(); i += 3) grids.push_back({v[i], v[i + 1], v[i + 2]});
  return grids;
}

}  // namespace

Qwen2_5_VLBackboneImpl::Qwen2_5_VLBackboneImpl(const Qwen2_5_VLConfig& c) {
  visual = register_module("visual", VisionTower(c.vision));
  language_model = register_module("language_model", TextModel(c.text));
}

Qwen2_5_VLModelImpl::Qwen2_5_VLModelImpl(const Qwen2_5_VLConfig& c) : config_(c) {
  model = register_module("model", Qwen2_5_VLBackbone(c));
  lm_head = register_module("lm_head", Linear(c.text.hidden_size, c.text.vocab_size, false));
}

void Qwen2_5_VLModelImpl::TieWeights() {
  if (!config_.tie_word_embeddings) return;
  torch::NoGradGuard no_grad;
  lm_head->weight.set_data(model->language_model->embed_tokens->weight);
}

absl::Status Qwen2_5_VLModelImpl::ValidateInputs(const Qwen2_5_VLInputs& in) const {
  return TorchCall(
      [&]() -> absl::Status {
        const auto& v = config_.vision;
        if (!in.input_ids.defined()) return Bad("input_ids is missing");
        if (in.input_ids.scalar_type() != torch::kInt64) {
          return Bad(absl::StrCat("input_ids must be int64, got ", c10::toString(in.input_ids.scalar_type())));
        }
        if (in.input_ids.dim() != 2 || in.input_ids.size(0) == 0 || in.input_ids.size(1) == 0) {
          return Bad(absl::StrCat("input_ids must be [batch, seq_len] and non-empty, got ", ShapeString(in.input_ids)));
        }
        const int64_t vocab = config_.text.vocab_size;
        ASSIGN_OR_RETURN(std::vector<int64_t> ids, ToVector(in.input_ids, "input_ids"));
        int64_t image_tokens = 0;
        for (int64_t id : ids) {
          if (id < 0 || id >= vocab)
            return Bad(absl::StrCat("input_ids holds token id ", id, " outside [0, ", vocab, ")"));
          if (id == config_.video_token_id) {
            return absl::UnimplementedError("input_ids holds video tokens; video inputs are not supported");
          }
          image_tokens += id == config_.image_token_id;
        }
        if (in.attention_mask.defined()) {
          if (!IsInteger(in.attention_mask) && in.attention_mask.scalar_type() != torch::kBool) {
            return Bad(absl::StrCat("attention_mask must be an integer or bool tensor, got ",
                                    c10::toString(in.attention_mask.scalar_type())));
          }
          if (!in.attention_mask.sizes().equals(in.input_ids.sizes())) {
            return Bad(absl::StrCat("attention_mask has shape ", ShapeString(in.attention_mask),
                                    ", input_ids has shape ", ShapeString(in.input_ids)));
          }
        }
        const bool has_pixels = in.pixel_values.defined(), has_grid = in.image_grid_thw.defined();
        if (has_pixels && !has_grid) return Bad("pixel_values given without image_grid_thw");
        if (has_grid && !has_pixels) return Bad("image_grid_thw given without pixel_values");
        if (!has_pixels) {
          if (image_tokens != 0) {
            return Bad(absl::StrCat("input_ids holds ", image_tokens, " image tokens (id ", config_.image_token_id,
                                    ") but no pixel_values were given"));
          }
          return absl::OkStatus();
        }
        const int64_t patch_dim = v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size;
        if (!in.pixel_values.is_floating_point() || in.pixel_values.dim() != 2 ||
            in.pixel_values.size(1) != patch_dim) {
          return Bad(absl::StrCat("pixel_values must be a floating [patches, ", patch_dim, "] tensor, got ",
                                  c10::toString(in.pixel_values.scalar_type()), " ", ShapeString(in.pixel_values)));
        }
        if (!IsInteger(in.image_grid_thw) || in.image_grid_thw.dim() != 2 || in.image_grid_thw.size(1) != 3 ||
            in.image_grid_thw.size(0) == 0) {
          return Bad(absl::StrCat("image_grid_thw must be an integer [images, 3] tensor, got ",
                                  c10::toString(in.image_grid_thw.scalar_type()), " ", ShapeString(in.image_grid_thw)));
        }
        const int64_t merge = v.spatial_merge_size;
        int64_t patches = 0;
        ASSIGN_OR_RETURN(std::vector<GridThw> grids, Grids(in.image_grid_thw));
        for (size_t i = 0; i < grids.size(); ++i) {
          const GridThw& g = grids[i];
          if (g.t <= 0 || g.h <= 0 || g.w <= 0) {
            return Bad(
                absl::StrCat("image_grid_thw[", i, "] = (", g.t, ", ", g.h, ", ", g.w, ") has a non-positive size"));
          }
          if (g.h % merge != 0 || g.w % merge != 0) {
            return Bad(absl::StrCat("image_grid_thw[", i, "] = (", g.t, ", ", g.h, ", ", g.w,
                                    "): h and w must be divisible by spatial_merge_size ", merge));
          }
          patches += g.patches();
        }
        if (patches != in.pixel_values.size(0)) {
          return Bad(absl::StrCat("pixel_values has ", in.pixel_values.size(0),
                                  " patches but image_grid_thw describes sum(t*h*w) = ", patches));
        }
        if (image_tokens != patches / (merge * merge)) {
          return Bad(absl::StrCat("input_ids holds ", image_tokens, " image tokens but the images have ",
                                  patches / (merge * merge), " merged patches (sum(t*h*w) / ", merge * merge, ")"));
        }
        return absl::OkStatus();
      },
      "checking the model inputs");
}

absl::StatusOr<DecoderInputs> Qwen2_5_VLModelImpl::Prepare(const Qwen2_5_VLInputs& in) {
  RETURN_IF_ERROR(ValidateInputs(in));
  const int64_t batch = in.input_ids.size(0), seq = in.input_ids.size(1);
  std::vector<GridThw> grids;
  if (in.image_grid_thw.defined()) {
    ASSIGN_OR_RETURN(grids, Grids(in.image_grid_thw));
  }

  std::vector<int64_t> mask_host;
  bool padded = false;
  if (in.attention_mask.defined()) {
    ASSIGN_OR_RETURN(mask_host, ToVector(in.attention_mask, "attention_mask"));
    for (int64_t m : mask_host) padded = padded || m == 0;
  }
  // transformers only computes 3D positions when images are present; text-only
  // inputs get arange(S) in every row, padded or not.
  RopeIndex rope;
  if (!grids.empty()) {
    ASSIGN_OR_RETURN(std::vector<int64_t> ids, ToVector(in.input_ids, "input_ids"));
    ASSIGN_OR_RETURN(rope, ComputeRopeIndex(ids, mask_host, batch, seq, grids, config_.image_token_id,
                                            config_.vision.spatial_merge_size));
  }

  return TorchCall(
      [&]() -> DecoderInputs {
        const torch::Device dev = device();
        DecoderInputs d;
        torch::Tensor ids = in.input_ids.to(dev);
        d.hidden = model->language_model->embed_tokens->forward(ids);
        if (!grids.empty()) {
          torch::Tensor image_embeds =
              model->visual->forward(in.pixel_values.to(dev), grids).to(d.hidden.scalar_type());
          torch::Tensor image_mask = ids.eq(config_.image_token_id).unsqueeze(-1).expand_as(d.hidden);
          d.hidden = d.hidden.masked_scatter(image_mask, image_embeds);
          d.position_ids = torch::tensor(rope.positions, torch::dtype(torch::kInt64)).view({3, batch, seq}).to(dev);
          d.rope_deltas = torch::tensor(rope.deltas, torch::dtype(torch::kInt64)).to(dev);
        } else {
          d.position_ids = torch::arange(seq, torch::dtype(torch::kInt64).device(dev))
                               .view({1, 1, seq})
                               .expand({3, batch, seq})
                               .contiguous();
          d.rope_deltas = torch::zeros({batch}, torch::dtype(torch::kInt64).device(dev));
        }
        std::tie(d.cos, d.sin) = model->language_model->RotaryCosSin(d.position_ids, d.hidden.scalar_type());
        if (padded) {
          d.attention_mask = in.attention_mask.to(dev, torch::kInt64);
          d.mask = PaddedCausalMask(d.attention_mask);
        }
        return d;
      },
      "Qwen2.5-VL prepare");
}

torch::Tensor Qwen2_5_VLModelImpl::Head(const torch::Tensor& hidden) {
  return lm_head->forward(model->language_model->norm->forward(hidden)).to(torch::kFloat32);
}

absl::StatusOr<torch::Tensor> Qwen2_5_VLModelImpl::Forward(const Qwen2_5_VLInputs& in) {
  ASSIGN_OR_RETURN(DecoderInputs d, Prepare(in));
  return TorchCall(
      [&]() {
        torch::Tensor h = d.hidden;
        for (auto& layer : layers()) h = layer->forward(h, d);
        return Head(h);
      },
      "Qwen2.5-VL forward");
}

std::vector<std::pair<std::string, Linear>> Qwen2_5_VLModelImpl::Linears() {
  std::vector<std::pair<std::string, Linear>> out;
  for (const auto& item : named_modules()) {
    if (auto lin = std::dynamic_pointer_cast<LinearImpl>(item.value())) out.emplace_back(item.key(), Linear(lin));
  }
  return out;
}

}  // namespace autoquant

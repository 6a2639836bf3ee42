// Qwen2.5-VL for conditional generation, matching transformers'
// Qwen2_5_VLForConditionalGeneration numerically (sdpa attention).
//
// Module tree and parameter names follow transformers 5.x:
//   model.visual.*            VisionTower
//   model.language_model.*    TextModel
//   lm_head.weight            (shares storage with embed_tokens when tied)
//
// One call:
//   ASSIGN_OR_RETURN(Qwen2_5_VLModel m, LoadQwen2_5_VL(ckpt, torch::kCUDA, torch::kBFloat16));
//   torch::InferenceMode guard;
//   ASSIGN_OR_RETURN(torch::Tensor logits, m->Forward(inputs));    // [B, S, vocab] float32
// Layer by layer (what Forward does):
//   ASSIGN_OR_RETURN(DecoderInputs d, m->Prepare(inputs));
//   torch::Tensor h = d.hidden;
//   for (auto& layer : m->layers()) h = layer->forward(h, d);
//   torch::Tensor logits = m->Head(h);
//
// Forward/Prepare do not install an InferenceMode or NoGrad guard: callers that
// need gradients (sensitivity scoring) can have them. Not thread-safe.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model/layers/linear.h"
#include "core/model/qwen2_5_vl/config.h"
#include "core/model/qwen2_5_vl/text_model.h"
#include "core/model/qwen2_5_vl/vision_tower.h"

namespace autoquant {

// Model inputs, the tensor names of `autoquant model forward` and of the
// calibration format. Tensors may live on any device; they are moved.
struct Qwen2_5_VLInputs {
  torch::Tensor input_ids;       // [B, S] int64, required
  torch::Tensor attention_mask;  // [B, S] integer or bool (1 = token), optional
  torch::Tensor pixel_values;    // [patches, C*T*P*P] floating, optional
  torch::Tensor image_grid_thw;  // [images, 3] integer, required with pixel_values
};

// transformers' Qwen2_5_VLModel: the vision tower and the text decoder.
class Qwen2_5_VLBackboneImpl : public torch::nn::Module {
 public:
  explicit Qwen2_5_VLBackboneImpl(const Qwen2_5_VLConfig& c);
  VisionTower visual{nullptr};
  TextModel language_model{nullptr};
};
TORCH_MODULE(Qwen2_5_VLBackbone);

class Qwen2_5_VLModelImpl : public torch::nn::Module {
 public:
  // Parameters are allocated uninitialised on the CPU in float32; load them
  // with LoadQwen2_5_VL (weights.h).
  explicit Qwen2_5_VLModelImpl(const Qwen2_5_VLConfig& c);

  // Host-side checks of `in` against the config, all InvalidArgument (video
  // tokens: Unimplemented): missing input_ids, wrong dtypes or shapes,
  // pixel_values without image_grid_thw (or the reverse), patch count !=
  // sum(t*h*w), h/w not divisible by spatial_merge_size, image token count !=
  // merged patch count, token ids outside the vocabulary. Internal when an
  // input's data cannot be read to the host (e.g. a meta tensor). Never throws.
  absl::Status ValidateInputs(const Qwen2_5_VLInputs& in) const;

  // Validates, runs the vision tower, scatters image features at
  // image_token_id positions, computes M-RoPE positions and cos/sin and the
  // attention mask. Internal on torch errors (ResourceExhausted for OOM).
  absl::StatusOr<DecoderInputs> Prepare(const Qwen2_5_VLInputs& in);

  // The decoder layers, in order; each is callable as layer->forward(hidden, prepared).
  std::vector<DecoderLayer>& layers() { return model->language_model->layers; }

  // Final norm + lm_head. hidden: [B, S, hidden] -> logits [B, S, vocab] float32
  // (computed in the model dtype, as transformers does, then upcast).
  // A torch-level building block like layers(): throws as torch ops do, so
  // call it inside TorchCall.
  torch::Tensor Head(const torch::Tensor& hidden);

  // Prepare + all layers + Head. -> logits [B, S, vocab] float32. Never throws.
  absl::StatusOr<torch::Tensor> Forward(const Qwen2_5_VLInputs& in);

  // Every Linear with its full module name ("model.language_model.layers.0.self_attn.q_proj",
  // ..., "lm_head"), in named_modules() order.
  std::vector<std::pair<std::string, Linear>> Linears();

  // Makes lm_head.weight share storage with embed_tokens.weight (no-op when
  // the config is untied). Call again after moving the module.
  void TieWeights();

  const Qwen2_5_VLConfig& config() const { return config_; }
  torch::Device device() const { return model->language_model->embed_tokens->weight.device(); }
  torch::ScalarType dtype() const { return model->language_model->embed_tokens->weight.scalar_type(); }

  Qwen2_5_VLBackbone model{nullptr};
  Linear lm_head{nullptr};

 private:
  Qwen2_5_VLConfig config_;
};
TORCH_MODULE(Qwen2_5_VLModel);

}  // namespace autoquant

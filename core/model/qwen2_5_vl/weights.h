// Loading Qwen2.5-VL weights from a Hugging Face checkpoint, in either key
// layout:
//   legacy (Hub, transformers 4.x):  model.layers.*, model.embed_tokens.*, model.norm.*, visual.*, lm_head.weight
//   transformers 5.x:                model.language_model.*, model.visual.*, lm_head.weight
// and config.json in either layout (see config.h); the names are architecture.h's.
//
//   ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open(dir));
//   ASSIGN_OR_RETURN(Qwen2_5_VLModel model, LoadQwen2_5_VL(ckpt, torch::kCUDA, torch::kBFloat16));
//
// Before anything is read, the checkpoint's names and shapes are checked
// against the model built from its config: missing, unexpected and mis-shaped
// tensors are all named in one InvalidArgument error. A tied checkpoint
// (tie_word_embeddings) may omit lm_head.weight; if it has one it is ignored
// and lm_head shares embed_tokens' storage. Non-persistent rotary buffers
// (*.inv_freq) that old checkpoints carry are ignored.
#pragma once

#include <torch/types.h>

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "core/io/checkpoint.h"
#include "core/model/qwen2_5_vl/config.h"
#include "core/model/qwen2_5_vl/model.h"

namespace autoquant {

// The checkpoint's config.json, parsed. InvalidArgument if it has none.
absl::StatusOr<Qwen2_5_VLConfig> CheckpointConfig(const Checkpoint& ckpt);

// InvalidArgument listing every missing / unexpected / mis-shaped tensor;
// OK if the checkpoint fits `model` exactly.
absl::Status VerifyCheckpointKeys(const Checkpoint& ckpt, Qwen2_5_VLModel& model);

// How a quantized checkpoint (core/scheme/scheme_loader.h) plugs into loading:
// its extra tensors (scales) are skipped by key verification and its FP8
// weights are turned into dense ones before the copy to the model.
struct LoadHooks {
  // Keys that belong to no model parameter but are expected (e.g. "*.weight_scale").
  std::function<bool(const std::string& key)> skip_key;
  // Turns a checkpoint tensor into the parameter's value (e.g. fp8 * scale).
  std::function<absl::StatusOr<torch::Tensor>(const std::string& key, const torch::Tensor& src)> transform;
  // For a key whose tensor `transform` turns into a parameter of another name or shape (packed
  // 4-bit weights, "<m>.weight_packed" [out, in/2]): that parameter's key and the shape it will have.
  // nullopt, or no function: the key stands for itself, in its own shape.
  std::function<std::optional<std::pair<std::string, std::vector<int64_t>>>(const std::string& key)> stands_for;
};

// Builds the model from the checkpoint's config, verifies and loads every
// tensor converted to `dtype` on `device`, ties lm_head when configured.
// InvalidArgument for config / key problems, ResourceExhausted for OOM.
absl::StatusOr<Qwen2_5_VLModel> LoadQwen2_5_VL(const Checkpoint& ckpt, torch::Device device, torch::ScalarType dtype,
                                               const LoadHooks& hooks = {});

}  // namespace autoquant

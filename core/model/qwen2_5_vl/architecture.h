// What autoquant knows about Qwen2.5-VL's names, in one place: which part of the network and which
// layer a module belongs to, which Linears a serving engine fuses into one GEMM, and how the model's
// names map to checkpoint keys in both layouts transformers writes. The quantization and scheme
// code ask these functions instead of matching name strings themselves.
//
// The model's own names are transformers 5.x's:
//   "model.language_model.layers.3.mlp.down_proj", "model.visual.blocks.0.attn.qkv", "lm_head".
// A checkpoint holds them either as written (kNested) or in the Hub's legacy layout (kLegacy,
// transformers 4.x): "model.layers.3.mlp.down_proj", "visual.blocks.0.attn.qkv", "lm_head".
// ModelOpt names quantizers relative to the inner model ("language_model.layers.3.mlp.down_proj"):
// InnerName.
//
// Torch-free.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace autoquant::qwen2_5_vl {

enum class KeyLayout {
  kNested,  // transformers 5.x: model.language_model.*, model.visual.*, lm_head.*
  kLegacy,  // the Hub's and transformers 4.x: model.*, visual.*, lm_head.*
};

// The model's name of a checkpoint key in either layout ("visual.x" -> "model.visual.x",
// "model.layers.0.x" -> "model.language_model.layers.0.x"); other keys are returned unchanged.
std::string ModelName(absl::string_view key);
// The checkpoint key of a model name in `layout`; the inverse of ModelName.
std::string CheckpointKey(absl::string_view name, KeyLayout layout);
// The name relative to the inner model: strips a leading "model."; "lm_head" stays.
std::string InnerName(absl::string_view name);

enum class Part {
  kText,    // the language model's decoder layers, embeddings and final norm
  kVision,  // the vision tower and its merger
  kHead,    // lm_head
};

struct Site {
  Part part;
  int layer = -1;  // the decoder layer (kText) or vision block (kVision) a module is in; -1 for none
};

// Where a module (or tensor) is, by any of the names above: model name, either checkpoint layout, or
// inner name.
Site SiteOf(absl::string_view name);
inline bool IsVision(absl::string_view name) { return SiteOf(name).part == Part::kVision; }

// The GEMM an engine fuses a Linear into (vLLM's packed modules): "<parent>.qkv_proj" for
// q_proj/k_proj/v_proj, "<parent>.gate_up_proj" for gate_proj/up_proj; "" for a Linear that is its
// own GEMM. A fused GEMM's shards share one format and, for static scales, one scale.
std::string FusedGemmOf(absl::string_view module);

}  // namespace autoquant::qwen2_5_vl

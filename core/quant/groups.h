// Quantization groups as ModelOpt's AutoQuant forms them, and disabled_layers.
//
// Linears that must share a format (they are fused into one GEMM by engines:
// q/k/v, gate/up) form one group; o_proj, down_proj, lm_head and the rest are
// groups of one. These are ModelOpt's quant_grouping_rules for q/k/v and gate/up, which are
// the model's fused GEMMs (qwen2_5_vl::FusedGemmOf); its third rule, all experts of a layer, has
// nothing to match in a model without experts.
// A group's key is "<first member>.quant_recipe" with the member's name
// relative to the inner model (the Qwen2_5_VLModel ModelOpt is called on):
// "language_model.layers.0.self_attn.q_proj.quant_recipe". lm_head keeps its
// name ("lm_head.quant_recipe").
//
// The vision tower ("visual.*") is excluded by default: its Linears are then
// not quantizable at all (not in any group, not in the cost denominator).
//
// disabled_layers are fnmatch patterns matched against every member's module
// name, both relative ("language_model.layers.0.mlp.gate_proj") and full
// ("model.language_model.layers.0.mlp.gate_proj"); a match on any member
// disables the whole group. A pattern that matches no Linear of the model is
// an error: a typo must not silently quantize everything.
//
// Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant/formats.h"

namespace autoquant {

struct LinearDesc {
  std::string name;  // full module name, e.g. "model.language_model.layers.0.self_attn.q_proj"
  int64_t weight_numel = 0;
  int64_t out_features = 0;
  int64_t in_features = 0;
};

struct QuantGroup {
  std::string key;                   // "...q_proj.quant_recipe"
  std::vector<std::string> modules;  // full module names, in model order
  std::vector<size_t> linear_index;  // indices into the LinearDesc list
  int64_t weight_numel = 0;          // sum over members
  bool disabled = false;
  std::vector<std::string> disabled_by;  // patterns that matched a member
};

struct GroupingOptions {
  bool include_vision = false;
  std::vector<std::string> disabled_layers;  // fnmatch patterns
};

// Groups in model order. InvalidArgument when a disabled pattern matches no
// Linear (listing the patterns), or when no Linear is quantizable.
absl::StatusOr<std::vector<QuantGroup>> BuildGroups(const std::vector<LinearDesc>& linears,
                                                    const GroupingOptions& options);

// The groups a baseline scores: BuildGroups' grouping, minus a tied head (it
// shares its weight with the embedding, which stays in the base dtype).
absl::StatusOr<std::vector<QuantGroup>> QuantizableGroups(const std::vector<LinearDesc>& linears, bool include_vision,
                                                          bool tied_head);

// FailedPrecondition unless every member of every group can be put in every
// quantized format of `formats` (FormatFits): a 4-bit format keeps out of the
// vision tower and needs whole blocks. The message names the first Linear
// and format that do not fit and what to change. A search space is uniform
// over the groups so that scores, ranks and the search compare like with like.
absl::Status CheckFormatsFit(const std::vector<Format>& formats, const std::vector<LinearDesc>& linears,
                             const std::vector<QuantGroup>& groups);

}  // namespace autoquant

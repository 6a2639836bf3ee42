// Qwen2.5-VL config.json, in both layouts transformers writes:
//   4.x: text fields flat at the top level, "vision_config", "rope_scaling",
//        "rope_theta";
//   5.x: "text_config" (with "rope_parameters") + "vision_config".
// Missing keys take the transformers config-class defaults, as
// from_pretrained would (they matter for re-saved configs that drop
// default-valued keys).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace autoquant {

struct Qwen2_5_VLTextConfig {
  int64_t vocab_size = 152064;
  int64_t hidden_size = 8192;
  int64_t intermediate_size = 29568;
  int64_t num_hidden_layers = 80;
  int64_t num_attention_heads = 64;
  int64_t num_key_value_heads = 8;
  double rms_norm_eps = 1e-5;
  double rope_theta = 1000000.0;
  std::vector<int64_t> mrope_section = {16, 24, 24};
  std::string hidden_act = "silu";
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

struct Qwen2_5_VLVisionConfig {
  int64_t depth = 32;
  int64_t hidden_size = 3584;
  int64_t intermediate_size = 3420;
  int64_t num_heads = 16;
  int64_t in_channels = 3;
  int64_t patch_size = 14;
  int64_t spatial_merge_size = 2;
  int64_t temporal_patch_size = 2;
  int64_t tokens_per_second = 4;
  int64_t window_size = 112;
  int64_t out_hidden_size = 3584;
  std::vector<int64_t> fullatt_block_indexes = {7, 15, 23, 31};
  std::string hidden_act = "silu";
  int64_t head_dim() const { return hidden_size / num_heads; }
};

enum class ConfigLayout { kFlatV4, kNestedV5 };

struct Qwen2_5_VLConfig {
  Qwen2_5_VLTextConfig text;
  Qwen2_5_VLVisionConfig vision;
  bool tie_word_embeddings = false;
  int64_t image_token_id = 151655;
  int64_t video_token_id = 151656;
  int64_t vision_start_token_id = 151652;
  int64_t vision_end_token_id = 151653;
  std::string torch_dtype = "bfloat16";  // the checkpoint's declared dtype
  ConfigLayout layout = ConfigLayout::kNestedV5;
  nlohmann::json raw;  // the file as read, for rewriting on export
};

// InvalidArgument naming `source` for a wrong model_type, wrong value types,
// or inconsistent sizes (hidden not divisible by heads, mrope_section not
// summing to head_dim / 2, ...).
absl::StatusOr<Qwen2_5_VLConfig> ParseQwen2_5_VLConfig(const nlohmann::json& j, absl::string_view source);

}  // namespace autoquant

#include "core/model/qwen2_5_vl/config.h"

#include <numeric>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/util/json_int.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace {
using json = nlohmann::json;

// Reads j[key] into *out when present; a value of the wrong type is an error.
template <typename T>
absl::Status Get(const json& j, const char* key, T* out, absl::string_view source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  try {
    if constexpr (std::is_same_v<T, int64_t>) {
      *out = JsonInt<int64_t>(*it);
    } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
      *out = JsonInts<int64_t>(*it);
    } else {
      *out = it->get<T>();
    }
  } catch (const json::exception&) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": config key '", key, "' has the wrong type (", it->type_name(), ")"));
  }
  return absl::OkStatus();
}

absl::Status ParseRope(const json& j, Qwen2_5_VLTextConfig* t, absl::string_view source) {
  RETURN_IF_ERROR(Get(j, "rope_theta", &t->rope_theta, source));
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": '", key, "' is not an object"));
    }
    RETURN_IF_ERROR(Get(*it, "rope_theta", &t->rope_theta, source));
    RETURN_IF_ERROR(Get(*it, "mrope_section", &t->mrope_section, source));
    std::string type = "default";
    RETURN_IF_ERROR(Get(*it, "type", &type, source));
    RETURN_IF_ERROR(Get(*it, "rope_type", &type, source));
    if (type != "default" && type != "mrope") {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": rope type '", type, "' is not supported (Qwen2.5-VL uses mrope/default)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseText(const json& j, Qwen2_5_VLTextConfig* t, absl::string_view source) {
  RETURN_IF_ERROR(Get(j, "vocab_size", &t->vocab_size, source));
  RETURN_IF_ERROR(Get(j, "hidden_size", &t->hidden_size, source));
  RETURN_IF_ERROR(Get(j, "intermediate_size", &t->intermediate_size, source));
  RETURN_IF_ERROR(Get(j, "num_hidden_layers", &t->num_hidden_layers, source));
  RETURN_IF_ERROR(Get(j, "num_attention_heads", &t->num_attention_heads, source));
  // The class default is 8; an explicit null means "same as num_attention_heads".
  if (auto it = j.find("num_key_value_heads"); it != j.end() && it->is_null()) {
    t->num_key_value_heads = t->num_attention_heads;
  } else {
    RETURN_IF_ERROR(Get(j, "num_key_value_heads", &t->num_key_value_heads, source));
  }
  RETURN_IF_ERROR(Get(j, "rms_norm_eps", &t->rms_norm_eps, source));
  RETURN_IF_ERROR(Get(j, "hidden_act", &t->hidden_act, source));
  return ParseRope(j, t, source);
}

absl::Status ParseVision(const json& j, Qwen2_5_VLVisionConfig* v, absl::string_view source) {
  RETURN_IF_ERROR(Get(j, "depth", &v->depth, source));
  RETURN_IF_ERROR(Get(j, "hidden_size", &v->hidden_size, source));
  RETURN_IF_ERROR(Get(j, "intermediate_size", &v->intermediate_size, source));
  RETURN_IF_ERROR(Get(j, "num_heads", &v->num_heads, source));
  // "in_chans" in the published 3B config is ignored by transformers; only in_channels counts.
  RETURN_IF_ERROR(Get(j, "in_channels", &v->in_channels, source));
  RETURN_IF_ERROR(Get(j, "patch_size", &v->patch_size, source));
  RETURN_IF_ERROR(Get(j, "spatial_merge_size", &v->spatial_merge_size, source));
  RETURN_IF_ERROR(Get(j, "temporal_patch_size", &v->temporal_patch_size, source));
  RETURN_IF_ERROR(Get(j, "tokens_per_second", &v->tokens_per_second, source));
  RETURN_IF_ERROR(Get(j, "window_size", &v->window_size, source));
  RETURN_IF_ERROR(Get(j, "out_hidden_size", &v->out_hidden_size, source));
  RETURN_IF_ERROR(Get(j, "fullatt_block_indexes", &v->fullatt_block_indexes, source));
  RETURN_IF_ERROR(Get(j, "hidden_act", &v->hidden_act, source));
  return absl::OkStatus();
}

absl::Status Validate(const Qwen2_5_VLConfig& c, absl::string_view source) {
  auto bad = [&](absl::string_view what) { return absl::InvalidArgumentError(absl::StrCat(source, ": ", what)); };
  const auto& t = c.text;
  const auto& v = c.vision;
  for (int64_t x : {t.vocab_size, t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads,
                    t.num_key_value_heads, v.depth, v.hidden_size, v.intermediate_size, v.num_heads, v.patch_size,
                    v.spatial_merge_size, v.temporal_patch_size, v.window_size, v.out_hidden_size, v.in_channels}) {
    if (x <= 0) return bad("a size in the config is zero or negative");
  }
  if (t.hidden_size % t.num_attention_heads != 0) {
    return bad("text hidden_size is not divisible by num_attention_heads");
  }
  if (t.num_attention_heads % t.num_key_value_heads != 0) {
    return bad("num_attention_heads is not divisible by num_key_value_heads");
  }
  for (int64_t x : t.mrope_section) {
    // Bounded before the sum below, which must not overflow.
    if (x < 0 || x > t.head_dim()) return bad("mrope_section entries must be in [0, head_dim]");
  }
  if (t.mrope_section.size() != 3 ||
      std::accumulate(t.mrope_section.begin(), t.mrope_section.end(), int64_t{0}) * 2 != t.head_dim()) {
    return bad(absl::StrCat("mrope_section must have 3 entries summing to head_dim/2 = ", t.head_dim() / 2));
  }
  if (v.hidden_size % v.num_heads != 0 || (v.head_dim() / 2) % 2 != 0) {
    return bad("vision hidden_size / num_heads must be divisible by 4");
  }
  if (t.hidden_act != "silu" || v.hidden_act != "silu") return bad("only hidden_act 'silu' is supported");
  for (int64_t i : v.fullatt_block_indexes) {
    if (i < 0 || i >= v.depth) return bad("fullatt_block_indexes names a block beyond depth");
  }
  if ((v.window_size / v.spatial_merge_size / v.patch_size) <= 0) {
    return bad("window_size is smaller than one merged patch");
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<Qwen2_5_VLConfig> ParseQwen2_5_VLConfig(const json& j, absl::string_view source) {
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": config is not a JSON object"));
  std::string model_type;
  RETURN_IF_ERROR(Get(j, "model_type", &model_type, source));
  if (model_type != "qwen2_5_vl") {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": model_type is '", model_type, "', expected 'qwen2_5_vl'"));
  }
  Qwen2_5_VLConfig c;
  c.raw = j;
  bool text_tie = false;
  if (auto it = j.find("text_config"); it != j.end() && it->is_object()) {
    c.layout = ConfigLayout::kNestedV5;
    RETURN_IF_ERROR(ParseText(*it, &c.text, source));
    RETURN_IF_ERROR(Get(*it, "tie_word_embeddings", &text_tie, source));
    RETURN_IF_ERROR(Get(*it, "dtype", &c.torch_dtype, source));
  } else {
    c.layout = ConfigLayout::kFlatV4;
    RETURN_IF_ERROR(ParseText(j, &c.text, source));
  }
  if (auto it = j.find("vision_config"); it != j.end() && it->is_object()) {
    RETURN_IF_ERROR(ParseVision(*it, &c.vision, source));
  }
  // transformers ORs the root flag with a pre-v5 text_config flag.
  RETURN_IF_ERROR(Get(j, "tie_word_embeddings", &c.tie_word_embeddings, source));
  c.tie_word_embeddings = c.tie_word_embeddings || text_tie;
  RETURN_IF_ERROR(Get(j, "image_token_id", &c.image_token_id, source));
  RETURN_IF_ERROR(Get(j, "video_token_id", &c.video_token_id, source));
  RETURN_IF_ERROR(Get(j, "vision_start_token_id", &c.vision_start_token_id, source));
  RETURN_IF_ERROR(Get(j, "vision_end_token_id", &c.vision_end_token_id, source));
  RETURN_IF_ERROR(Get(j, "torch_dtype", &c.torch_dtype, source));
  RETURN_IF_ERROR(Get(j, "dtype", &c.torch_dtype, source));
  RETURN_IF_ERROR(Validate(c, source));
  return c;
}

}  // namespace autoquant

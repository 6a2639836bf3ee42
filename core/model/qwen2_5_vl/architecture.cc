#include "core/model/qwen2_5_vl/architecture.h"

#include <charconv>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace autoquant::qwen2_5_vl {
namespace {

constexpr absl::string_view kModel = "model.";
constexpr absl::string_view kText = "language_model.";
constexpr absl::string_view kVision = "visual.";
constexpr absl::string_view kHead = "lm_head";

// The leading decimal of `s` ("12.mlp" -> 12); -1 when there is none.
int LeadingIndex(absl::string_view s) {
  int value = -1;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end == s.data() || (end != s.data() + s.size() && *end != '.')) return -1;
  return value;
}

}  // namespace

std::string ModelName(absl::string_view key) {
  if (absl::StartsWith(key, "model.visual.") || absl::StartsWith(key, "model.language_model.")) return std::string(key);
  if (absl::StartsWith(key, kVision)) return absl::StrCat(kModel, key);
  if (absl::ConsumePrefix(&key, kModel)) return absl::StrCat(kModel, kText, key);
  return std::string(key);
}

std::string CheckpointKey(absl::string_view name, KeyLayout layout) {
  if (layout == KeyLayout::kNested) return std::string(name);
  if (absl::StartsWith(name, "model.visual.")) return std::string(name.substr(kModel.size()));
  if (absl::ConsumePrefix(&name, "model.language_model.")) return absl::StrCat(kModel, name);
  return std::string(name);
}

std::string InnerName(absl::string_view name) {
  absl::ConsumePrefix(&name, kModel);
  return std::string(name);
}

Site SiteOf(absl::string_view name) {
  absl::string_view inner = name;
  absl::ConsumePrefix(&inner, kModel);
  if (absl::StartsWith(inner, kHead)) return {Part::kHead};
  if (absl::ConsumePrefix(&inner, kVision)) {
    return {Part::kVision, absl::ConsumePrefix(&inner, "blocks.") ? LeadingIndex(inner) : -1};
  }
  // The text model: "language_model.layers.N." (nested) or "layers.N." (legacy, "model." stripped).
  absl::ConsumePrefix(&inner, kText);
  return {Part::kText, absl::ConsumePrefix(&inner, "layers.") ? LeadingIndex(inner) : -1};
}

std::string FusedGemmOf(absl::string_view module) {
  const size_t dot = module.rfind('.');
  if (dot == absl::string_view::npos) return "";
  const absl::string_view leaf = module.substr(dot + 1), parent = module.substr(0, dot);
  if (leaf == "q_proj" || leaf == "k_proj" || leaf == "v_proj") return absl::StrCat(parent, ".qkv_proj");
  if (leaf == "gate_proj" || leaf == "up_proj") return absl::StrCat(parent, ".gate_up_proj");
  return "";
}

}  // namespace autoquant::qwen2_5_vl

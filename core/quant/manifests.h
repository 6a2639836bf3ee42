// The scheme's layer-sensitivity/ folder, which makes a checkpoint explain
// itself and lets `autoquant diff` check it against its weights:
//   <scheme>_quant_manifest.json           scheme, baseline key, method, formats,
//                                          effective bits, sensitivity_ranking (least
//                                          sensitive first), per group: modules, scores,
//                                          costs, chosen format, disabled
//   <scheme>_coverage_from_baseline.json   selected_layers + dropped_layers (seed format)
//   <scheme>_search_state.json             ModelOpt's search_state shape: candidate_stats
//                                          {formats, scores, costs} and best {recipe,
//                                          constraints, score, is_satisfied}
//   per-layer-sensitivity.md               the same as a table
//
// Torch-free.
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "core/quant/baseline.h"
#include "core/quant/plan.h"
#include "nlohmann/json.hpp"

namespace autoquant {

nlohmann::ordered_json QuantManifestJson(const Baseline& b, const Plan& p, const std::string& scheme);
nlohmann::ordered_json CoverageManifestJson(const Baseline& b, const Plan& p, const std::string& scheme);
nlohmann::ordered_json SearchStateJson(const Baseline& b, const Plan& p);
std::string SensitivityMarkdown(const Baseline& b, const Plan& p, const std::string& scheme);

// Writes all four into `dir` (created).
absl::Status WriteLayerSensitivity(const std::filesystem::path& dir, const Baseline& b, const Plan& p,
                                   const std::string& scheme);

// What a scheme directory's quant manifest says: group key -> (chosen format, member modules).
struct ManifestGroup {
  std::string format;
  std::vector<std::string> modules;
};
struct SchemeManifest {
  std::string scheme;
  std::string baseline_key;
  double effective_bits = 16;
  std::map<std::string, ManifestGroup> groups;
};
// NotFound if the directory has no layer-sensitivity/*_quant_manifest.json.
absl::StatusOr<SchemeManifest> ReadSchemeManifest(const std::filesystem::path& scheme_dir);

}  // namespace autoquant

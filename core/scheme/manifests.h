// The scheme's layer-sensitivity/ folder, which makes a checkpoint explain
// itself and lets `autoquant diff` check it against its weights:
//   <scheme>_quant_manifest.json           scheme, producer, export format, baseline key,
//                                          method, formats, effective bits, the selection
//                                          and the rules applied (coverage / manifest /
//                                          target, disabled_layers patterns and where they
//                                          came from), sensitivity_ranking (least sensitive
//                                          first), per group: modules, scores, costs, chosen
//                                          format, disabled and by which patterns; and the
//                                          tensors' SHA-256 (integrity.h)
//   <scheme>_coverage_from_baseline.json   selected_layers + dropped_layers (seed format)
//   <scheme>_search_state.json             ModelOpt's search_state shape: candidate_stats
//                                          {formats, scores, costs} and best {recipe,
//                                          constraints, score, is_satisfied}
//   per-layer-sensitivity.md               the same as a table
//
// Torch-free.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "core/quant/baseline.h"
#include "core/quant/plan.h"
#include "core/scheme/integrity.h"
#include "nlohmann/json.hpp"

namespace autoquant {

// What the manifests record beyond the baseline and the plan.
struct SchemeRecord {
  std::string scheme;
  std::string format;                         // export format name ("compressed-tensors")
  std::vector<std::string> disabled_by_flag;  // the request's own disabled_layers patterns
  std::string job_id;                         // the daemon job that wrote it ("" outside the daemon)
  TensorDigests digests;                      // of the written checkpoint
};

nlohmann::ordered_json QuantManifestJson(const Baseline& b, const Plan& p, const SchemeRecord& r);
nlohmann::ordered_json CoverageManifestJson(const Baseline& b, const Plan& p, const std::string& scheme);
nlohmann::ordered_json SearchStateJson(const Baseline& b, const Plan& p);
std::string SensitivityMarkdown(const Baseline& b, const Plan& p, const std::string& scheme);

// Writes all four into `dir` (created).
absl::Status WriteLayerSensitivity(const std::filesystem::path& dir, const Baseline& b, const Plan& p,
                                   const SchemeRecord& r);

// What a scheme directory's quant manifest says: group key -> (chosen format, member modules).
struct ManifestGroup {
  Format format = Format::kNone;
  std::vector<std::string> modules;
};
struct SchemeManifest {
  std::string scheme;
  std::string producer;  // "autoquant" for ours
  std::string baseline_key;
  double effective_bits = 16;
  std::optional<double> coverage;  // the requested coverage, when the scheme was made from one
  int num_groups = 0, num_quantized = 0;
  std::map<std::string, ManifestGroup> groups;
  // The quantized formats the scheme's search could choose (its groups' score keys), most aggressive
  // first; FP8 alone for manifests that record no scores.
  std::vector<Format> search_space;
  std::optional<TensorDigests> integrity;  // absent in manifests from before it was recorded
  std::string job_id;                      // the daemon job that wrote it; "" when written outside the daemon
};
// NotFound if the directory has no layer-sensitivity/*_quant_manifest.json;
// InvalidArgument if there are several or one is malformed.
absl::StatusOr<SchemeManifest> ReadSchemeManifest(const std::filesystem::path& scheme_dir);

// OK if `dir` is a scheme autoquant wrote (its quant manifest names
// autoquant as producer): what --overwrite may replace. Otherwise the reason.
absl::Status RecogniseSchemeOutput(const std::filesystem::path& dir);

}  // namespace autoquant

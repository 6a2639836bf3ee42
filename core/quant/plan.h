// A scheme's plan: one format per baseline group, derived from the baseline
// and the scheme's selection (coverage, a coverage manifest, disabled_layers,
// an effective-bits target).
//
// Coverage X (a fraction in [0, 1], "topXX" = XX/100) quantizes the
// n = floor(X * N + 0.5) least-sensitive *enabled* groups by the baseline
// ranking (N = enabled groups; halves round up), and keeps the rest in the
// base dtype. A coverage manifest (seed format: selected_layers +
// dropped_layers) must partition the baseline's group keys exactly; its
// selected groups are the candidates. disabled_layers remove groups from the
// candidates in either case. With an effective-bits target, the exact search
// picks formats among the candidates (others are NONE); without one, every
// candidate gets the most aggressive format.
//
// Torch-free.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant/baseline.h"
#include "core/quant/search.h"
#include "nlohmann/json.hpp"

namespace autoquant {

struct CoverageManifest {
  std::vector<std::string> selected_layers;
  std::vector<std::string> dropped_layers;
};

// Accepts the seed manifests' shape: {"selected_layers": [...], "dropped_layers": [...], ...}.
absl::StatusOr<CoverageManifest> ParseCoverageManifest(const nlohmann::json& j, absl::string_view source);

// InvalidArgument listing missing, extra and duplicated keys unless the
// manifest partitions `keys` exactly.
absl::Status ValidatePartition(const CoverageManifest& m, const std::vector<std::string>& keys);

struct SchemeSelection {
  std::optional<double> coverage;  // [0, 1]
  std::optional<CoverageManifest> coverage_manifest;
  std::vector<std::string> disabled_layers;
  std::optional<double> effective_bits;
};

// Parses "top10", "10%", "0.1", "10" (>1 means percent).
absl::StatusOr<double> ParseCoverage(absl::string_view text);

struct Plan {
  std::vector<size_t> format;      // per baseline group: index into baseline.formats
  std::vector<bool> disabled;      // per group: by disabled_layers
  std::vector<bool> candidate;     // per group: allowed to be quantized
  double effective_bits = 16;
  double total_score = 0;
  std::optional<double> coverage;
  std::optional<double> target_bits;
  std::optional<SearchResult> search;  // when an effective-bits target was given

  bool quantized(size_t g, const Baseline& b) const { return b.formats[format[g]].name != "NONE"; }
  size_t num_quantized(const Baseline& b) const;
};

// InvalidArgument for contradictory or malformed selections (both coverage
// and a manifest, coverage outside [0,1], a manifest that does not partition
// the keys, a disabled pattern matching nothing); OutOfRange for an
// infeasible effective-bits target (stating the minimum achievable bits).
absl::StatusOr<Plan> MakePlan(const Baseline& b, const SchemeSelection& s);

// The coverage manifest a plan implies: quantized groups selected, the rest dropped.
CoverageManifest CoverageOf(const Plan& p, const Baseline& b);

}  // namespace autoquant

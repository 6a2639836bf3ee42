// A scheme's plan: one format per baseline group, derived from the baseline
// and the scheme's selection (coverage, a coverage manifest, disabled_layers,
// an effective-bits target).
//
// A selection is exactly one of:
//   - coverage X in (0, 1] (spelled 0.1, "top10" or "10%"; 1 = every group):
//     the n = floor(X * N + 0.5) least-sensitive *enabled* groups by the
//     baseline ranking (N = enabled groups; halves round up) get the most
//     aggressive format, the rest stay in the base dtype;
//   - a coverage manifest (seed format: selected_layers + dropped_layers,
//     optionally disabled_layers) that partitions the baseline's group keys
//     exactly: its selected, enabled groups get the most aggressive format;
//   - an effective-bits target B in (0, 16): the exact search picks a format
//     per enabled group so that the average weight bits are <= B with the
//     least total score.
// Combinations are refused rather than given a meaning a user has to guess
// (a manifest plus a target, for instance, could mean "at most" or "exactly").
// No selection is refused too: quantizing everything is spelled coverage 1.
//
// disabled_layers combine with any selection: the request's patterns and the
// coverage manifest's own disabled_layers are merged (same fnmatch rule, see
// groups.h) and remove groups from the candidates. A pattern that matches no
// Linear is an error.
//
// Torch-free.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant/baseline.h"
#include "core/quant/scheme_spec.h"
#include "core/quant/search.h"
#include "nlohmann/json.hpp"

namespace autoquant {

// Accepts the seed manifests' shape: {"selected_layers": [...], "dropped_layers": [...],
// optionally "disabled_layers": [...], anything else ignored}. InvalidArgument when a
// list is missing or holds a non-string.
absl::StatusOr<CoverageManifest> ParseCoverageManifest(const nlohmann::json& j, absl::string_view source);

// InvalidArgument listing missing, extra and duplicated keys unless the
// manifest partitions `keys` exactly.
absl::Status ValidatePartition(const CoverageManifest& m, const std::vector<std::string>& keys);

// Parses a coverage: a fraction in (0, 1] ("0.1", "1"), "topXX" or "XX%" with
// XX in (0, 100]. A bare number above 1, an empty string, NaN or anything else
// is InvalidArgument naming the accepted forms.
absl::StatusOr<double> ParseCoverage(absl::string_view text);

// The request's disabled_layers followed by the coverage manifest's (without
// repeats): the patterns a scheme applies.
std::vector<std::string> EffectiveDisabledLayers(const SchemeSelection& s);

// Which groups a selection may quantize, before any score is known.
struct Candidates {
  std::vector<bool> disabled;                         // per group, by the merged patterns
  std::vector<std::vector<std::string>> disabled_by;  // per group: patterns that matched a member
  std::vector<bool> candidate;                        // per group: enabled and (manifest) selected
  size_t enabled = 0;                                 // groups not disabled
};

// Everything about a selection that the model's Linears and groups decide,
// no baseline needed: ValidateSelection, patterns that match nothing, a
// manifest that does not partition `groups`' keys, a selection that picks no
// group (InvalidArgument); an infeasible effective-bits target (OutOfRange,
// stating the minimum achievable bits, which depends only on costs).
// `groups` are the quantizable groups (a baseline's); `formats` the
// candidate formats with NONE last.
absl::StatusOr<Candidates> SelectCandidates(const SchemeSelection& s, const std::vector<LinearDesc>& linears,
                                            const std::vector<QuantGroup>& groups, bool include_vision,
                                            const std::vector<Format>& formats);

struct Plan {
  std::vector<size_t> format;                         // per baseline group: index into baseline.formats
  std::vector<bool> disabled;                         // per group: by disabled_layers
  std::vector<std::vector<std::string>> disabled_by;  // per group: the patterns that disabled it
  std::vector<std::string> disabled_layers;           // the merged patterns applied (EffectiveDisabledLayers)
  std::vector<bool> candidate;                        // per group: allowed to be quantized
  double effective_bits = 16;
  double total_score = 0;
  std::optional<double> coverage;
  std::optional<double> target_bits;
  std::optional<SearchResult> search;  // when an effective-bits target was given

  bool quantized(size_t g, const Baseline& b) const { return IsQuantized(b.formats[format[g]]); }
  size_t num_quantized(const Baseline& b) const;
};

// SelectCandidates' errors, then the plan. Never quantizes zero groups.
absl::StatusOr<Plan> MakePlan(const Baseline& b, const SchemeSelection& s);

// "12 NVFP4, 3 FP8": how many groups the plan puts in each quantized format, most aggressive first
// (formats with no group left out; "none" when nothing is quantized).
std::string PlanFormatCounts(const Plan& p, const Baseline& b);

// The coverage manifest a plan implies: quantized groups selected, the rest dropped.
CoverageManifest CoverageOf(const Plan& p, const Baseline& b);

}  // namespace autoquant

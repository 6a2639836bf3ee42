// The weight-diversity regression check behind `autoquant diff`: the seeds'
// bug was ten scheme directories holding one set of weights. For scheme
// directories A, B, ...:
//   - each scheme is checked against its own quant manifest: every group
//     member stored in the format the manifest chose for it (FP8 weights with
//     weight_scale and input_scale, NVFP4 in either encoding, W4A16 NVFP4
//     without an input scale), base-dtype weights elsewhere;
//   - every pair is compared: the groups whose chosen formats differ, max |Δ|
//     of the dequantized Linear weights (a module whose scales alone differ
//     counts: its dequantized weight differs), and whether the two are
//     bit-identical (every tensor's bytes equal).
// The check fails if any pair is identical or any scheme disagrees with its
// manifest.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace autoquant {

struct PairDiff {
  std::string a, b;
  std::vector<std::string> groups_differ;  // group keys whose formats differ
  double max_abs_diff = 0;                 // over dequantized Linear weights
  std::string max_abs_diff_tensor;
  bool identical = false;
};

struct SchemeCheck {
  std::string scheme;
  std::vector<std::string> problems;
  bool ok() const { return problems.empty(); }
};

struct SchemeDiffReport {
  std::vector<std::string> schemes;
  std::vector<SchemeCheck> checks;
  std::vector<PairDiff> pairs;
  bool ok() const;
  nlohmann::ordered_json ToJson() const;
  std::string ToText() const;
};

// NotFound / InvalidArgument when a directory is not a readable scheme
// (no checkpoint, no quant manifest). Fewer than two directories is fine for
// the self-check alone.
absl::StatusOr<SchemeDiffReport> DiffSchemes(const std::vector<std::filesystem::path>& dirs);

}  // namespace autoquant

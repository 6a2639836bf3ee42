// The sensitivity baseline: everything a scheme needs that is expensive to
// compute and independent of the scheme, computed once per (model,
// calibration set, method, formats, steps) and reused by every scheme.
//
//   - the quantizable Linears and their groups (all enabled),
//   - calibration amax per Linear (input and weight), per format,
//   - per-group scores and costs per format,
//   - the ranking of groups, least sensitive first.
//
// Its key is a SHA-256 over the inputs that determine it (see BaselineKey):
// a different model, calibration set, method, format set, step counts or
// grouping never reuses a stale baseline. Saved as JSON (float amax values
// round-trip exactly through nlohmann's shortest representation).
//
// Torch-free.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant/formats.h"
#include "core/quant/groups.h"
#include "core/quant/scheme_spec.h"
#include "nlohmann/json.hpp"

namespace autoquant {

// What a baseline is asked for: the settings of a scheme request that decide
// it. Step counts and batch size as SchemeSpec has them (0: defaults); the
// engine turns them into BaselineInputs.
struct BaselineRequest {
  ScoreMethod method = ScoreMethod::kGradient;
  int calib_steps = 0;
  int score_steps = 0;
  bool include_vision = false;
  int batch_size = 0;
  std::vector<Format> formats;  // the requested search space; empty: FP8 alone (CandidateFormats)
};
BaselineRequest BaselineRequestOf(const SchemeSpec& spec);

struct BaselineInputs {
  std::string model_fingerprint;  // hex SHA-256 of config + weights
  std::string calib_fingerprint;  // hex SHA-256 of the calibration file
  ScoreMethod method = ScoreMethod::kGradient;
  std::vector<Format> formats;  // the candidates, Format::kNone not among them
  int calib_steps = 0;          // batches
  int score_steps = 0;          // batches
  int batch_size = 1;           // samples per batch: with the steps, which samples were used
  bool include_vision = false;
  std::string compute_dtype;  // "bfloat16" / "float32": scores depend on it
};

// Hex SHA-256 over a canonical serialization of the inputs (Internal if
// hashing fails).
absl::StatusOr<std::string> BaselineKey(const BaselineInputs& in);

struct Baseline {
  std::string key;
  BaselineInputs inputs;
  std::vector<Format> formats;      // the candidates, then Format::kNone last
  std::vector<LinearDesc> linears;  // every Linear of the model, model order
  std::vector<QuantGroup> groups;   // quantizable groups, none disabled
  // [format][linear]; NONE has no entry. 0 where a Linear never ran.
  std::vector<std::vector<float>> input_amax;
  std::vector<std::vector<float>> weight_amax;
  // [group][format], NONE included (score 0, cost = numel).
  std::vector<std::vector<double>> scores;
  std::vector<std::vector<double>> costs;
  std::vector<size_t> ranking;     // group indices, least sensitive first
  int64_t total_weight_numel = 0;  // over all groups: the cost denominator
  double score_seconds = 0;        // how long scoring took
  double calib_seconds = 0;

  // Cost of a group in format f: numel x bits / 16.
  static double Cost(int64_t numel, Format f) { return double(numel) * SpecOf(f).bits / 16.0; }
  // Ranks by the most aggressive format's score, ascending; ties by model order.
  void ComputeRanking();
  // The index of `f` in formats; formats.size() when it is not a candidate.
  size_t format_index(Format f) const;
};

nlohmann::json BaselineToJson(const Baseline& b);
// DataLoss, naming the first problem, for a missing or mistyped field and for
// any inconsistency that later code would index by: sizes of the per-group
// scores and costs (one per format) and of the per-format, per-Linear amax;
// group members and ranking entries out of range; a ranking that is not a
// permutation ordered by score; negative or non-finite scores, costs and
// amax; costs or numels that do not follow from the Linears.
absl::StatusOr<Baseline> BaselineFromJson(const nlohmann::json& j);

// Writes `b` atomically as dir/baseline-KEY.json, creating `dir`; first
// removes the temporary files that killed writers left in `dir`.
absl::Status SaveBaseline(const Baseline& b, const std::filesystem::path& dir);
// NotFound if no baseline with this key is cached in `dir`; DataLoss if the
// cached file is not valid JSON, fails BaselineFromJson, or its inputs do not
// hash to `key`; the filesystem's error otherwise.
absl::StatusOr<Baseline> LoadBaseline(const std::filesystem::path& dir, const std::string& key);

}  // namespace autoquant

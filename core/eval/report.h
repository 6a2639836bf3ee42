// The coverage trade-off report behind `autoquant report`: what each evaluated
// scheme of a sweep costs against the base model, and what in the numbers
// should not be trusted.
//
// A scheme directory that has been evaluated holds
// `layer-sensitivity/evaluation.json` (docs/evaluation.md) next to its quant
// manifest `layer-sensitivity/<scheme>_quant_manifest.json`. ReadReportPoint
// reads the two into a ReportPoint; BuildReport turns the points into
// report.json ("autoquant.report.v1"): a base point, one point per scheme
// ordered by coverage, and findings:
//   - inversions: a scheme with more coverage that degrades a metric (KL,
//     logit MSE, perplexity delta) less than one with less coverage, and
//     whether their 95 % intervals overlap (within noise) or not;
//   - identical schemes: equal tensor digests for every tensor, or equal
//     per-sample numbers (also against the base), the seeds' bug of ten
//     scheme directories holding one set of weights;
//   - mixed inputs: schemes evaluated on different eval sets or base models
//     (refused unless allowed);
//   - non-finite generation.
// ReportMarkdown renders a report as report.md.
//
//   std::vector<ReportPoint> points;
//   for (const auto& dir : dirs) {
//     ASSIGN_OR_RETURN(ReportPoint p, ReadReportPoint(dir));
//     points.push_back(std::move(p));
//   }
//   ASSIGN_OR_RETURN(nlohmann::ordered_json report, BuildReport(std::move(points)));
//   std::string md = ReportMarkdown(report);
//
// Torch-free; reads files only. Every function is thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace autoquant {

inline constexpr char kReportFormat[] = "autoquant.report.v1";
inline constexpr char kEvaluationFormat[] = "autoquant.evaluation.v1";

// A metric's mean and 95 % interval over `samples` samples. NaN where the
// evaluation recorded null (a non-finite number).
struct MetricSummary {
  double mean = 0;
  double ci95_low = 0, ci95_high = 0;
  int64_t samples = 0;
  std::string over;  // "samples_with_images" | "all_samples"
};

struct PerplexitySummary {
  double base = 0, scheme = 0, delta = 0;
  double delta_ci95_low = 0, delta_ci95_high = 0;
  int64_t tokens = 0, samples = 0;
};

// One sample's numbers (evaluation.json's per_sample); NaN for null.
struct SampleNumbers {
  int64_t index = 0;
  double nll_base = 0, nll_scheme = 0;
  double logit_mse_last_token = 0, logit_kl_last_token = 0;
};

struct GenerationSummary {
  int64_t max_new_tokens = 0;
  bool all_finite = true;
  double mean_agreement = 0;
  double base_tokens_per_second = 0, scheme_tokens_per_second = 0;
  std::vector<int64_t> non_finite_prompts;  // eval-set indices of prompts with a non-finite logit
};

struct ReportTensorDigest {
  std::string file, sha256;
};

// One evaluated scheme: evaluation.json's numbers and the quant manifest's
// selection and tensor digests.
struct ReportPoint {
  std::string scheme;
  std::filesystem::path dir;  // absolute
  double coverage = 0;        // fraction in [0, 1]
  bool coverage_requested = false;
  double effective_bits = 16;
  int64_t groups_quantized = 0, groups_total = 0;
  // The search space, most aggressive first ("NVFP4+FP8"; "FP8" for evaluations from before formats):
  // points of one format set form one curve; inversions are looked for within a set.
  std::string format_set = "FP8";
  std::map<std::string, int64_t> groups_by_format;  // quantized format name -> groups in it
  std::string base_model_fingerprint;
  std::string eval_set_path, eval_set_fingerprint;
  int64_t eval_samples = 0, eval_samples_with_images = 0;
  PerplexitySummary perplexity;
  MetricSummary logit_mse_last_token, logit_kl_last_token;
  std::optional<GenerationSummary> generation;  // absent when the evaluation generated nothing
  std::vector<SampleNumbers> per_sample;
  // tensor name -> digest; absent when the manifest records none (older exports).
  std::optional<std::map<std::string, ReportTensorDigest>> digests;
};

// Reads `scheme_dir`/layer-sensitivity/evaluation.json and the quant manifest
// it names. NotFound when either is missing (the message says how to evaluate
// the scheme); InvalidArgument naming the file and the field for malformed
// JSON, a wrong format or a missing or mistyped field; FailedPrecondition when
// the evaluation does not belong to the manifest next to it (another scheme
// name, other effective bits: it is stale, evaluate again).
absl::StatusOr<ReportPoint> ReadReportPoint(const std::filesystem::path& scheme_dir);

struct ReportOptions {
  // Allow schemes evaluated on different eval sets or base models in one
  // report (listed as a finding; inversions compare only points that share
  // both). Refused by default: their numbers are not comparable.
  bool allow_mixed_inputs = false;
};

// report.json's content ("autoquant.report.v1", fields in docs/evaluation.md).
// InvalidArgument for no points, two points from the same directory, or, unless
// allowed, points with different eval-set or base-model fingerprints (the
// message names the schemes and fingerprints).
absl::StatusOr<nlohmann::ordered_json> BuildReport(std::vector<ReportPoint> points, const ReportOptions& options = {});

// report.md: a table of the points (base first) and the findings as a list,
// linking report.png. `report` is BuildReport's output.
std::string ReportMarkdown(const nlohmann::ordered_json& report);

// The findings as one line each, loudest first (identical schemes, mixed
// inputs, non-finite generation, then inversions marked within / beyond
// noise): what GetReport returns as `findings`.
std::vector<std::string> ReportFindingLines(const nlohmann::ordered_json& report);

}  // namespace autoquant

// What a user asks for one scheme, typed, and its one validation: the same struct reaches the engine
// from the CLI (`autoquant quantize`), from the daemon's gRPC service (proto SchemeSpec, converted in
// server/job_proto.cc) and from the job store (JSON, SchemeSpecToJson / SchemeSpecFromJson below).
// The choices a request makes (score method, export format, output layout) and the phases of
// producing a scheme are enums; their names exist only at the edges: these Name / Parse functions
// (the CLI's flags, stored JSON, manifests, log lines and metrics labels) and job_proto.cc (the wire).
//
// Torch-free and gRPC-free (library aq_scheme_spec): core/jobs and the service include it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/quant/formats.h"
#include "nlohmann/json.hpp"

namespace autoquant {

// How group sensitivity is scored (ModelOpt auto_quantize's two methods).
enum class ScoreMethod { kGradient, kKlDiv };
absl::string_view ScoreMethodName(ScoreMethod m);                      // "gradient" | "kl_div"
absl::StatusOr<ScoreMethod> ParseScoreMethod(absl::string_view name);  // also "kl-div", any case

// The checkpoint's quantization metadata (hf_quant_config.h has both formats' files).
enum class ExportFormat { kModelOpt, kCompressedTensors };
absl::string_view ExportFormatName(ExportFormat f);                      // "modelopt" | "compressed-tensors"
absl::StatusOr<ExportFormat> ParseExportFormat(absl::string_view name);  // also "compressed_tensors", any case

// How a scheme's weights are stored (export.h): standalone shards of its own, or shared
// content-addressed blobs hard-linked into the scheme directory.
enum class ExportLayout { kStandalone, kShared };
absl::string_view ExportLayoutName(ExportLayout layout);  // "standalone" | "shared"
absl::StatusOr<ExportLayout> ParseExportLayout(absl::string_view name);

// The phases of a job, in order (a reused baseline skips calibrate and score; evaluate only when asked).
enum class Phase { kLoad, kCalibrate, kScore, kSearch, kExport, kEvaluate };
absl::string_view PhaseName(Phase p);  // "load", "calibrate", ...
absl::StatusOr<Phase> ParsePhase(absl::string_view name);

// A coverage manifest, as the seed sprint's files hold it.
struct CoverageManifest {
  std::vector<std::string> selected_layers;
  std::vector<std::string> dropped_layers;
  std::vector<std::string> disabled_layers;  // optional in the file; merged with the request's
  bool operator==(const CoverageManifest&) const = default;
};

// Which groups a scheme quantizes: exactly one of coverage, coverage_manifest and effective_bits,
// and optionally patterns of Linears to leave alone.
struct SchemeSelection {
  std::optional<double> coverage;  // (0, 1]
  std::optional<CoverageManifest> coverage_manifest;
  std::vector<std::string> disabled_layers;  // fnmatch patterns (ModelOpt's disabled_layers)
  std::optional<double> effective_bits;      // (0, 16): below the base's 16 bits
  bool operator==(const SchemeSelection&) const = default;
};

struct SchemeSpec {
  std::string scheme;  // one plain path component (scheme_name.h); the CLI defaults it to the output's name
  SchemeSelection selection;
  ScoreMethod method = ScoreMethod::kGradient;
  // compressed-tensors loads correctly in transformers and vLLM; modelopt is for vLLM / TensorRT-LLM only
  // (transformers drops its scales).
  ExportFormat format = ExportFormat::kCompressedTensors;
  std::optional<ExportLayout> layout;  // none: the daemon's --layout (the CLI: standalone)
  int calib_steps = 0;                 // batches; 0 = the whole calibration set
  int score_steps = 0;                 // batches; 0 = min(set, 128 samples)
  int batch_size = 0;                  // samples per calibration / score batch; 0 = the engine's default
  bool include_vision = false;
  bool overwrite = false;
  // The quantization formats searched (formats.h), any order; empty: FP8 alone. Two or more need an
  // effective_bits selection (a coverage picks groups for one format).
  std::vector<Format> formats;
  bool operator==(const SchemeSpec&) const = default;
};

// Everything about a spec that needs neither the model nor the disk: the scheme name's form (when one
// is given), exactly one selection and its range, step counts and the batch size, the formats (no
// NONE, no repeats, several only with effective_bits). InvalidArgument naming
// the field as the API spells it (proto SchemeSpec; the CLI's flags are the same names with dashes).
absl::Status ValidateSchemeSpec(const SchemeSpec& spec);
// The selection part of it (the planner checks it again for callers that skip the spec).
absl::Status ValidateSelection(const SchemeSelection& s);

// The JSON the job store keeps. Field names and values are those of every stored spec so far, so
// rows written by earlier versions read back; FromJson is DataLoss for a malformed row and
// InvalidArgument (ValidateSchemeSpec's) for a well-formed one that asks for something invalid.
void SchemeSpecToJson(const SchemeSpec& spec, nlohmann::json* j);
absl::StatusOr<SchemeSpec> SchemeSpecFromJson(const nlohmann::json& j);

}  // namespace autoquant

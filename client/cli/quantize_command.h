// `autoquant quantize`: one scheme offline, through the same Engine the
// daemon uses.
//   autoquant quantize --model DIR --calib FILE --out DIR [--scheme NAME]
//     (--coverage X | --coverage-manifest FILE | --effective-bits B) [--disabled-layers PATTERN ...]
//     [--method gradient|kl_div] [--format compressed-tensors|modelopt] [--formats nvfp4,fp8]
//     [--calib-steps N] [--score-steps N] [--batch-size N] [--device auto|cpu|cuda]
//     [--dtype auto|bfloat16|float32] [--baseline-cache DIR] [--include-vision] [--overwrite] [--json]
//     [--layout standalone|shared] [--blob-store DIR]
// Progress goes to stderr; with --json a summary object goes to stdout.
#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace autoquant::cli {

struct QuantizeOptions {
  std::string model, calib, out, scheme, coverage_manifest, method = "gradient", format = "compressed-tensors",
                                                            device = "auto", dtype = "auto", baseline_cache,
                                                            layout = "standalone", blob_store;
  std::string coverage;
  std::string formats;          // comma-separated quantization formats (ParseFormatList); empty: FP8
  bool coverage_given = false;  // also for --coverage "", which is an error, not "no coverage"
  std::vector<std::string> disabled_layers;
  std::optional<double> effective_bits;
  int calib_steps = 0, score_steps = 0, batch_size = 1;
  bool include_vision = false, overwrite = false, json = false;
};

absl::Status RunQuantize(const QuantizeOptions& options, std::ostream& out, std::ostream& log);
void AddQuantizeCommand(CLI::App& app, absl::Status* status);

}  // namespace autoquant::cli

// What producing one scheme did (Engine::RunScheme's result), with its one conversion to names:
// ToMetrics for the daemon's job result and /metrics, ToJson for `autoquant quantize --json`.
// Torch-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "core/quant/scheme_spec.h"
#include "nlohmann/json.hpp"

namespace autoquant {

struct SchemeResult {
  std::filesystem::path out_dir;
  std::string scheme;
  double effective_bits = 16;
  size_t groups_quantized = 0;
  size_t groups_total = 0;
  std::string baseline_key;
  bool baseline_reused = false;            // no calibration or scoring pass ran for this scheme
  double baseline_seconds = 0;             // calibration + scoring time spent by this call
  int64_t baseline_peak_device_bytes = 0;  // CUDA allocator's peak reserved bytes while computing it
  double export_seconds = 0;
  uint64_t export_bytes = 0;         // tensor bytes written to disk (shared: new blobs and copies only)
  uint64_t export_tensor_bytes = 0;  // the scheme's tensors
  ExportFormat format = ExportFormat::kCompressedTensors;
  ExportLayout layout = ExportLayout::kStandalone;
  size_t blobs_reused = 0, blobs_written = 0, blobs_copied = 0;
  size_t blob_records_failed = 0;  // blobs whose record the job store could not keep (reuse lost, scheme intact)
  double export_write_seconds = 0, export_check_seconds = 0;
  // Standalone: the writer threads' time, summed over them, by step (checkpoint_writer.h's WriterSeconds).
  double export_produce_seconds = 0, export_hash_seconds = 0, export_pwrite_seconds = 0;
  int export_writer_threads = 0;       // standalone: the threads that wrote (EngineOptions::export_threads)
  size_t export_resident_weights = 0;  // FP8 weights quantized from the resident model's copy

  // Its statistics by name (the job result's metrics, so GetStatus and /metrics, and the CLI's --json):
  // a statistic is added here once. Layout-specific ones only for their layout.
  std::map<std::string, double> ToMetrics() const;
  // What the result says (out_dir, scheme, format, layout, effective_bits, groups, baseline key and reuse)
  // followed by ToMetrics().
  nlohmann::ordered_json ToJson() const;
};

}  // namespace autoquant

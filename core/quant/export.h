// Writes one scheme's checkpoint from the base checkpoint, the baseline and
// the scheme's plan — streaming, shard by shard, into a staged directory that
// is renamed into place only after the self-check passed.
//
// Per quantized Linear <m> (FP8, per tensor; fp8_storage.h has the details):
//   <m>.weight        float8_e4m3fn [out, in] = saturate(W / weight_scale)
//   <m>.weight_scale  weight amax / 448 (amax of the base checkpoint's W)
//   <m>.input_scale   calibrated input amax / 448
// compressed-tensors (the default) stores the scales as [1] in the base
// weight's dtype, modelopt as 0-d float32. Every other tensor is copied bit
// for bit from the base, under the base's own name.
//
// Also written: config.json (the base's, plus quantization_config),
// hf_quant_config.json (modelopt), the base's tokenizer/processor/generation
// files, README.md (format and what loads it), and layer-sensitivity/ (quant
// manifest with the tensors' SHA-256, coverage manifest, search state,
// per-layer-sensitivity.md).
//
// Before publishing: the written directory is reopened and every tensor
// compared with the plan — FP8 (bytes equal to a fresh quantization of the
// base weight) exactly where the plan quantizes, base bytes elsewhere, no
// tensor missing or extra — and the digests are verified against the
// manifest. A mismatch fails the export and nothing appears under the output
// name. The caller checks the output path (path_guard.h) before calling.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/io/checkpoint.h"
#include "core/quant/baseline.h"
#include "core/quant/hf_quant_config.h"
#include "core/quant/plan.h"
#include "core/util/publish_gate.h"

namespace autoquant {

struct ExportOptions {
  std::string scheme;  // recorded in the manifests
  std::filesystem::path out_dir;
  ExportFormat format = ExportFormat::kCompressedTensors;
  bool overwrite = false;
  std::vector<std::string> disabled_by_request;  // recorded in the manifest next to the plan's merged patterns
  std::string job_id;                            // recorded in the manifest (the daemon's job)
  uint64_t max_shard_bytes = 5ull << 30;
  const std::atomic<bool>* cancel = nullptr;
  std::function<void(double)> progress;  // fraction of the export done
  // Decides, at the moment of the rename into place, whether publishing may
  // happen (the daemon's job lease); none: always.
  PublishGate publish_gate;
};

struct ExportResult {
  std::filesystem::path out_dir;
  size_t tensors_written = 0;
  size_t quantized_modules = 0;
  uint64_t bytes_written = 0;
};

// The base checkpoint's name for a model module: legacy checkpoints store
// "model.language_model.X" as "model.X" and "model.visual.X" as "visual.X".
// NotFound if neither "<name>.weight" form is in the checkpoint.
absl::StatusOr<std::string> CheckpointModuleName(const Checkpoint& base, const std::string& module);

absl::StatusOr<ExportResult> ExportScheme(const Checkpoint& base, const Baseline& baseline, const Plan& plan,
                                          const ExportOptions& options);

}  // namespace autoquant

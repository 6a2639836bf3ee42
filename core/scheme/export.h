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
// Layouts: standalone writes every tensor into the scheme's own shards;
// shared (shared_export.h) stores each layer group's BF16 and FP8 versions
// and the rest of the model once, as content-addressed blobs under
// options.blob_store, and hard-links them into the scheme directory (a copy
// where links are impossible), holding the store's use lock meanwhile so
// that `autoquant gc` removes none of them. Either way the directory is an
// ordinary Hugging Face checkpoint.
//
// Before publishing: the written directory is reopened and its tensors
// compared with the plan — FP8 exactly where the plan quantizes, the base's
// dtype and shape elsewhere, no tensor missing or extra — and the manifest's
// digests with those of the bytes on disk (standalone: hashed from the staged
// files; shared: the blobs', each verified in full when this process first
// uses it and again whenever the file's stamp changed, blob_store.h). The FP8
// bytes themselves are QuantizeForExport's of the base weight by construction
// (export_test compares them with ModelOpt's quantization). A mismatch fails
// the export and nothing appears under the output name. The caller checks the
// output path (path_guard.h) before calling.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/io/blob_records.h"
#include "core/io/checkpoint.h"
#include "core/io/checkpoint_writer.h"
#include "core/quant/baseline.h"
#include "core/quant/plan.h"
#include "core/quant/scheme_spec.h"
#include "core/scheme/hf_quant_config.h"
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
  // kStandalone: shards as small as this, about one per writer thread, so that the threads write different
  // files (ShardingOptions::min_shard_bytes); 0 fills each shard to max_shard_bytes.
  uint64_t min_shard_bytes = 512ull << 20;
  ExportLayout layout = ExportLayout::kStandalone;
  // kShared: the blob store (blob_store.h) is blob_store / blob_store_below: the first is the caller's path
  // (symlinks in it are followed), the components of the second are never followed through a symlink
  // (the daemon: its models root and ".autoquant/blobs"). On out_dir's filesystem, or blobs are copied.
  std::filesystem::path blob_store;
  std::string blob_store_below;
  // kShared: the daemon's records of the blobs it produced (blob_records.h), through which alone a blob is
  // found before its tensors are produced; none (the offline CLI): every piece is produced and its blob
  // reused only when a file of its id verifies in full.
  BlobRecords* blob_records = nullptr;
  bool allow_links = true;  // kShared: false copies the blobs (for tests of the fallback)
  // Where FP8 weights are quantized: the daemon's GPU, so that the CPU only copies bytes.
  torch::Device quantize_device = torch::kCPU;
  // The resident model's Linear weights, by model Linear name (the baseline's names). A quantized weight
  // is read from here instead of from the base checkpoint when it has the checkpoint tensor's dtype and
  // shape (the loader copies such tensors verbatim): on the GPU that skips copying the base weight to
  // the device. Others are read from the checkpoint.
  std::map<std::string, torch::Tensor> resident_weights;
  // kStandalone: > 0 quantizes the FP8 weights on one thread ahead of the writer's (fp8_prefetch.h), holding
  // at most about this many bytes of them in host memory; 0 quantizes each on the writer thread that
  // writes it (the better choice on a CPU, where quantizing is the work).
  uint64_t fp8_prefetch_bytes = 0;
  int fp8_prefetch_threads = 4;  // each quantizes on a stream of its own
  int writer_threads = 8;        // kStandalone: threads that produce, hash and write the tensors
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
  uint64_t tensor_bytes = 0;   // the scheme's tensors
  uint64_t bytes_written = 0;  // tensor bytes this export wrote to disk (shared: new blobs and copies only)
  ExportLayout layout = ExportLayout::kStandalone;
  size_t blobs_reused = 0, blobs_written = 0, blobs_copied = 0;  // kShared
  size_t blob_records_failed = 0;  // kShared: blobs whose record the job store could not keep
  double write_seconds = 0;        // tensors produced and written (or linked)
  double check_seconds = 0;        // digests and the self-check
  WriterSeconds writer;            // kStandalone: the writer threads' time, by step
  int writer_threads = 0;          // kStandalone: how many wrote
  size_t resident_weights = 0;     // quantized weights read from ExportOptions::resident_weights
  bool fp8_prefetched = false;     // the FP8 weights were produced ahead of the writer (fp8_prefetch_bytes)
};

// The base checkpoint's name for a model module: legacy checkpoints store
// "model.language_model.X" as "model.X" and "model.visual.X" as "visual.X".
// NotFound if neither form has a "<name>.weight" (or, for a compressed-tensors NVFP4 Linear,
// "<name>.weight_packed") in the checkpoint.
absl::StatusOr<std::string> CheckpointModuleName(const Checkpoint& base, const std::string& module);

absl::StatusOr<ExportResult> ExportScheme(const Checkpoint& base, const Baseline& baseline, const Plan& plan,
                                          const ExportOptions& options);

}  // namespace autoquant

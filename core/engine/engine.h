// The AutoQuant engine: what `autoquant quantize` and autoquantd call.
//
// Create() loads the base model and the calibration set once (onto the GPU
// when there is one); RunScheme() then produces one scheme's checkpoint. The
// expensive part of a scheme, the baseline (calibration amax + sensitivity
// scores), is computed once per (model, calibration set, method, formats,
// steps, grouping) and reused: from memory within a process, and from the
// baseline cache directory across processes. A changed model or calibration
// set changes the baseline key (content SHA-256), so a stale baseline is never
// reused.
//
//   ASSIGN_OR_RETURN(auto engine, Engine::Create({.model_dir = base, .calib_path = calib}));
//   ASSIGN_OR_RETURN(SchemeResult r, engine->RunScheme(request, on_progress, &cancel));
//
// This header is torch-free (the daemon's gRPC code includes it). RunScheme
// is not thread-safe: one scheme at a time per engine (the daemon's worker
// serializes jobs); ValidateScheme is, and may run while RunScheme does.
// `cancel` is checked between batches, groups and shards; a cancelled scheme
// returns Cancelled and leaves no output directory.
// Errors: InvalidArgument for bad requests (scheme names, outputs that hit
// an input, patterns matching nothing, manifests that do not partition the
// keys, coverage out of range, not exactly one selection), OutOfRange for
// infeasible effective-bits targets, AlreadyExists for an existing output
// without overwrite, FailedPrecondition for an output that is not ours or not
// writable, ResourceExhausted for device OOM.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/engine/engine_info.h"
#include "core/engine/scheme_result.h"
#include "core/io/blob_records.h"
#include "core/quant/baseline.h"
#include "core/quant/plan.h"
#include "core/quant/scheme_spec.h"
#include "core/scheme/hf_quant_config.h"
#include "core/util/publish_gate.h"

namespace autoquant {

class Qwen2_5_VLModel;
class CalibSet;

struct EngineOptions {
  std::filesystem::path model_dir;
  std::filesystem::path calib_path;
  std::filesystem::path baseline_cache;  // empty: in-memory only
  std::filesystem::path eval_set;        // protected from outputs like the inputs above; empty: none
  std::string device = "auto";           // auto | cpu | cuda | cuda:N
  std::string dtype = "auto";            // auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float32
  int batch_size = 1;                    // samples per calibration / score batch
  // Device memory gradient scoring may spend on keeping autograd graphs instead of
  // recomputing layers (PassOptions::graph_bytes; CUDA only). The default keeps the
  // 7B preset's baseline within 30 GB at batch 4.
  int64_t score_graph_bytes = int64_t{6} << 30;
  // Threads that write a standalone export's tensors; 0: on a GPU half the logical CPUs less 2 (from 2
  // to 8), on the CPU ExportOptions' default.
  int export_threads = 0;
};

// The user's spec (scheme_spec.h: an empty scheme name defaults to out_dir's name; batch_size 0 is
// EngineOptions::batch_size; no layout is standalone) and where and for whom to write it.
struct SchemeRequest : SchemeSpec {
  std::filesystem::path out_dir;
  std::string job_id;  // the daemon job asking; recorded in the quant manifest
  // export.h: shared blobs in blob_store / blob_store_below (blob_store required for shared; see
  // ExportOptions), found through blob_records where given (the daemon's job store).
  std::filesystem::path blob_store;
  std::string blob_store_below;
  BlobRecords* blob_records = nullptr;
  PublishGate publish_gate;  // see ExportOptions::publish_gate; none: always publish
};

struct ProgressEvent {
  Phase phase;
  double fraction = 0;  // within the phase
  std::string message;
  // Something the user should know that does not stop the scheme (an
  // unwritable baseline cache, a corrupt cache entry recomputed, a format
  // transformers cannot load): worth showing even when progress is not.
  bool warning = false;
};
using ProgressFn = std::function<void(const ProgressEvent&)>;

class Engine : public EngineInfo {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options,
                                                        const ProgressFn& progress = nullptr);
  ~Engine() override;

  // Validates the request (ValidateScheme), computes or reuses the baseline,
  // plans and exports.
  absl::StatusOr<SchemeResult> RunScheme(const SchemeRequest& request, const ProgressFn& progress = nullptr,
                                         const std::atomic<bool>* cancel = nullptr);

  // Everything about `request` that can be checked without the baseline, so
  // that a bad request fails in milliseconds instead of after calibration and
  // scoring: the scheme name; the output path (never the base model, the
  // calibration file or the baseline cache, nor inside or around them;
  // existing only with overwrite and only if it is a scheme of ours; a
  // writable parent); step counts; exactly one selection and its range;
  // disabled patterns that match no Linear; a coverage manifest's keys
  // against this model's groups (include_vision and a tied head respected);
  // a selection that picks no group; effective-bits bounds and feasibility.
  // Thread-safe: reads only what Create fixed. Codes as for RunScheme.
  absl::Status ValidateScheme(const SchemeRequest& request) const;

  // The baseline for these settings: cached, or computed now. A cache file
  // that cannot be used (corrupt, inconsistent, unreadable) is reported as a
  // warning event, recomputed and replaced.
  absl::StatusOr<Baseline> GetBaseline(const BaselineRequest& request, const ProgressFn& progress = nullptr,
                                       const std::atomic<bool>* cancel = nullptr, bool* reused = nullptr);

  // One forward pass over the first calibration sample: proves the model
  // runs on the device before a daemon reports SERVING.
  absl::Status WarmUp();

  // EngineInfo: thread-safe (the daemon's RPC threads call these while the worker runs a scheme).
  absl::StatusOr<Baseline> CachedBaseline(const BaselineRequest& request) const override;
  std::vector<std::string> cached_baseline_keys() const override;
  DeviceMemory device_memory() const override;
  std::string device() const override;
  std::string dtype() const override;
  const std::string& model_fingerprint() const override;
  const std::string& calib_fingerprint() const override;
  int64_t calib_samples() const override;

  // How many scoring passes this engine ran (tests use it to prove reuse).
  int scoring_passes() const;
  const EngineOptions& options() const;

  // The resident model and calibration set, for work that runs beside the engine on the worker
  // thread and must not load a second copy (evaluation: core/eval/evaluator.h). Not thread-safe:
  // use them only where RunScheme could be called, never while it runs; a scheme's hooks are gone
  // when RunScheme returns, so the model is the base model between schemes.
  Qwen2_5_VLModel& resident_model();
  const CalibSet& calib_set() const;

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  // The canonical step counts and key inputs for these settings.
  absl::StatusOr<BaselineInputs> InputsFor(const BaselineRequest& request) const;
  std::unique_ptr<Impl> impl_;
};

}  // namespace autoquant

// The daemon's JobRunner: turns a stored JobSpec into an engine SchemeRequest
// whose output is <models_root>/<scheme>, and runs it on the resident engine.
// Torch-free (reaches the engine through core/engine/engine.h).
//
// Evaluation (kind "evaluate", or a scheme with `evaluate`) runs on the
// daemon's Evaluator, which holds the evaluation set; without one such jobs
// are refused at submit (FailedPrecondition naming --eval-set). A scheme job
// whose evaluation fails or is cancelled keeps its published scheme (it is
// complete and verified) and says so in its message.
//
// Confinement: a scheme name is one plain path component, and the resolved
// output must be a direct child of the models root that is not a symlink, so
// no request writes outside the root. The engine's own checks (never over the
// base model, calibration file or baseline cache; overwrite only replaces
// our own output) apply on top.
#pragma once

#include <filesystem>

#include "core/engine/engine.h"
#include "core/eval/evaluator.h"
#include "core/jobs/job_runner.h"
#include "core/jobs/scheme_dir.h"

namespace autoquant {

class EngineJobRunner : public JobRunner {
 public:
  // `engine`, `evaluator` (may be null: no evaluation) and `blob_records` are not owned and must outlive
  // the runner. Jobs that name no layout get `default_layout`; shared blobs live in
  // <models_root>/.autoquant/blobs (on the schemes' filesystem, so they link; `.autoquant/blobs` is never
  // followed through a symlink) and are found through `blob_records` (the daemon's job store; null: every
  // piece is produced and verified by content, as the offline CLI does).
  EngineJobRunner(Engine* engine, std::filesystem::path models_root, Evaluator* evaluator = nullptr,
                  ExportLayout default_layout = ExportLayout::kShared, BlobRecords* blob_records = nullptr);

  absl::Status Validate(const JobSpec& spec) override;
  absl::StatusOr<JobResultInfo> Run(const Job& job, const RunnerEventFn& on_event, const std::atomic<bool>* cancel,
                                    const PublishGate& publish_gate) override;
  // "MODEL_SHA256:CALIB_SHA256" of the engine's resident model and calibration set.
  std::string Affinity() const override;

  // The engine request a spec stands for (output under the models root).
  absl::StatusOr<SchemeRequest> ToRequest(const JobSpec& spec) const;

 private:
  Engine* engine_;
  std::filesystem::path root_;
  Evaluator* evaluator_;
  ExportLayout default_layout_;
  BlobRecords* blob_records_;
};

}  // namespace autoquant

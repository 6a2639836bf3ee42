// What the job manager's worker calls to do a job's work. The daemon's
// runner drives the AutoQuant engine (engine_job_runner.h); unit tests of the
// queue use a scripted one. Torch-free.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "core/jobs/job.h"
#include "core/util/publish_gate.h"

namespace autoquant {

struct RunnerEvent {
  Phase phase = Phase::kLoad;
  double fraction = 0;   // within the phase
  std::string message;   // optional detail for the job's log
  bool warning = false;  // logged at warning level
};
using RunnerEventFn = std::function<void(const RunnerEvent&)>;

class JobRunner {
 public:
  virtual ~JobRunner() = default;
  // Everything that can be checked before the job is queued. Thread-safe
  // (called from RPC threads while Run is busy on the worker).
  virtual absl::Status Validate(const JobSpec& spec) = 0;
  // Does the job (its id lets a re-attempt recognise what a cut-off attempt
  // already published). Called on the worker thread only, one
  // job at a time. Returns Cancelled (leaving no output) once `cancel` is set.
  // Publishes its output only through `publish_gate` (the job's lease in a
  // fleet; may be empty: publish freely).
  virtual absl::StatusOr<JobResultInfo> Run(const Job& job, const RunnerEventFn& on_event,
                                            const std::atomic<bool>* cancel, const PublishGate& publish_gate) = 0;
  // What a job needs this runner to hold to run it (the model and the
  // calibration set), recorded in each job at submit; in a fleet a daemon
  // claims only jobs whose affinity is its own. "" (the default): any.
  virtual std::string Affinity() const { return ""; }
};

}  // namespace autoquant

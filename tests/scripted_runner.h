// The job queue's tests run jobs through a scripted JobRunner instead of the
// engine: torch-free, deterministic, and quick.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/jobs/job_runner.h"

namespace autoquant::testing {

// A runner scripted by the test: reports a few phases, checks the cancel
// flag between steps, and can be made to fail or to wait for a go signal.
class ScriptedRunner : public JobRunner {
 public:
  absl::Status Validate(const JobSpec& spec) override {
    if (spec.scheme == "bad") return absl::InvalidArgumentError("scheme 'bad' is rejected by the test runner");
    if (exists.count(spec.scheme)) return absl::AlreadyExistsError("output directory exists (test)");
    return absl::OkStatus();
  }
  absl::StatusOr<JobResultInfo> Run(const Job& job, const RunnerEventFn& on_event, const std::atomic<bool>* cancel,
                                    const PublishGate& /*publish_gate*/) override {
    const JobSpec& spec = job.spec;
    run_thread = std::this_thread::get_id();
    {
      std::lock_guard<std::mutex> lock(mu);
      ran.push_back(spec.scheme);
    }
    for (Phase phase : {Phase::kCalibrate, Phase::kScore, Phase::kSearch, Phase::kExport}) {
      for (int step = 0; step < 4; ++step) {
        while (hold.load() && !cancel->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (step_delay.count() > 0) std::this_thread::sleep_for(step_delay);
        if (cancel->load()) return absl::CancelledError("cancelled");
        on_event({phase, (step + 1) / 4.0, "", false});
      }
    }
    if (spec.scheme == "fails") return absl::ResourceExhaustedError("CUDA out of memory (test)");
    JobResultInfo r;
    r.output_dir = "/models/" + spec.scheme;
    r.groups_quantized = 3;
    r.groups_total = 6;
    return r;
  }
  std::string Affinity() const override { return affinity; }

  std::mutex mu;
  std::vector<std::string> ran;  // guarded by mu
  std::atomic<bool> hold{false};
  std::set<std::string> exists;               // schemes whose output "exists": Validate refuses them (set before use)
  std::chrono::milliseconds step_delay{0};    // per progress step, so that followers see lines arrive
  std::string affinity;                       // the "model:calibration" this runner serves (set before Start)
  std::atomic<std::thread::id> run_thread{};  // the thread Run was last called on (the manager's worker)
};

}  // namespace autoquant::testing

#include "server/daemon_metrics.h"

#include "spdlog/spdlog.h"

namespace autoquant {
using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

namespace {
// Seconds, from a tiny model's sub-second phases to a 7B export.
const Histogram::BucketBoundaries kSecondsBuckets = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600};
}  // namespace

DaemonMetrics::DaemonMetrics(std::shared_ptr<prometheus::Registry> r)
    : registry_(r),
      jobs_(BuildGauge().Name("autoquant_jobs").Help("Jobs in each state").Register(*r)),
      submitted_(BuildCounter().Name("autoquant_jobs_submitted_total").Help("Jobs accepted").Register(*r).Add({})),
      finished_(BuildCounter()
                    .Name("autoquant_jobs_finished_total")
                    .Help("Jobs that reached a terminal state, by state")
                    .Register(*r)),
      queue_depth_(BuildGauge().Name("autoquant_queue_depth").Help("Queued jobs").Register(*r).Add({})),
      progress_(
          BuildGauge().Name("autoquant_job_progress_ratio").Help("Progress of the running job, 0..1").Register(*r)),
      phase_(BuildGauge().Name("autoquant_job_phase").Help("1 for the phase the running job is in").Register(*r)),
      job_seconds_(BuildHistogram()
                       .Name("autoquant_job_duration_seconds")
                       .Help("Job run time from claim to terminal state, by state")
                       .Register(*r)),
      phase_seconds_(
          BuildHistogram().Name("autoquant_phase_duration_seconds").Help("Time spent per job phase").Register(*r)),
      calib_batches_(BuildCounter()
                         .Name("autoquant_calibration_batches_total")
                         .Help("Calibration batches run")
                         .Register(*r)
                         .Add({})),
      score_batches_(
          BuildCounter().Name("autoquant_scoring_batches_total").Help("Scoring batches run").Register(*r).Add({})),
      export_bytes_(BuildCounter()
                        .Name("autoquant_export_bytes_total")
                        .Help("Safetensors bytes written by exports")
                        .Register(*r)
                        .Add({})),
      export_seconds_(BuildHistogram()
                          .Name("autoquant_export_seconds")
                          .Help("Export time per scheme (write, self-check, publish)")
                          .Register(*r)
                          .Add({}, kSecondsBuckets)),
      device_memory_(BuildGauge()
                         .Name("autoquant_device_memory_bytes")
                         .Help("Device memory of the caching allocator, by kind (allocated, reserved)")
                         .Register(*r)),
      device_peak_(BuildGauge()
                       .Name("autoquant_device_memory_peak_bytes")
                       .Help("Highest device memory reserved since start")
                       .Register(*r)
                       .Add({})),
      device_total_(BuildGauge()
                        .Name("autoquant_device_memory_total_bytes")
                        .Help("The device's memory (0 on the CPU)")
                        .Register(*r)
                        .Add({})),
      load_seconds_(BuildGauge()
                        .Name("autoquant_model_load_seconds")
                        .Help("Time to load the model and calibration set and warm up")
                        .Register(*r)
                        .Add({})),
      cache_hits_(BuildCounter()
                      .Name("autoquant_baseline_cache_hits_total")
                      .Help("Schemes that reused a cached sensitivity baseline")
                      .Register(*r)
                      .Add({})),
      cache_misses_(BuildCounter()
                        .Name("autoquant_baseline_cache_misses_total")
                        .Help("Schemes that computed their sensitivity baseline")
                        .Register(*r)
                        .Add({})),
      rpcs_(BuildCounter().Name("autoquant_rpcs_total").Help("RPCs handled, by method and code").Register(*r)),
      serving_(BuildGauge().Name("autoquant_serving").Help("1 when the daemon is SERVING").Register(*r).Add({})),
      scheme_eval_(BuildGauge()
                       .Name("autoquant_scheme_eval")
                       .Help("A scheme's latest evaluation against the base model, by metric (perplexity, "
                             "perplexity_delta, logit_kl_last_token, logit_mse_last_token, generation_agreement, ...)")
                       .Register(*r)),
      leases_lost_(BuildCounter()
                       .Name("autoquant_leases_lost_total")
                       .Help("Jobs this daemon ran until another daemon took them over after its lease expired")
                       .Register(*r)
                       .Add({})),
      store_errors_(BuildCounter()
                        .Name("autoquant_store_errors_total")
                        .Help("Writes the job store failed (a full disk, a database server that is down)")
                        .Register(*r)
                        .Add({})),
      request_queue_depth_(BuildGauge()
                               .Name("autoquant_request_queue_depth")
                               .Help("RPCs waiting for a request thread, by pool (writes: submits and cancels; "
                                     "reads: status, lists, logs, reports)")
                               .Register(*r)),
      requests_refused_(BuildCounter()
                            .Name("autoquant_requests_refused_total")
                            .Help("RPCs refused without being run, by pool and code: RESOURCE_EXHAUSTED (the "
                                  "pool's request queue was full), UNAVAILABLE (shutting down)")
                            .Register(*r)) {
  for (JobState s :
       {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed, JobState::kCancelled}) {
    jobs_.Add({{"state", std::string(JobStateName(s))}});
    // Present from the start at 0, so that increase() sees the first failure (a series born at 1 has no
    // increase to show, and the "job failed" alert in deploy/prometheus/rules.yml would miss it).
    if (IsTerminal(s)) finished_.Add({{"state", std::string(JobStateName(s))}});
  }
  for (const char* kind : {"allocated", "reserved"}) device_memory_.Add({{"kind", kind}});
}

void DaemonMetrics::SetJobCounts(const std::map<JobState, int64_t>& counts) {
  for (const auto& [s, n] : counts) jobs_.Add({{"state", std::string(JobStateName(s))}}).Set(double(n));
}

void DaemonMetrics::OnSubmitted(const Job& job) {
  submitted_.Increment();
  jobs_.Add({{"state", "queued"}}).Increment();
}

void DaemonMetrics::OnStateChange(const Job& job, JobState from) {
  jobs_.Add({{"state", std::string(JobStateName(from))}}).Decrement();
  jobs_.Add({{"state", std::string(JobStateName(job.state))}}).Increment();
  if (IsTerminal(job.state)) {
    finished_.Add({{"state", std::string(JobStateName(job.state))}}).Increment();
    if (job.started_ms > 0 && from == JobState::kRunning) {
      job_seconds_.Add({{"state", std::string(JobStateName(job.state))}}, kSecondsBuckets)
          .Observe(double(job.finished_ms - job.started_ms) / 1000.0);
    }
    if (job.state == JobState::kSucceeded && job.result) {
      if (job.spec.kind == JobKind::kScheme) (job.result->baseline_reused ? cache_hits_ : cache_misses_).Increment();
      for (const auto& [name, value] : job.result->metrics) {
        if (name.rfind("eval_", 0) != 0) continue;
        scheme_eval_.Add({{"scheme", job.spec.scheme}, {"metric", name.substr(5)}}).Set(value);
      }
      auto it = job.result->metrics.find("export_bytes");
      if (it != job.result->metrics.end()) export_bytes_.Increment(it->second);
      it = job.result->metrics.find("export_seconds");
      if (it != job.result->metrics.end()) export_seconds_.Observe(it->second);
    }
  }
  if (job.state != JobState::kRunning) ClearRunning(job.id);
}

void DaemonMetrics::OnProgress(const Job& job, const RunnerEvent& e) {
  if (e.phase == Phase::kCalibrate) calib_batches_.Increment();
  if (e.phase == Phase::kScore) score_batches_.Increment();
  std::lock_guard<std::mutex> lock(mu_);
  auto& g = progress_by_job_[job.id];
  if (!g) g = &progress_.Add({{"job_id", job.id}, {"scheme", job.spec.scheme}});
  g->Set(job.progress);
  auto& ph = phase_by_job_[job.id];
  if (!ph.second || ph.first != e.phase) {
    if (ph.second) phase_.Remove(ph.second);
    ph = {e.phase,
          &phase_.Add({{"job_id", job.id}, {"scheme", job.spec.scheme}, {"phase", std::string(PhaseName(e.phase))}})};
    ph.second->Set(1);
  }
}

void DaemonMetrics::OnPhaseDone(const Job& job, Phase phase, double seconds) {
  phase_seconds_.Add({{"phase", std::string(PhaseName(phase))}}, kSecondsBuckets).Observe(seconds);
}

void DaemonMetrics::OnQueueDepth(int64_t queued) { queue_depth_.Set(double(queued)); }

void DaemonMetrics::OnLeaseLost(const Job& job, const absl::Status& why) {
  leases_lost_.Increment();
  ClearRunning(job.id);
  spdlog::warn("job {} ({}): stopped without publishing or recording anything: {}", job.id, job.spec.scheme,
               std::string(why.message()));
}

void DaemonMetrics::OnStoreError(const std::string& what, const absl::Status& why) {
  store_errors_.Increment();
  spdlog::error("job store: {} failed ({}): {}; retrying, health NOT_SERVING until it takes writes again", what,
                absl::StatusCodeToString(why.code()), std::string(why.message()));
}

RequestExecutorObserver* DaemonMetrics::RequestPool(const std::string& pool) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& observer = pools_[pool];
  if (!observer) {
    // At 0 from the start, as finished_ above: an alert on increase() must see the first refusal.
    for (absl::StatusCode code : {absl::StatusCode::kResourceExhausted, absl::StatusCode::kUnavailable}) {
      requests_refused_.Add({{"pool", pool}, {"code", absl::StatusCodeToString(code)}});
    }
    observer = std::make_unique<PoolObserver>(request_queue_depth_.Add({{"pool", pool}}), requests_refused_, pool);
  }
  return observer.get();
}

void DaemonMetrics::PoolObserver::OnRequestQueueDepth(int64_t queued) { depth_.Set(double(queued)); }

void DaemonMetrics::PoolObserver::OnRequestRefused(const absl::Status& why) {
  refused_.Add({{"pool", pool_}, {"code", absl::StatusCodeToString(why.code())}}).Increment();
}

int64_t DaemonMetrics::queued_jobs() const { return static_cast<int64_t>(queue_depth_.Value()); }

void DaemonMetrics::OnStoreRecovered() { spdlog::info("job store: takes writes again; health SERVING"); }

void DaemonMetrics::ClearRunning(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = progress_by_job_.find(job_id); it != progress_by_job_.end()) {
    progress_.Remove(it->second);
    progress_by_job_.erase(it);
  }
  if (auto it = phase_by_job_.find(job_id); it != phase_by_job_.end()) {
    if (it->second.second) phase_.Remove(it->second.second);
    phase_by_job_.erase(it);
  }
}

void DaemonMetrics::CountRpc(const std::string& method, const std::string& code) {
  rpcs_.Add({{"method", method}, {"code", code}}).Increment();
}

void DaemonMetrics::SetDeviceMemory(int64_t allocated, int64_t reserved, int64_t peak, int64_t total) {
  device_memory_.Add({{"kind", "allocated"}}).Set(double(allocated));
  device_memory_.Add({{"kind", "reserved"}}).Set(double(reserved));
  device_peak_.Set(double(peak));
  device_total_.Set(double(total));
}

void DaemonMetrics::SetModelLoadSeconds(double s) { load_seconds_.Set(s); }
void DaemonMetrics::SetServing(bool serving) { serving_.Set(serving ? 1 : 0); }

}  // namespace autoquant

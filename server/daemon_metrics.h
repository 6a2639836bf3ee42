// autoquantd's Prometheus metrics, declared in one registry and changed only
// through JobObserver callbacks (state changes, progress, phases) and the
// few daemon-level setters below, so the gauges follow the job store.
//
//   autoquant_jobs{state}                      jobs per state (gauge)
//   autoquant_jobs_submitted_total             jobs accepted
//   autoquant_jobs_finished_total{state}       jobs that reached a terminal state
//   autoquant_queue_depth                      queued jobs
//   autoquant_job_progress_ratio{job_id,scheme}        per running job, 0..1
//   autoquant_job_phase{job_id,scheme,phase}           1 for the running job's phase
//   autoquant_job_duration_seconds{state}      histogram, claim to terminal
//   autoquant_phase_duration_seconds{phase}    histogram
//   autoquant_calibration_batches_total, autoquant_scoring_batches_total
//   autoquant_export_bytes_total, autoquant_export_seconds (histogram)
//   autoquant_device_memory_bytes{kind=allocated|reserved}, autoquant_device_memory_peak_bytes
//   autoquant_device_memory_total_bytes        the device's memory (0 on the CPU)
//   autoquant_model_load_seconds
//   autoquant_baseline_cache_hits_total, autoquant_baseline_cache_misses_total
//   autoquant_rpcs_total{method,code}
//   autoquant_serving                          1 when SERVING
//   autoquant_scheme_eval{scheme,metric}       a scheme's latest evaluation (docs/evaluation.md)
//   autoquant_leases_lost_total                fleet mode: jobs this daemon was running when another
//                                              took them over (its lease expired); also logged
//   autoquant_store_errors_total               writes the job store failed (full disk, database down); also
//                                              logged, and health is NOT_SERVING until it takes writes again
//   autoquant_request_queue_depth{pool}        RPCs waiting for a request thread (request_executor.h), by
//                                              pool: "writes" (submits, cancels) or "reads" (status, lists,
//                                              logs, reports)
//   autoquant_requests_refused_total{pool,code}  RPCs refused without being run: RESOURCE_EXHAUSTED (the
//                                              pool's queue was full), UNAVAILABLE (shutting down)
//
// In fleet mode autoquant_jobs and autoquant_queue_depth count the whole
// fleet's table (re-read every second), not only this daemon's changes.
//
// Who may scrape them (a bare --metrics port is loopback; off loopback only
// with the token or --insecure; the token on every scrape): metrics_http.h.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/jobs/job_manager.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/request_executor.h"

namespace autoquant {

class DaemonMetrics : public JobObserver {
 public:
  explicit DaemonMetrics(std::shared_ptr<prometheus::Registry> registry);

  void OnSubmitted(const Job& job) override;
  void OnStateChange(const Job& job, JobState from) override;
  void OnProgress(const Job& job, const RunnerEvent& event) override;
  void OnPhaseDone(const Job& job, Phase phase, double seconds) override;
  void OnQueueDepth(int64_t queued) override;
  // Logged as a warning (the job's own log cannot be written any more).
  void OnLeaseLost(const Job& job, const absl::Status& why) override;
  // Counted and logged as an error.
  void OnStoreError(const std::string& what, const absl::Status& why) override;
  void OnStoreRecovered() override;

  // The observer of one request pool ("reads" or "writes"); lives as long as these metrics.
  RequestExecutorObserver* RequestPool(const std::string& pool);

  // Initial per-state counts (from the store at start).
  void SetJobCounts(const std::map<JobState, int64_t>& counts);
  void CountRpc(const std::string& method, const std::string& code);
  void SetDeviceMemory(int64_t allocated, int64_t reserved, int64_t peak, int64_t total);
  void SetModelLoadSeconds(double s);
  void SetServing(bool serving);

  // Queued jobs as last reported (OnQueueDepth: after every change this daemon makes, and in fleet mode
  // the 1 s resync), read from memory: GetServerInfo answers without the store.
  int64_t queued_jobs() const;

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

 private:
  void ClearRunning(const std::string& job_id);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Counter& submitted_;
  prometheus::Family<prometheus::Counter>& finished_;
  prometheus::Gauge& queue_depth_;
  prometheus::Family<prometheus::Gauge>& progress_;
  prometheus::Family<prometheus::Gauge>& phase_;
  prometheus::Family<prometheus::Histogram>& job_seconds_;
  prometheus::Family<prometheus::Histogram>& phase_seconds_;
  prometheus::Counter& calib_batches_;
  prometheus::Counter& score_batches_;
  prometheus::Counter& export_bytes_;
  prometheus::Histogram& export_seconds_;
  prometheus::Family<prometheus::Gauge>& device_memory_;
  prometheus::Gauge& device_peak_;
  prometheus::Gauge& device_total_;
  prometheus::Gauge& load_seconds_;
  prometheus::Counter& cache_hits_;
  prometheus::Counter& cache_misses_;
  prometheus::Family<prometheus::Counter>& rpcs_;
  prometheus::Gauge& serving_;
  prometheus::Family<prometheus::Gauge>& scheme_eval_;
  prometheus::Counter& leases_lost_;
  prometheus::Counter& store_errors_;
  // One request pool's queue depth and refusals, under its label.
  class PoolObserver : public RequestExecutorObserver {
   public:
    PoolObserver(prometheus::Gauge& depth, prometheus::Family<prometheus::Counter>& refused, std::string pool)
        : depth_(depth), refused_(refused), pool_(std::move(pool)) {}
    void OnRequestQueueDepth(int64_t queued) override;
    void OnRequestRefused(const absl::Status& why) override;

   private:
    prometheus::Gauge& depth_;
    prometheus::Family<prometheus::Counter>& refused_;
    const std::string pool_;
  };

  prometheus::Family<prometheus::Gauge>& request_queue_depth_;
  prometheus::Family<prometheus::Counter>& requests_refused_;
  std::map<std::string, std::unique_ptr<PoolObserver>> pools_;  // guarded by mu_

  std::mutex mu_;  // guards the per-running-job series below
  std::map<std::string, prometheus::Gauge*> progress_by_job_;
  std::map<std::string, std::pair<Phase, prometheus::Gauge*>> phase_by_job_;
};

}  // namespace autoquant

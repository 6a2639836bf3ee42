// autoquantd's /metrics as a scrape sees them: the observer callbacks and
// setters are driven directly and every value is read back from the
// registry's Collect(), by family name and exact label set.
#include "server/daemon_metrics.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "prometheus/metric_family.h"

namespace autoquant {
namespace {

using Labels = std::map<std::string, std::string>;

class DaemonMetricsTest : public ::testing::Test {
 protected:
  DaemonMetricsTest() : registry_(std::make_shared<prometheus::Registry>()), metrics_(registry_) {}

  // The series of `family` whose labels are exactly `labels`, and the family's
  // type; nullopt when the scrape has no such series (or no such family).
  std::optional<std::pair<prometheus::MetricType, prometheus::ClientMetric>> Find(const std::string& family,
                                                                                  const Labels& labels) const {
    for (const prometheus::MetricFamily& f : registry_->Collect()) {
      if (f.name != family) continue;
      for (const prometheus::ClientMetric& m : f.metric) {
        Labels got;
        for (const auto& l : m.label) got[l.name] = l.value;
        if (got == labels) return std::make_pair(f.type, m);
      }
    }
    return std::nullopt;
  }
  std::optional<prometheus::ClientMetric> Series(const std::string& family, const Labels& labels = {}) const {
    auto found = Find(family, labels);
    if (!found) return std::nullopt;
    return found->second;
  }
  // A counter's or gauge's value; nullopt when the series is absent.
  std::optional<double> Value(const std::string& family, const Labels& labels = {}) const {
    auto found = Find(family, labels);
    if (!found) return std::nullopt;
    if (found->first == prometheus::MetricType::Counter) return found->second.counter.value;
    if (found->first == prometheus::MetricType::Gauge) return found->second.gauge.value;
    ADD_FAILURE() << family << " is neither a counter nor a gauge";
    return std::nullopt;
  }
  // How many series `family` has.
  size_t SeriesCount(const std::string& family) const {
    for (const prometheus::MetricFamily& f : registry_->Collect()) {
      if (f.name == family) return f.metric.size();
    }
    return 0;
  }

  static RunnerEvent Event(Phase phase, double fraction) {
    RunnerEvent e;
    e.phase = phase;
    e.fraction = fraction;
    return e;
  }

  static Job MakeJob(const std::string& id, const std::string& scheme) {
    Job j;
    j.id = id;
    j.spec.scheme = scheme;
    j.spec.selection.coverage = 0.5;
    return j;
  }

  std::shared_ptr<prometheus::Registry> registry_;
  DaemonMetrics metrics_;
};

// increase() needs a series that existed before its first event: a counter
// born at 1 shows no increase, and the "job failed" alert would miss it.
TEST_F(DaemonMetricsTest, JobGaugesAndFinishedCountersArePresentAtZeroFromTheStart) {
  for (const char* state : {"queued", "running", "succeeded", "failed", "cancelled"}) {
    EXPECT_EQ(Value("autoquant_jobs", {{"state", state}}), 0.0) << state;
  }
  for (const char* state : {"succeeded", "failed", "cancelled"}) {
    EXPECT_EQ(Value("autoquant_jobs_finished_total", {{"state", state}}), 0.0) << state;
  }
  // Only terminal states finish.
  EXPECT_FALSE(Value("autoquant_jobs_finished_total", {{"state", "queued"}}).has_value());
  EXPECT_FALSE(Value("autoquant_jobs_finished_total", {{"state", "running"}}).has_value());
  EXPECT_EQ(SeriesCount("autoquant_jobs_finished_total"), 3u);
  EXPECT_EQ(Value("autoquant_jobs_submitted_total"), 0.0);
  EXPECT_EQ(Value("autoquant_queue_depth"), 0.0);
  EXPECT_EQ(Value("autoquant_device_memory_bytes", {{"kind", "allocated"}}), 0.0);
  EXPECT_EQ(Value("autoquant_device_memory_bytes", {{"kind", "reserved"}}), 0.0);
  EXPECT_EQ(Value("autoquant_serving"), 0.0);
  EXPECT_EQ(Value("autoquant_leases_lost_total"), 0.0);
  EXPECT_EQ(Value("autoquant_store_errors_total"), 0.0);
  // Nothing runs yet: no per-job series.
  EXPECT_EQ(SeriesCount("autoquant_job_progress_ratio"), 0u);
  EXPECT_EQ(SeriesCount("autoquant_job_phase"), 0u);
}

TEST_F(DaemonMetricsTest, SucceededJobMovesTheStateGaugesAndCountsItsResult) {
  Job j = MakeJob("j-1", "top50");
  metrics_.OnSubmitted(j);
  EXPECT_EQ(Value("autoquant_jobs_submitted_total"), 1.0);
  EXPECT_EQ(Value("autoquant_jobs", {{"state", "queued"}}), 1.0);

  j.state = JobState::kRunning;
  j.started_ms = 10000;
  metrics_.OnStateChange(j, JobState::kQueued);
  EXPECT_EQ(Value("autoquant_jobs", {{"state", "queued"}}), 0.0);
  EXPECT_EQ(Value("autoquant_jobs", {{"state", "running"}}), 1.0);
  EXPECT_EQ(Value("autoquant_jobs_finished_total", {{"state", "succeeded"}}), 0.0);

  j.state = JobState::kSucceeded;
  j.finished_ms = 12500;
  JobResultInfo r;
  r.baseline_reused = false;
  r.metrics = {
      {"export_bytes", 4096}, {"export_seconds", 0.3}, {"eval_perplexity_delta", 0.25}, {"baseline_seconds", 9}};
  j.result = r;
  metrics_.OnStateChange(j, JobState::kRunning);
  EXPECT_EQ(Value("autoquant_jobs", {{"state", "running"}}), 0.0);
  EXPECT_EQ(Value("autoquant_jobs", {{"state", "succeeded"}}), 1.0);
  EXPECT_EQ(Value("autoquant_jobs_finished_total", {{"state", "succeeded"}}), 1.0);
  EXPECT_EQ(Value("autoquant_jobs_finished_total", {{"state", "failed"}}), 0.0);
  EXPECT_EQ(Value("autoquant_baseline_cache_misses_total"), 1.0);
  EXPECT_EQ(Value("autoquant_baseline_cache_hits_total"), 0.0);
  EXPECT_EQ(Value("autoquant_export_bytes_total"), 4096.0);

  auto duration = Series("autoquant_job_duration_seconds", {{"state", "succeeded"}});
  ASSERT_TRUE(duration.has_value());
  EXPECT_EQ(duration->histogram.sample_count, 1u);
  EXPECT_DOUBLE_EQ(duration->histogram.sample_sum, 2.5);
  auto export_seconds = Series("autoquant_export_seconds");
  ASSERT_TRUE(export_seconds.has_value());
  EXPECT_EQ(export_seconds->histogram.sample_count, 1u);
  EXPECT_DOUBLE_EQ(export_seconds->histogram.sample_sum, 0.3);

  // Only eval_* metrics become the scheme's evaluation, without the prefix.
  EXPECT_EQ(Value("autoquant_scheme_eval", {{"scheme", "top50"}, {"metric", "perplexity_delta"}}), 0.25);
  EXPECT_EQ(SeriesCount("autoquant_scheme_eval"), 1u);
}

TEST_F(DaemonMetricsTest, ReusedBaselineCountsAHitAndFailureCountsNeither) {
  Job hit = MakeJob("j-hit", "a");
  hit.state = JobState::kSucceeded;
  hit.result = JobResultInfo();
  hit.result->baseline_reused = true;
  metrics_.OnStateChange(hit, JobState::kRunning);
  EXPECT_EQ(Value("autoquant_baseline_cache_hits_total"), 1.0);
  EXPECT_EQ(Value("autoquant_baseline_cache_misses_total"), 0.0);

  Job failed = MakeJob("j-failed", "b");
  failed.state = JobState::kFailed;
  metrics_.OnStateChange(failed, JobState::kRunning);
  EXPECT_EQ(Value("autoquant_jobs_finished_total", {{"state", "failed"}}), 1.0);
  EXPECT_EQ(Value("autoquant_baseline_cache_hits_total"), 1.0);
  EXPECT_EQ(Value("autoquant_baseline_cache_misses_total"), 0.0);
  EXPECT_EQ(Value("autoquant_export_bytes_total"), 0.0);
  // No start time: no duration observed.
  EXPECT_FALSE(Series("autoquant_job_duration_seconds", {{"state", "failed"}}).has_value());

  // A queued job cancelled never ran: counted as finished, no duration.
  Job cancelled = MakeJob("j-c", "c");
  cancelled.state = JobState::kCancelled;
  cancelled.started_ms = 1;
  cancelled.finished_ms = 2;
  metrics_.OnStateChange(cancelled, JobState::kQueued);
  EXPECT_EQ(Value("autoquant_jobs_finished_total", {{"state", "cancelled"}}), 1.0);
  EXPECT_FALSE(Series("autoquant_job_duration_seconds", {{"state", "cancelled"}}).has_value());
}

TEST_F(DaemonMetricsTest, SetJobCountsSetsTheGaugesOutright) {
  metrics_.OnSubmitted(MakeJob("j-1", "a"));
  metrics_.SetJobCounts({{JobState::kQueued, 4}, {JobState::kSucceeded, 11}});
  EXPECT_EQ(Value("autoquant_jobs", {{"state", "queued"}}), 4.0);
  EXPECT_EQ(Value("autoquant_jobs", {{"state", "succeeded"}}), 11.0);
  EXPECT_EQ(Value("autoquant_jobs", {{"state", "running"}}), 0.0);
}

TEST_F(DaemonMetricsTest, RunningJobHasProgressAndOnePhaseSeriesUntilItEnds) {
  Job j = MakeJob("j-7", "top10");
  j.state = JobState::kRunning;
  j.progress = 0.2;
  metrics_.OnProgress(j, Event(Phase::kCalibrate, 0.5));
  metrics_.OnProgress(j, Event(Phase::kCalibrate, 1));
  const Labels job = {{"job_id", "j-7"}, {"scheme", "top10"}};
  EXPECT_EQ(Value("autoquant_job_progress_ratio", job), 0.2);
  EXPECT_EQ(Value("autoquant_job_phase", {{"job_id", "j-7"}, {"scheme", "top10"}, {"phase", "calibrate"}}), 1.0);
  EXPECT_EQ(Value("autoquant_calibration_batches_total"), 2.0);
  EXPECT_EQ(Value("autoquant_scoring_batches_total"), 0.0);

  j.progress = 0.6;
  metrics_.OnProgress(j, Event(Phase::kScore, 0.1));
  EXPECT_EQ(Value("autoquant_job_progress_ratio", job), 0.6);
  EXPECT_EQ(Value("autoquant_job_phase", {{"job_id", "j-7"}, {"scheme", "top10"}, {"phase", "score"}}), 1.0);
  EXPECT_EQ(SeriesCount("autoquant_job_phase"), 1u);  // calibrate's series is gone
  EXPECT_EQ(Value("autoquant_scoring_batches_total"), 1.0);

  j.state = JobState::kSucceeded;
  metrics_.OnStateChange(j, JobState::kRunning);
  EXPECT_EQ(SeriesCount("autoquant_job_progress_ratio"), 0u);
  EXPECT_EQ(SeriesCount("autoquant_job_phase"), 0u);
}

TEST_F(DaemonMetricsTest, LostLeaseCountsAndDropsTheJobsSeries) {
  Job j = MakeJob("j-9", "s");
  j.state = JobState::kRunning;
  metrics_.OnProgress(j, Event(Phase::kExport, 0));
  ASSERT_EQ(SeriesCount("autoquant_job_progress_ratio"), 1u);
  metrics_.OnLeaseLost(j, absl::AbortedError("now held by gpu-node-2"));
  EXPECT_EQ(Value("autoquant_leases_lost_total"), 1.0);
  EXPECT_EQ(SeriesCount("autoquant_job_progress_ratio"), 0u);
  EXPECT_EQ(SeriesCount("autoquant_job_phase"), 0u);
}

TEST_F(DaemonMetricsTest, PhaseDurationsQueueDepthAndStoreErrors) {
  Job j = MakeJob("j-1", "a");
  metrics_.OnPhaseDone(j, Phase::kScore, 1.25);
  metrics_.OnPhaseDone(j, Phase::kScore, 0.75);
  auto score = Series("autoquant_phase_duration_seconds", {{"phase", "score"}});
  ASSERT_TRUE(score.has_value());
  EXPECT_EQ(score->histogram.sample_count, 2u);
  EXPECT_DOUBLE_EQ(score->histogram.sample_sum, 2.0);

  metrics_.OnQueueDepth(5);
  EXPECT_EQ(Value("autoquant_queue_depth"), 5.0);
  EXPECT_EQ(metrics_.queued_jobs(), 5);
  metrics_.OnQueueDepth(0);
  EXPECT_EQ(metrics_.queued_jobs(), 0);

  metrics_.OnStoreError("record the final state", absl::UnavailableError("database down"));
  metrics_.OnStoreError("append a log line", absl::ResourceExhaustedError("disk full"));
  metrics_.OnStoreRecovered();
  EXPECT_EQ(Value("autoquant_store_errors_total"), 2.0);
}

// Both pools' series exist at 0 as soon as the pool is made, so an alert on
// increase() sees the first refusal; each pool counts only its own.
TEST_F(DaemonMetricsTest, RequestPoolsHaveTheirOwnDepthAndRefusalsPresentAtZero) {
  EXPECT_EQ(SeriesCount("autoquant_request_queue_depth"), 0u);
  EXPECT_EQ(SeriesCount("autoquant_requests_refused_total"), 0u);
  RequestExecutorObserver* writes = metrics_.RequestPool("writes");
  RequestExecutorObserver* reads = metrics_.RequestPool("reads");
  ASSERT_NE(writes, nullptr);
  ASSERT_NE(reads, nullptr);
  EXPECT_NE(writes, reads);
  EXPECT_EQ(metrics_.RequestPool("writes"), writes);  // one observer per pool
  for (const char* pool : {"writes", "reads"}) {
    EXPECT_EQ(Value("autoquant_request_queue_depth", {{"pool", pool}}), 0.0) << pool;
    for (const char* code : {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}) {
      EXPECT_EQ(Value("autoquant_requests_refused_total", {{"pool", pool}, {"code", code}}), 0.0)
          << pool << " " << code;
    }
  }
  EXPECT_EQ(SeriesCount("autoquant_request_queue_depth"), 2u);
  EXPECT_EQ(SeriesCount("autoquant_requests_refused_total"), 4u);

  writes->OnRequestQueueDepth(3);
  reads->OnRequestRefused(absl::ResourceExhaustedError("queue full"));
  reads->OnRequestRefused(absl::ResourceExhaustedError("queue full"));
  writes->OnRequestRefused(absl::UnavailableError("shutting down"));
  EXPECT_EQ(Value("autoquant_request_queue_depth", {{"pool", "writes"}}), 3.0);
  EXPECT_EQ(Value("autoquant_request_queue_depth", {{"pool", "reads"}}), 0.0);
  EXPECT_EQ(Value("autoquant_requests_refused_total", {{"pool", "reads"}, {"code", "RESOURCE_EXHAUSTED"}}), 2.0);
  EXPECT_EQ(Value("autoquant_requests_refused_total", {{"pool", "reads"}, {"code", "UNAVAILABLE"}}), 0.0);
  EXPECT_EQ(Value("autoquant_requests_refused_total", {{"pool", "writes"}, {"code", "UNAVAILABLE"}}), 1.0);
  EXPECT_EQ(Value("autoquant_requests_refused_total", {{"pool", "writes"}, {"code", "RESOURCE_EXHAUSTED"}}), 0.0);
}

TEST_F(DaemonMetricsTest, CountRpcKeepsOneSeriesPerMethodAndCode) {
  metrics_.CountRpc("SubmitScheme", "OK");
  metrics_.CountRpc("SubmitScheme", "OK");
  metrics_.CountRpc("SubmitScheme", "INVALID_ARGUMENT");
  metrics_.CountRpc("GetStatus", "NOT_FOUND");
  EXPECT_EQ(Value("autoquant_rpcs_total", {{"method", "SubmitScheme"}, {"code", "OK"}}), 2.0);
  EXPECT_EQ(Value("autoquant_rpcs_total", {{"method", "SubmitScheme"}, {"code", "INVALID_ARGUMENT"}}), 1.0);
  EXPECT_EQ(Value("autoquant_rpcs_total", {{"method", "GetStatus"}, {"code", "NOT_FOUND"}}), 1.0);
  EXPECT_FALSE(Value("autoquant_rpcs_total", {{"method", "GetStatus"}, {"code", "OK"}}).has_value());
  EXPECT_EQ(SeriesCount("autoquant_rpcs_total"), 3u);
}

TEST_F(DaemonMetricsTest, ServingDeviceMemoryAndLoadTime) {
  metrics_.SetServing(true);
  EXPECT_EQ(Value("autoquant_serving"), 1.0);
  metrics_.SetServing(false);
  EXPECT_EQ(Value("autoquant_serving"), 0.0);

  metrics_.SetDeviceMemory(100, 200, 300, 400);
  EXPECT_EQ(Value("autoquant_device_memory_bytes", {{"kind", "allocated"}}), 100.0);
  EXPECT_EQ(Value("autoquant_device_memory_bytes", {{"kind", "reserved"}}), 200.0);
  EXPECT_EQ(Value("autoquant_device_memory_peak_bytes"), 300.0);
  EXPECT_EQ(Value("autoquant_device_memory_total_bytes"), 400.0);

  metrics_.SetModelLoadSeconds(12.5);
  EXPECT_EQ(Value("autoquant_model_load_seconds"), 12.5);
}

}  // namespace
}  // namespace autoquant

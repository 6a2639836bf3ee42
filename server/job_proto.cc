#include "server/job_proto.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"

namespace autoquant {
namespace {

google::protobuf::Timestamp ToTimestamp(int64_t ms) {
  return google::protobuf::util::TimeUtil::MillisecondsToTimestamp(ms);
}

}  // namespace

absl::StatusOr<JobSpec> SpecFromProto(const v1::SchemeSpec& p) {
  JobSpec s;
  s.scheme = p.scheme();
  switch (p.selection_case()) {
    case v1::SchemeSpec::kCoverage:
      if (!std::isfinite(p.coverage()) || p.coverage() <= 0 || p.coverage() > 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("coverage ", p.coverage(),
                         " is not a fraction in (0, 1]: 0.1 quantizes the 10% least-sensitive "
                         "groups, 1 quantizes all of them"));
      }
      s.coverage = p.coverage();
      break;
    case v1::SchemeSpec::kCoverageManifest: {
      const auto& m = p.coverage_manifest();
      s.has_manifest = true;
      s.manifest_selected.assign(m.selected_layers().begin(), m.selected_layers().end());
      s.manifest_dropped.assign(m.dropped_layers().begin(), m.dropped_layers().end());
      s.manifest_disabled.assign(m.disabled_layers().begin(), m.disabled_layers().end());
      break;
    }
    case v1::SchemeSpec::SELECTION_NOT_SET:
      break;
  }
  s.disabled_layers.assign(p.disabled_layers().begin(), p.disabled_layers().end());
  if (p.has_effective_bits()) {
    if (!std::isfinite(p.effective_bits())) {
      return absl::InvalidArgumentError("effective_bits must be a number in (0, 16): 16 bits is the base model itself");
    }
    s.effective_bits = p.effective_bits();
  }
  switch (p.method()) {
    case v1::SCORE_METHOD_UNSPECIFIED:
    case v1::SCORE_METHOD_GRADIENT:
      s.method = "gradient";
      break;
    case v1::SCORE_METHOD_KL_DIV:
      s.method = "kl_div";
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown score method ", p.method()));
  }
  switch (p.format()) {
    case v1::EXPORT_FORMAT_UNSPECIFIED:
    case v1::EXPORT_FORMAT_COMPRESSED_TENSORS:
      s.format = "compressed-tensors";
      break;
    case v1::EXPORT_FORMAT_MODELOPT:
      s.format = "modelopt";
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown export format ", p.format()));
  }
  switch (p.layout()) {
    case v1::OUTPUT_LAYOUT_UNSPECIFIED:
      s.layout = "";
      break;
    case v1::OUTPUT_LAYOUT_SHARED:
      s.layout = "shared";
      break;
    case v1::OUTPUT_LAYOUT_STANDALONE:
      s.layout = "standalone";
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown output layout ", p.layout()));
  }
  s.evaluate = p.evaluate();
  s.overwrite = p.overwrite();
  s.include_vision = p.include_vision();
  s.calib_steps = p.calib_steps();
  s.batch_size = p.batch_size();
  s.score_steps = p.score_steps();
  s.priority = p.priority();
  return s;
}

void SpecToProto(const JobSpec& s, v1::SchemeSpec* p) {
  p->set_scheme(s.scheme);
  if (s.coverage) p->set_coverage(*s.coverage);
  if (s.has_manifest) {
    auto* m = p->mutable_coverage_manifest();
    for (const auto& k : s.manifest_selected) m->add_selected_layers(k);
    for (const auto& k : s.manifest_dropped) m->add_dropped_layers(k);
    for (const auto& k : s.manifest_disabled) m->add_disabled_layers(k);
  }
  for (const auto& d : s.disabled_layers) p->add_disabled_layers(d);
  if (s.effective_bits) p->set_effective_bits(*s.effective_bits);
  p->set_method(s.method == "kl_div" ? v1::SCORE_METHOD_KL_DIV : v1::SCORE_METHOD_GRADIENT);
  p->set_format(s.format == "modelopt" ? v1::EXPORT_FORMAT_MODELOPT : v1::EXPORT_FORMAT_COMPRESSED_TENSORS);
  if (s.layout == "shared") p->set_layout(v1::OUTPUT_LAYOUT_SHARED);
  if (s.layout == "standalone") p->set_layout(v1::OUTPUT_LAYOUT_STANDALONE);
  p->set_overwrite(s.overwrite);
  p->set_include_vision(s.include_vision);
  p->set_calib_steps(s.calib_steps);
  p->set_batch_size(s.batch_size);
  p->set_score_steps(s.score_steps);
  p->set_priority(s.priority);
  p->set_evaluate(s.evaluate);
}

v1::Phase PhaseToProto(const std::string& phase) {
  if (phase == "calibrate") return v1::PHASE_CALIBRATE;
  if (phase == "score") return v1::PHASE_SCORE;
  if (phase == "search") return v1::PHASE_SEARCH;
  if (phase == "export") return v1::PHASE_EXPORT;
  if (phase == "evaluate") return v1::PHASE_EVALUATE;
  if (phase == "load") return v1::PHASE_LOAD;
  return v1::PHASE_UNSPECIFIED;
}

v1::JobState StateToProto(JobState s) {
  switch (s) {
    case JobState::kQueued:
      return v1::JOB_STATE_QUEUED;
    case JobState::kRunning:
      return v1::JOB_STATE_RUNNING;
    case JobState::kSucceeded:
      return v1::JOB_STATE_SUCCEEDED;
    case JobState::kFailed:
      return v1::JOB_STATE_FAILED;
    case JobState::kCancelled:
      return v1::JOB_STATE_CANCELLED;
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

absl::StatusOr<JobState> StateFromProto(v1::JobState s) {
  switch (s) {
    case v1::JOB_STATE_QUEUED:
      return JobState::kQueued;
    case v1::JOB_STATE_RUNNING:
      return JobState::kRunning;
    case v1::JOB_STATE_SUCCEEDED:
      return JobState::kSucceeded;
    case v1::JOB_STATE_FAILED:
      return JobState::kFailed;
    case v1::JOB_STATE_CANCELLED:
      return JobState::kCancelled;
    default:
      return absl::InvalidArgumentError(absl::StrCat("states: ", s, " is not a job state to filter by"));
  }
}

void JobToProto(const Job& j, int queue_position, v1::Job* p) {
  p->set_id(j.id);
  p->set_scheme(j.spec.scheme);
  p->set_state(StateToProto(j.state));
  p->set_phase(PhaseToProto(j.phase));
  p->set_progress(j.progress);
  p->set_message(j.message);
  // A time not reached yet (0) stays unset: a queued job has no started_at, not one of 1970.
  if (j.created_ms > 0) *p->mutable_created_at() = ToTimestamp(j.created_ms);
  if (j.started_ms > 0) *p->mutable_started_at() = ToTimestamp(j.started_ms);
  if (j.finished_ms > 0) *p->mutable_finished_at() = ToTimestamp(j.finished_ms);
  if (j.result) {
    auto* r = p->mutable_result();
    r->set_output_dir(j.result->output_dir);
    r->set_effective_bits(j.result->effective_bits);
    r->set_groups_quantized(j.result->groups_quantized);
    r->set_groups_total(j.result->groups_total);
    r->set_baseline_key(j.result->baseline_key);
    for (const auto& [k, v] : j.result->metrics) (*r->mutable_metrics())[k] = v;
    p->set_baseline_reused(j.result->baseline_reused);
  }
  p->set_queue_position(queue_position);
  SpecToProto(j.spec, p->mutable_spec());
  p->set_idempotency_key(j.idempotency_key);
  p->set_sweep_id(j.sweep_id);
  p->set_attempts(j.attempts);
  p->set_daemon_id(j.owner);
  p->set_kind(j.spec.kind == kJobKindEvaluate ? v1::JOB_KIND_EVALUATE : v1::JOB_KIND_SCHEME);
}

void LogToProto(const LogEntry& e, v1::LogLine* p) {
  p->set_sequence(e.sequence);
  if (e.time_ms > 0) *p->mutable_time() = ToTimestamp(e.time_ms);
  p->set_level(e.level);
  p->set_message(e.message);
  if (e.state) p->set_state(StateToProto(*e.state));
  p->set_phase(PhaseToProto(e.phase));
  p->set_progress(e.progress);
}

}  // namespace autoquant

#include "server/job_proto.h"

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"
#include "google/protobuf/util/time_util.h"

namespace autoquant {
namespace {

google::protobuf::Timestamp ToTimestamp(int64_t ms) {
  return google::protobuf::util::TimeUtil::MillisecondsToTimestamp(ms);
}

}  // namespace

absl::StatusOr<ScoreMethod> MethodFromProto(int m) {
  switch (m) {
    case v1::SCORE_METHOD_UNSPECIFIED:
    case v1::SCORE_METHOD_GRADIENT:
      return ScoreMethod::kGradient;
    case v1::SCORE_METHOD_KL_DIV:
      return ScoreMethod::kKlDiv;
    default:
      return absl::InvalidArgumentError(absl::StrCat("method: unknown score method ", m));
  }
}

v1::ScoreMethod MethodToProto(ScoreMethod m) {
  return m == ScoreMethod::kKlDiv ? v1::SCORE_METHOD_KL_DIV : v1::SCORE_METHOD_GRADIENT;
}

absl::StatusOr<Format> FormatFromProto(int f) {
  switch (f) {
    case v1::QUANT_FORMAT_FP8:
      return Format::kFp8;
    case v1::QUANT_FORMAT_NVFP4:
      return Format::kNvfp4;
    case v1::QUANT_FORMAT_NVFP4_W4A16:
      return Format::kNvfp4W4A16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("formats: unknown quantization format ", f, " (QUANT_FORMAT_FP8, _NVFP4 or _NVFP4_W4A16)"));
  }
}

v1::QuantFormat FormatToProto(Format f) {
  switch (f) {
    case Format::kNvfp4:
      return v1::QUANT_FORMAT_NVFP4;
    case Format::kNvfp4W4A16:
      return v1::QUANT_FORMAT_NVFP4_W4A16;
    case Format::kFp8:
      return v1::QUANT_FORMAT_FP8;
    case Format::kNone:
      break;
  }
  return v1::QUANT_FORMAT_UNSPECIFIED;
}

absl::StatusOr<std::vector<Format>> FormatsFromProto(const google::protobuf::RepeatedField<int>& formats) {
  std::vector<Format> out;
  for (int f : formats) {
    ASSIGN_OR_RETURN(Format format, FormatFromProto(f));
    out.push_back(format);
  }
  return out;
}

absl::StatusOr<JobSpec> SpecFromProto(const v1::SchemeSpec& p) {
  JobSpec s;
  s.scheme = p.scheme();
  SchemeSelection& sel = s.selection;
  switch (p.selection_case()) {
    case v1::SchemeSpec::kCoverage:
      sel.coverage = p.coverage();
      break;
    case v1::SchemeSpec::kCoverageManifest: {
      const auto& m = p.coverage_manifest();
      sel.coverage_manifest = CoverageManifest{
          .selected_layers = {m.selected_layers().begin(), m.selected_layers().end()},
          .dropped_layers = {m.dropped_layers().begin(), m.dropped_layers().end()},
          .disabled_layers = {m.disabled_layers().begin(), m.disabled_layers().end()},
      };
      break;
    }
    case v1::SchemeSpec::SELECTION_NOT_SET:
      break;
  }
  sel.disabled_layers.assign(p.disabled_layers().begin(), p.disabled_layers().end());
  if (p.has_effective_bits()) sel.effective_bits = p.effective_bits();
  ASSIGN_OR_RETURN(s.method, MethodFromProto(p.method()));
  switch (p.format()) {
    case v1::EXPORT_FORMAT_UNSPECIFIED:
    case v1::EXPORT_FORMAT_COMPRESSED_TENSORS:
      s.format = ExportFormat::kCompressedTensors;
      break;
    case v1::EXPORT_FORMAT_MODELOPT:
      s.format = ExportFormat::kModelOpt;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("format: unknown export format ", p.format()));
  }
  switch (p.layout()) {
    case v1::OUTPUT_LAYOUT_UNSPECIFIED:
      break;
    case v1::OUTPUT_LAYOUT_SHARED:
      s.layout = ExportLayout::kShared;
      break;
    case v1::OUTPUT_LAYOUT_STANDALONE:
      s.layout = ExportLayout::kStandalone;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("layout: unknown output layout ", p.layout()));
  }
  s.evaluate = p.evaluate();
  s.overwrite = p.overwrite();
  s.include_vision = p.include_vision();
  s.calib_steps = p.calib_steps();
  s.batch_size = p.batch_size();
  s.score_steps = p.score_steps();
  s.priority = p.priority();
  ASSIGN_OR_RETURN(s.formats, FormatsFromProto(p.formats()));
  return s;
}

void SpecToProto(const JobSpec& s, v1::SchemeSpec* p) {
  p->set_scheme(s.scheme);
  const SchemeSelection& sel = s.selection;
  if (sel.coverage) p->set_coverage(*sel.coverage);
  if (sel.coverage_manifest) {
    auto* m = p->mutable_coverage_manifest();
    for (const auto& k : sel.coverage_manifest->selected_layers) m->add_selected_layers(k);
    for (const auto& k : sel.coverage_manifest->dropped_layers) m->add_dropped_layers(k);
    for (const auto& k : sel.coverage_manifest->disabled_layers) m->add_disabled_layers(k);
  }
  for (const auto& d : sel.disabled_layers) p->add_disabled_layers(d);
  if (sel.effective_bits) p->set_effective_bits(*sel.effective_bits);
  p->set_method(MethodToProto(s.method));
  p->set_format(s.format == ExportFormat::kModelOpt ? v1::EXPORT_FORMAT_MODELOPT
                                                    : v1::EXPORT_FORMAT_COMPRESSED_TENSORS);
  if (s.layout) {
    p->set_layout(*s.layout == ExportLayout::kShared ? v1::OUTPUT_LAYOUT_SHARED : v1::OUTPUT_LAYOUT_STANDALONE);
  }
  p->set_overwrite(s.overwrite);
  p->set_include_vision(s.include_vision);
  p->set_calib_steps(s.calib_steps);
  p->set_batch_size(s.batch_size);
  p->set_score_steps(s.score_steps);
  p->set_priority(s.priority);
  p->set_evaluate(s.evaluate);
  for (Format f : s.formats) p->add_formats(FormatToProto(f));
}

v1::Phase PhaseToProto(std::optional<Phase> phase) {
  if (!phase) return v1::PHASE_UNSPECIFIED;
  switch (*phase) {
    case Phase::kLoad:
      return v1::PHASE_LOAD;
    case Phase::kCalibrate:
      return v1::PHASE_CALIBRATE;
    case Phase::kScore:
      return v1::PHASE_SCORE;
    case Phase::kSearch:
      return v1::PHASE_SEARCH;
    case Phase::kExport:
      return v1::PHASE_EXPORT;
    case Phase::kEvaluate:
      return v1::PHASE_EVALUATE;
  }
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
  p->set_kind(j.spec.kind == JobKind::kEvaluate ? v1::JOB_KIND_EVALUATE : v1::JOB_KIND_SCHEME);
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

#include "core/jobs/engine_job_runner.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "core/quant/scheme_name.h"
#include "core/scheme/integrity.h"
#include "core/scheme/manifests.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace fs = std::filesystem;

EngineJobRunner::EngineJobRunner(Engine* engine, fs::path models_root, Evaluator* evaluator,
                                 ExportLayout default_layout, BlobRecords* blob_records)
    : engine_(engine),
      root_(std::move(models_root)),
      evaluator_(evaluator),
      default_layout_(default_layout),
      blob_records_(blob_records) {}

namespace {

absl::Status NeedEvaluator(const Evaluator* evaluator) {
  if (evaluator != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "this daemon has no evaluation set: start autoquantd with --eval-set FILE (held-out samples in the "
      "calibration format, e.g. from `autoquant calib synth --seed N` or autoquant-calib) to evaluate schemes");
}

}  // namespace

absl::StatusOr<SchemeRequest> EngineJobRunner::ToRequest(const JobSpec& spec) const {
  RETURN_IF_ERROR(ValidateSchemeName(spec.scheme));
  SchemeRequest r;
  static_cast<SchemeSpec&>(r) = spec;
  if (!r.layout) r.layout = default_layout_;
  r.out_dir = root_ / spec.scheme;
  struct stat st;
  if (::lstat(r.out_dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        r.out_dir.string(), " is a symbolic link; the daemon writes only real directories under the models root ",
        root_.string(), " (choose another scheme name or remove the link)"));
  }
  r.blob_store = root_;
  r.blob_store_below = ".autoquant/blobs";
  r.blob_records = blob_records_;
  return r;
}

absl::Status EngineJobRunner::Validate(const JobSpec& spec) {
  if (spec.kind == JobKind::kEvaluate) {
    RETURN_IF_ERROR(NeedEvaluator(evaluator_));
    ASSIGN_OR_RETURN(fs::path dir, ExistingSchemeDir(root_, spec.scheme));
    return evaluator_->Validate(dir);
  }
  if (spec.evaluate) RETURN_IF_ERROR(NeedEvaluator(evaluator_));
  ASSIGN_OR_RETURN(SchemeRequest r, ToRequest(spec));
  return engine_->ValidateScheme(r);
}

namespace {

// A scheme job cut off between publishing its directory and recording SUCCEEDED (kill -9, a lost
// lease) finds, on its next attempt, a complete scheme whose manifest names this very job. Such a
// directory is the job's own result: it is verified and kept rather than written a second time
// (or refused as "already exists"). Returns nullopt when there is nothing of this job's to adopt;
// a directory of this job whose digests do not verify is replaced (`*replace` set).
std::optional<SchemeManifest> PublishedByThisJob(const fs::path& dir, const std::string& job_id, bool* replace) {
  *replace = false;
  struct stat st;
  if (job_id.empty() || ::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return std::nullopt;
  auto m = ReadSchemeManifest(dir);
  if (!m.ok() || m->job_id != job_id) return std::nullopt;
  if (!VerifySchemeIntegrity(dir).ok()) {
    *replace = true;
    return std::nullopt;
  }
  return *std::move(m);
}

}  // namespace

std::string EngineJobRunner::Affinity() const {
  return absl::StrCat(engine_->model_fingerprint(), ":", engine_->calib_fingerprint());
}

absl::StatusOr<JobResultInfo> EngineJobRunner::Run(const Job& job, const RunnerEventFn& on_event,
                                                   const std::atomic<bool>* cancel, const PublishGate& publish_gate) {
  const JobSpec& spec = job.spec;
  ProgressFn progress = [&](const ProgressEvent& e) {
    if (!on_event) return;
    RunnerEvent ev;
    ev.phase = e.phase;
    ev.fraction = e.fraction;
    ev.message = e.message;
    ev.warning = e.warning;
    on_event(ev);
  };
  if (spec.kind == JobKind::kEvaluate) {
    RETURN_IF_ERROR(NeedEvaluator(evaluator_));
    ASSIGN_OR_RETURN(fs::path dir, ExistingSchemeDir(root_, spec.scheme));
    ASSIGN_OR_RETURN(EvalSummary e, evaluator_->Evaluate(dir, progress, cancel));
    JobResultInfo out;
    out.output_dir = dir.string();
    out.metrics = e.AsMetrics();
    return out;
  }
  ASSIGN_OR_RETURN(SchemeRequest r, ToRequest(spec));
  r.job_id = job.id;
  r.publish_gate = publish_gate;
  if (job.attempts > 1) {
    // A re-attempt: the attempt that was cut off (here or, in a fleet, on a daemon that died) may have
    // left a staging directory. The daemon removes dead processes' leftovers at start, but a fleet's
    // survivor does not restart, so it looks again when it takes the job over.
    auto removed = RemoveStaleStaging(root_);
    if (removed.ok() && *removed > 0) {
      progress({Phase::kLoad, 0,
                absl::StrCat("removed ", *removed, " staging leftovers of dead processes under ", root_.string())});
    }
  }
  if (spec.evaluate) RETURN_IF_ERROR(NeedEvaluator(evaluator_));
  SchemeResult s;
  bool replace = false;
  if (auto adopted = PublishedByThisJob(r.out_dir, job.id, &replace)) {
    progress({Phase::kExport, 1.0,
              absl::StrCat("kept ", r.out_dir.string(),
                           ": an earlier attempt of this job published it before it was "
                           "cut off; its tensor digests verify")});
    s.out_dir = r.out_dir;
    s.effective_bits = adopted->effective_bits;
    s.groups_quantized = static_cast<size_t>(adopted->num_quantized);
    s.groups_total = static_cast<size_t>(adopted->num_groups);
    s.baseline_key = adopted->baseline_key;
    s.baseline_reused = true;
  } else {
    if (replace) {
      progress({Phase::kLoad, 0,
                absl::StrCat(r.out_dir.string(),
                             " was published by an earlier attempt of this job but its digests "
                             "do not verify: writing it again"),
                /*warning=*/true});
      r.overwrite = true;
    }
    ASSIGN_OR_RETURN(s, engine_->RunScheme(r, progress, cancel));
  }
  JobResultInfo out;
  out.output_dir = s.out_dir.string();
  out.effective_bits = s.effective_bits;
  out.groups_quantized = static_cast<int>(s.groups_quantized);
  out.groups_total = static_cast<int>(s.groups_total);
  out.baseline_reused = s.baseline_reused;
  out.baseline_key = s.baseline_key;
  out.metrics = s.ToMetrics();
  if (spec.evaluate) {
    auto e = evaluator_->Evaluate(s.out_dir, progress, cancel);
    if (!e.ok()) {
      return absl::Status(e.status().code(),
                          absl::StrCat("the scheme was written to ", s.out_dir.string(),
                                       " and verified, but its evaluation failed: ", e.status().message(),
                                       " (retry with `autoquant eval ", spec.scheme, "`)"));
    }
    for (const auto& [k, v] : e->AsMetrics()) out.metrics[k] = v;
  }
  return out;
}

}  // namespace autoquant

#include "server/autoquant_service.h"

#include <deque>
#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/eval/report.h"
#include "core/jobs/engine_job_runner.h"
#include "core/util/build_info.h"
#include "core/util/status_macros.h"
#include "server/grpc_status.h"
#include "server/job_proto.h"

namespace autoquant {
namespace {

constexpr int kMaxPageSize = 1000;
constexpr int kDefaultPageSize = 100;
constexpr size_t kMaxKeyLength = 128;
constexpr int kMaxSweepPoints = 1000;

// Finishes a unary call once, counting it.
grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* ctx, DaemonContext* d, const char* method,
                                const absl::Status& s) {
  d->metrics->CountRpc(method, absl::StatusCodeToString(s.code()));
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

absl::Status CheckKey(const std::string& key) {
  if (key.size() > kMaxKeyLength) {
    return absl::InvalidArgumentError(absl::StrCat("idempotency_key is ", key.size(), " characters; at most ",
                                                   kMaxKeyLength, " are accepted"));
  }
  return absl::OkStatus();
}

absl::Status FillJob(DaemonContext* d, const Job& j, v1::Job* out) {
  ASSIGN_OR_RETURN(int pos, d->jobs->QueuePosition(j.id));
  JobToProto(j, pos, out);
  return absl::OkStatus();
}

// Streams a job's log lines after a sequence number; with follow, waits
// (without blocking a thread) for new lines until the job's terminal line.
class LogStream : public grpc::ServerWriteReactor<v1::LogLine> {
 public:
  LogStream(DaemonContext* d, std::string job_id, int64_t after, bool follow)
      : d_(d), job_id_(std::move(job_id)), last_(after), follow_(follow), guard_(std::make_shared<Guard>()) {
    guard_->owner = this;
  }

  void Start() {
    if (follow_) {
      auto guard = guard_;
      subscription_ = d_->jobs->Subscribe(job_id_, [guard] {
        std::lock_guard<std::mutex> lock(guard->mu);
        if (guard->owner) guard->owner->Pump();
      });
    }
    Pump();
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) return FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      if (sent_terminal_) return FinishLocked(grpc::Status::OK);
    }
    Pump();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!writing_) FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
  }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(guard_->mu);
      guard_->owner = nullptr;
    }
    subscription_.reset();
    delete this;
  }

  // Sends the next stored line if no write is in flight; finishes when done.
  void Pump() {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || writing_) return;
    if (pending_.empty()) {
      auto lines = d_->jobs->ReadLogs(job_id_, last_, 256);
      if (!lines.ok()) return FinishLocked(ToGrpcStatus(lines.status()));
      pending_.assign(lines->begin(), lines->end());
    }
    if (!pending_.empty()) return SendNextLocked();
    if (!follow_) return FinishLocked(grpc::Status::OK);
    // Nothing new: a finished job whose terminal line was already sent (before after_sequence) ends here.
    auto job = d_->jobs->Get(job_id_);
    if (!job.ok()) return FinishLocked(ToGrpcStatus(job.status()));
    if (IsTerminal(job->state)) {
      auto again = d_->jobs->ReadLogs(job_id_, last_, 256);
      if (!again.ok()) return FinishLocked(ToGrpcStatus(again.status()));
      if (again->empty()) return FinishLocked(grpc::Status::OK);
      // The terminal line landed between the two reads: send it now, no notification will follow.
      pending_.assign(again->begin(), again->end());
      SendNextLocked();
    }
  }

 private:
  struct Guard {
    std::mutex mu;
    LogStream* owner = nullptr;
  };

  void SendNextLocked() {
    LogEntry e = std::move(pending_.front());
    pending_.pop_front();
    last_ = e.sequence;
    sent_terminal_ = e.state.has_value();
    line_.Clear();
    LogToProto(e, &line_);
    writing_ = true;
    StartWrite(&line_);
  }

  void FinishLocked(const grpc::Status& s) {
    if (finished_) return;
    finished_ = true;
    d_->metrics->CountRpc("StreamLogs", absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code())));
    Finish(s);
  }

  DaemonContext* d_;
  std::string job_id_;
  std::mutex mu_;
  int64_t last_;
  bool follow_;
  bool writing_ = false;
  bool finished_ = false;
  bool sent_terminal_ = false;
  std::deque<LogEntry> pending_;
  v1::LogLine line_;
  std::shared_ptr<Guard> guard_;
  std::shared_ptr<void> subscription_;
};

}  // namespace

grpc::ServerUnaryReactor* AutoQuantService::SubmitScheme(grpc::CallbackServerContext* ctx,
                                                         const v1::SubmitSchemeRequest* req, v1::Job* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(d_->auth->Check(*ctx));
    RETURN_IF_ERROR(CheckKey(req->idempotency_key()));
    ASSIGN_OR_RETURN(JobSpec spec, SpecFromProto(req->spec()));
    ASSIGN_OR_RETURN(Job job, d_->jobs->Submit(spec, req->idempotency_key()));
    return FillJob(d_, job, resp);
  }();
  return Reply(ctx, d_, "SubmitScheme", s);
}

grpc::ServerUnaryReactor* AutoQuantService::SubmitSweep(grpc::CallbackServerContext* ctx,
                                                        const v1::SubmitSweepRequest* req,
                                                        v1::SubmitSweepResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(d_->auth->Check(*ctx));
    RETURN_IF_ERROR(CheckKey(req->idempotency_key()));
    if (req->points_size() == 0) return absl::InvalidArgumentError("points: a sweep needs at least one point");
    if (req->points_size() > kMaxSweepPoints) {
      return absl::InvalidArgumentError(absl::StrCat("points: ", req->points_size(), " points; at most ",
                                                     kMaxSweepPoints, " per sweep"));
    }
    std::vector<JobSpec> specs;
    for (int i = 0; i < req->points_size(); ++i) {
      auto spec = SpecFromProto(req->points(i));
      if (!spec.ok()) {
        return absl::Status(spec.status().code(), absl::StrCat("point ", i, " (scheme '", req->points(i).scheme(),
                                                               "'): ", spec.status().message()));
      }
      specs.push_back(std::move(*spec));
    }
    ASSIGN_OR_RETURN(auto sweep, d_->jobs->SubmitSweep(specs, req->idempotency_key()));
    resp->set_sweep_id(sweep.first);
    for (const Job& j : sweep.second) RETURN_IF_ERROR(FillJob(d_, j, resp->add_jobs()));
    return absl::OkStatus();
  }();
  return Reply(ctx, d_, "SubmitSweep", s);
}

grpc::ServerUnaryReactor* AutoQuantService::EvaluateScheme(grpc::CallbackServerContext* ctx,
                                                           const v1::EvaluateSchemeRequest* req, v1::Job* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(d_->auth->Check(*ctx));
    RETURN_IF_ERROR(CheckKey(req->idempotency_key()));
    JobSpec spec;
    spec.kind = kJobKindEvaluate;
    spec.scheme = req->scheme();
    spec.priority = req->priority();
    ASSIGN_OR_RETURN(Job job, d_->jobs->Submit(spec, req->idempotency_key()));
    return FillJob(d_, job, resp);
  }();
  return Reply(ctx, d_, "EvaluateScheme", s);
}

grpc::ServerUnaryReactor* AutoQuantService::GetReport(grpc::CallbackServerContext* ctx,
                                                      const v1::GetReportRequest* req, v1::Report* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(d_->auth->Check(*ctx));
    if (req->job_ids_size() + req->schemes_size() == 0) {
      return absl::InvalidArgumentError("a report needs job_ids or schemes (evaluated schemes under the models root)");
    }
    std::vector<ReportPoint> points;
    auto add = [&](const std::filesystem::path& dir) -> absl::Status {
      auto p = ReadReportPoint(dir);
      if (!p.ok()) return p.status();
      points.push_back(*std::move(p));
      return absl::OkStatus();
    };
    for (const auto& id : req->job_ids()) {
      ASSIGN_OR_RETURN(Job job, d_->jobs->Get(id));
      if (job.state != JobState::kSucceeded || !job.result || job.result->output_dir.empty()) {
        return absl::FailedPreconditionError(absl::StrCat("job ", id, " (scheme ", job.spec.scheme, ") is ",
                                                          JobStateName(job.state),
                                                          "; a report needs succeeded, evaluated jobs"));
      }
      RETURN_IF_ERROR(add(job.result->output_dir));
    }
    for (const auto& scheme : req->schemes()) {
      ASSIGN_OR_RETURN(std::filesystem::path dir, ExistingSchemeDir(d_->models_root, scheme));
      RETURN_IF_ERROR(add(dir));
    }
    ReportOptions options;
    options.allow_mixed_inputs = req->allow_mixed();
    ASSIGN_OR_RETURN(nlohmann::ordered_json report, BuildReport(std::move(points), options));
    resp->set_report_json(report.dump(2));
    resp->set_report_markdown(ReportMarkdown(report));
    for (const auto& line : ReportFindingLines(report)) resp->add_findings(line);
    return absl::OkStatus();
  }();
  return Reply(ctx, d_, "GetReport", s);
}

grpc::ServerUnaryReactor* AutoQuantService::GetStatus(grpc::CallbackServerContext* ctx,
                                                      const v1::GetStatusRequest* req, v1::Job* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(d_->auth->Check(*ctx));
    if (req->job_id().empty()) return absl::InvalidArgumentError("job_id is required");
    ASSIGN_OR_RETURN(Job job, d_->jobs->Get(req->job_id()));
    return FillJob(d_, job, resp);
  }();
  return Reply(ctx, d_, "GetStatus", s);
}

grpc::ServerUnaryReactor* AutoQuantService::ListJobs(grpc::CallbackServerContext* ctx,
                                                     const v1::ListJobsRequest* req, v1::ListJobsResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(d_->auth->Check(*ctx));
    JobListFilter f;
    if (req->page_size() < 0 || req->page_size() > kMaxPageSize) {
      return absl::InvalidArgumentError(
          absl::StrCat("page_size ", req->page_size(), " is outside 0..", kMaxPageSize, " (0 = ", kDefaultPageSize,
                       ")"));
    }
    f.page_size = req->page_size() == 0 ? kDefaultPageSize : req->page_size();
    if (!req->page_token().empty() && (!absl::SimpleAtoi(req->page_token(), &f.after_seq) || f.after_seq <= 0)) {
      return absl::InvalidArgumentError("page_token is not one this server returned; start without a page_token");
    }
    for (int st : req->states()) {
      ASSIGN_OR_RETURN(JobState state, StateFromProto(static_cast<v1::JobState>(st)));
      f.states.push_back(state);
    }
    ASSIGN_OR_RETURN(JobPage page, d_->jobs->List(f));
    for (const Job& j : page.jobs) RETURN_IF_ERROR(FillJob(d_, j, resp->add_jobs()));
    if (page.next_after_seq > 0) resp->set_next_page_token(absl::StrCat(page.next_after_seq));
    return absl::OkStatus();
  }();
  return Reply(ctx, d_, "ListJobs", s);
}

grpc::ServerUnaryReactor* AutoQuantService::CancelJob(grpc::CallbackServerContext* ctx,
                                                      const v1::CancelJobRequest* req, v1::Job* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(d_->auth->Check(*ctx));
    if (req->job_id().empty()) return absl::InvalidArgumentError("job_id is required");
    ASSIGN_OR_RETURN(Job job, d_->jobs->Cancel(req->job_id()));
    return FillJob(d_, job, resp);
  }();
  return Reply(ctx, d_, "CancelJob", s);
}

grpc::ServerWriteReactor<v1::LogLine>* AutoQuantService::StreamLogs(grpc::CallbackServerContext* ctx,
                                                                    const v1::StreamLogsRequest* req) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(d_->auth->Check(*ctx));
    if (req->job_id().empty()) return absl::InvalidArgumentError("job_id is required");
    if (req->after_sequence() < 0) return absl::InvalidArgumentError("after_sequence must be >= 0");
    return d_->jobs->Get(req->job_id()).status();
  }();
  if (!s.ok()) {
    // A reactor that only reports the error.
    class Failed : public grpc::ServerWriteReactor<v1::LogLine> {
     public:
      explicit Failed(const grpc::Status& s) { Finish(s); }
      void OnDone() override { delete this; }
    };
    d_->metrics->CountRpc("StreamLogs", absl::StatusCodeToString(s.code()));
    return new Failed(ToGrpcStatus(s));
  }
  auto* stream = new LogStream(d_, req->job_id(), req->after_sequence(), req->follow());
  stream->Start();
  return stream;
}

grpc::ServerUnaryReactor* AutoQuantService::GetSensitivity(grpc::CallbackServerContext* ctx,
                                                           const v1::GetSensitivityRequest* req,
                                                           v1::Sensitivity* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(d_->auth->Check(*ctx));
    const EngineFacts* engine = d_->engine.load();
    if (!engine) return absl::UnavailableError("the model is still loading; retry when health is SERVING");
    ScoreMethod method = req->method() == v1::SCORE_METHOD_KL_DIV ? ScoreMethod::kKlDiv : ScoreMethod::kGradient;
    if (req->calib_steps() < 0 || req->score_steps() < 0) {
      return absl::InvalidArgumentError("calib_steps and score_steps must be >= 0");
    }
    ASSIGN_OR_RETURN(Baseline b, engine->cached_baseline(method, req->calib_steps(), req->score_steps(),
                                                         req->include_vision()));
    resp->set_baseline_key(b.key);
    std::vector<int> rank(b.groups.size());
    for (size_t r = 0; r < b.ranking.size(); ++r) rank[b.ranking[r]] = static_cast<int>(r);
    for (size_t g = 0; g < b.groups.size(); ++g) {
      auto* out = resp->add_groups();
      out->set_key(b.groups[g].key);
      for (const auto& m : b.groups[g].modules) out->add_modules(m);
      for (size_t f = 0; f < b.formats.size(); ++f) {
        (*out->mutable_scores())[b.formats[f].name] = b.scores[g][f];
        (*out->mutable_costs())[b.formats[f].name] = b.costs[g][f];
      }
      out->set_rank(rank[g]);
    }
    return absl::OkStatus();
  }();
  return Reply(ctx, d_, "GetSensitivity", s);
}

grpc::ServerUnaryReactor* AutoQuantService::GetServerInfo(grpc::CallbackServerContext* ctx,
                                                          const v1::GetServerInfoRequest* req,
                                                          v1::ServerInfo* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(d_->auth->Check(*ctx));
    resp->set_version(BuildInfoString(GetBuildInfo()));
    resp->set_model_path(d_->model_path);
    resp->set_calib_path(d_->calib_path);
    resp->set_models_root(d_->models_root);
    resp->set_metrics_address(d_->metrics_address);
    resp->set_uptime_seconds(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - d_->started).count());
    resp->set_model_load_seconds(d_->load_seconds.load());
    resp->set_batch_size(d_->batch_size);
    resp->set_daemon_id(d_->daemon_id);
    resp->set_job_store(d_->job_store);
    resp->set_serving(d_->jobs->serving());
    resp->set_running_job_id(d_->jobs->running_job_id());
    ASSIGN_OR_RETURN(int64_t queued, d_->jobs->queued_count());
    resp->set_queued_jobs(static_cast<int32_t>(queued));
    if (const EngineFacts* e = d_->engine.load()) {
      resp->set_model_fingerprint(e->model_fingerprint);
      resp->set_calib_fingerprint(e->calib_fingerprint);
      resp->set_calib_samples(static_cast<int32_t>(e->calib_samples));
      resp->set_device(e->device);
      resp->set_dtype(e->dtype);
      DeviceMemory m = e->device_memory();
      resp->set_device_memory_allocated_bytes(m.allocated);
      resp->set_device_memory_reserved_bytes(m.reserved);
      resp->set_device_memory_peak_bytes(m.peak_reserved);
      for (const auto& k : e->cached_baseline_keys()) resp->add_cached_baselines(k);
    }
    if (const EvalSetFacts* ev = d_->eval_set.load()) {
      resp->set_eval_set_path(ev->path);
      resp->set_eval_set_fingerprint(ev->fingerprint);
      resp->set_eval_samples(static_cast<int32_t>(ev->samples));
    }
    return absl::OkStatus();
  }();
  return Reply(ctx, d_, "GetServerInfo", s);
}

}  // namespace autoquant

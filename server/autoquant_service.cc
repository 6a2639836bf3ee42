#include "server/autoquant_service.h"

#include <deque>
#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/eval/report.h"
#include "core/jobs/engine_job_runner.h"
#include "core/jobs/request_limits.h"
#include "core/quant/scheme_name.h"
#include "core/util/build_info.h"
#include "core/util/status_macros.h"
#include "server/grpc_status.h"
#include "server/job_proto.h"
#include "server/request_executor.h"
#include "spdlog/spdlog.h"

namespace autoquant {
namespace {

constexpr int kMaxPageSize = 1000;
constexpr int kDefaultPageSize = 100;
constexpr size_t kMaxPageTokenLength = 32;
constexpr size_t kMaxListedMessageLength = 4096;

// The request's bytes as `Req`; InvalidArgument naming the type when they are not one.
template <typename Req>
absl::Status Parse(const grpc::ByteBuffer& in, Req* req) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (in.Dump(&slices).ok()) {
    for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  if (req->ParseFromString(bytes)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "the request (", bytes.size(), " bytes) does not parse as ", req->GetTypeName(),
      ": a field has the wrong wire type, a string is not UTF-8, or the bytes are not that message; send the "
      "message proto/autoquant/v1/autoquant.proto defines for this method"));
}

grpc::ByteBuffer Serialize(const google::protobuf::MessageLite& m) {
  grpc::Slice slice(m.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

absl::Status CheckJobId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("job_id is required");
  return CheckFieldLength("job_id", id, kMaxJobIdLength);
}

absl::Status FillJob(DaemonContext* d, const Job& j, v1::Job* out) {
  ASSIGN_OR_RETURN(int pos, d->jobs->QueuePosition(j.id));
  JobToProto(j, pos, out);
  return absl::OkStatus();
}

// A job too large for any page (stored before the request limits existed): listed without its spec's
// lists and with its message cut, so that the listing still works; GetStatus has the whole job.
void ShrinkForListing(v1::Job* job) {
  const size_t before = job->ByteSizeLong();
  auto* spec = job->mutable_spec();
  spec->clear_disabled_layers();
  if (spec->has_coverage_manifest()) {
    spec->mutable_coverage_manifest()->clear_selected_layers();
    spec->mutable_coverage_manifest()->clear_dropped_layers();
    spec->mutable_coverage_manifest()->clear_disabled_layers();
  }
  if (job->message().size() > kMaxListedMessageLength) job->mutable_message()->resize(kMaxListedMessageLength);
  job->set_message(absl::StrCat(job->message(), " [listed without its spec's layer lists: the job is ", before,
                                " bytes; GetStatus returns it whole]"));
}

// Streams a job's log lines after a sequence number; with follow, waits
// (without blocking a thread) for new lines until the job's terminal line.
//
// Nothing here blocks a gRPC thread or reads the store under the stream's
// lock: opening (parse, validate, look the job up) and every read of the log
// run on the reads pool (request_executor.h), and a reaction (OnWriteDone, OnCancel, a new
// line's notification) only sends what was read or queues the next read. At
// most one read or one write is in flight; the stream finishes only when
// neither is, so a queued read never outlives the stream.
class LogStream : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  LogStream(DaemonContext* d, const grpc::ByteBuffer* request)
      : d_(d), request_(request), guard_(std::make_shared<Guard>()) {
    guard_->owner = this;
  }

  // Queues the opening on the reads pool (counted as the read in flight).
  void Start() {
    d_->reads->Admit([this](const absl::Status& admitted) { Open(admitted); });
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) return FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      if (sent_terminal_) return FinishLocked(grpc::Status::OK);
      if (cancelled_) return FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
    }
    Pump();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    // A read or write in flight finishes the stream when it completes.
    if (!writing_ && !reading_) FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
  }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(guard_->mu);
      guard_->owner = nullptr;
    }
    // Whoever called Finish (under mu_) has let go of the stream once mu_ is free.
    { std::lock_guard<std::mutex> lock(mu_); }
    subscription_.reset();
    delete this;
  }

  // A new line may be stored (a notification, or a write completed): sends
  // what was read, else queues a read; a read in flight is told to look again.
  void Pump() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_ || writing_) return;
      if (reading_) {
        look_again_ = true;
        return;
      }
      if (!pending_.empty()) return SendNextLocked();
      StartReadLocked();
    }
    QueueRead();
  }

 private:
  struct Guard {
    std::mutex mu;
    LogStream* owner = nullptr;
  };

  // What one read of the store found.
  struct ReadResult {
    absl::Status status;
    std::vector<LogEntry> lines;
    bool ended = false;  // following, nothing new, and the job's terminal line was already sent
  };

  // On the executor: the request's checks and the job's existence, then the first read.
  void Open(const absl::Status& admitted) {
    absl::Status s = admitted.ok() ? ParseAndCheck() : admitted;
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      reading_ = false;
      return FinishLocked(ToGrpcStatus(s));
    }
    if (follow_) {
      // Before the first read, so that a line stored after it is notified.
      auto guard = guard_;
      subscription_ = d_->jobs->Subscribe(job_id_, [guard] {
        std::lock_guard<std::mutex> lock(guard->mu);
        if (guard->owner) guard->owner->Pump();
      });
    }
    Read(absl::OkStatus());
  }

  absl::Status ParseAndCheck() {
    v1::StreamLogsRequest req;
    RETURN_IF_ERROR(Parse(*request_, &req));
    RETURN_IF_ERROR(CheckJobId(req.job_id()));
    if (req.after_sequence() < 0) return absl::InvalidArgumentError("after_sequence must be >= 0");
    RETURN_IF_ERROR(d_->jobs->Get(req.job_id()).status());
    job_id_ = req.job_id();
    last_ = req.after_sequence();
    follow_ = req.follow();
    return absl::OkStatus();
  }

  void StartReadLocked() {
    reading_ = true;
    look_again_ = false;  // the read about to run sees every line stored before it
  }

  void QueueRead() {
    d_->reads->Resume([this](const absl::Status& admitted) { Read(admitted); });
  }

  // On the executor (or, when refused, wherever Resume was called): reads
  // without the lock, then sends or finishes under it.
  void Read(const absl::Status& admitted) {
    int64_t after;
    {
      std::lock_guard<std::mutex> lock(mu_);
      after = last_;  // no write is in flight, so last_ holds still
    }
    ReadResult r = admitted.ok() ? ReadStore(after) : ReadResult{.status = admitted};
    {
      std::lock_guard<std::mutex> lock(mu_);
      reading_ = false;
      if (cancelled_) return FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
      if (!r.status.ok()) return FinishLocked(ToGrpcStatus(r.status));
      pending_.assign(std::make_move_iterator(r.lines.begin()), std::make_move_iterator(r.lines.end()));
      if (!pending_.empty()) return SendNextLocked();
      if (!follow_ || r.ended) return FinishLocked(grpc::Status::OK);
      if (!look_again_) return;  // idle until the next notification
      StartReadLocked();
    }
    QueueRead();
  }

  ReadResult ReadStore(int64_t after) {
    ReadResult r;
    auto lines = d_->jobs->ReadLogs(job_id_, after, 256);
    if (!lines.ok()) return {.status = lines.status()};
    r.lines = *std::move(lines);
    if (!r.lines.empty() || !follow_) return r;
    // Nothing new: a finished job whose terminal line was already sent (before after_sequence) ends here.
    auto job = d_->jobs->Get(job_id_);
    if (!job.ok()) return {.status = job.status()};
    if (!IsTerminal(job->state)) return r;
    // The terminal line may have landed between the two reads: then it is sent, no notification will follow.
    auto again = d_->jobs->ReadLogs(job_id_, after, 256);
    if (!again.ok()) return {.status = again.status()};
    r.lines = *std::move(again);
    r.ended = r.lines.empty();
    return r;
  }

  void SendNextLocked() {
    LogEntry e = std::move(pending_.front());
    pending_.pop_front();
    last_ = e.sequence;
    sent_terminal_ = e.state.has_value();
    v1::LogLine line;
    LogToProto(e, &line);
    line_ = Serialize(line);
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
  const grpc::ByteBuffer* request_;  // gRPC's, valid until OnDone
  // Set by Open before the first read; constant after.
  std::string job_id_;
  bool follow_ = false;
  std::mutex mu_;
  int64_t last_ = 0;
  // The opening counts as a read: nothing finishes the stream before it has run.
  bool reading_ = true;
  bool look_again_ = false;
  bool writing_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
  bool sent_terminal_ = false;
  std::deque<LogEntry> pending_;
  grpc::ByteBuffer line_;
  std::shared_ptr<Guard> guard_;
  std::shared_ptr<void> subscription_;
};

}  // namespace

template <typename Req, typename Resp, typename Body>
grpc::ServerUnaryReactor* AutoQuantService::Handle(Ctx* ctx, const char* method, const Bytes* in, Bytes* out, Body body,
                                                   Where where) {
  auto* reactor = ctx->DefaultReactor();
  // The token first, here: cheap, and an unauthenticated caller learns nothing about its request nor
  // takes a place in the queue.
  if (absl::Status s = d_->auth->Check(*ctx); !s.ok()) {
    Answer(reactor, method, s);
    return reactor;
  }
  if (where == Where::kCallbackThread) {
    Answer(reactor, method, Serve<Req, Resp>(ctx, *in, out, body));
    return reactor;
  }
  // gRPC keeps ctx, in and out until the reactor is finished, which only this task does.
  RequestExecutor* pool = where == Where::kWrites ? d_->writes : d_->reads;
  pool->Admit([this, ctx, method, in, out, body, reactor](const absl::Status& admitted) {
    Answer(reactor, method, admitted.ok() ? Serve<Req, Resp>(ctx, *in, out, body) : admitted);
  });
  return reactor;
}

template <typename Req, typename Resp, typename Body>
absl::Status AutoQuantService::Serve(Ctx* ctx, const Bytes& in, Bytes* out, const Body& body) {
  // A client that gave up while the request waited (its deadline passed, or it cancelled) gets nothing done.
  if (ctx->IsCancelled()) {
    return absl::CancelledError("the call was cancelled (or its deadline passed) before the server could run it");
  }
  Req req;
  RETURN_IF_ERROR(Parse(in, &req));
  Resp resp;
  RETURN_IF_ERROR(body(req, &resp));
  *out = Serialize(resp);
  return absl::OkStatus();
}

void AutoQuantService::Answer(Unary* reactor, const char* method, const absl::Status& s) {
  // Counted before Finish: once finished, the call (and, at shutdown, the service) may be gone.
  d_->metrics->CountRpc(method, absl::StatusCodeToString(s.code()));
  reactor->Finish(ToGrpcStatus(s));
}

grpc::ServerUnaryReactor* AutoQuantService::SubmitScheme(Ctx* ctx, const Bytes* in, Bytes* out) {
  return Handle<v1::SubmitSchemeRequest, v1::Job>(
      ctx, "SubmitScheme", in, out, [this](const auto& req, auto* resp) { return DoSubmitScheme(req, resp); },
      Where::kWrites);
}
grpc::ServerUnaryReactor* AutoQuantService::SubmitSweep(Ctx* ctx, const Bytes* in, Bytes* out) {
  return Handle<v1::SubmitSweepRequest, v1::SubmitSweepResponse>(
      ctx, "SubmitSweep", in, out, [this](const auto& req, auto* resp) { return DoSubmitSweep(req, resp); },
      Where::kWrites);
}
grpc::ServerUnaryReactor* AutoQuantService::GetStatus(Ctx* ctx, const Bytes* in, Bytes* out) {
  return Handle<v1::GetStatusRequest, v1::Job>(
      ctx, "GetStatus", in, out, [this](const auto& req, auto* resp) { return DoGetStatus(req, resp); }, Where::kReads);
}
grpc::ServerUnaryReactor* AutoQuantService::ListJobs(Ctx* ctx, const Bytes* in, Bytes* out) {
  return Handle<v1::ListJobsRequest, v1::ListJobsResponse>(
      ctx, "ListJobs", in, out, [this](const auto& req, auto* resp) { return DoListJobs(req, resp); }, Where::kReads);
}
grpc::ServerUnaryReactor* AutoQuantService::CancelJob(Ctx* ctx, const Bytes* in, Bytes* out) {
  return Handle<v1::CancelJobRequest, v1::Job>(
      ctx, "CancelJob", in, out, [this](const auto& req, auto* resp) { return DoCancelJob(req, resp); },
      Where::kWrites);
}
grpc::ServerUnaryReactor* AutoQuantService::GetSensitivity(Ctx* ctx, const Bytes* in, Bytes* out) {
  return Handle<v1::GetSensitivityRequest, v1::Sensitivity>(
      ctx, "GetSensitivity", in, out, [this](const auto& req, auto* resp) { return DoGetSensitivity(req, resp); },
      Where::kReads);
}
grpc::ServerUnaryReactor* AutoQuantService::GetServerInfo(Ctx* ctx, const Bytes* in, Bytes* out) {
  return Handle<v1::GetServerInfoRequest, v1::ServerInfo>(
      ctx, "GetServerInfo", in, out, [this](const auto&, auto* resp) { return DoGetServerInfo(resp); },
      Where::kCallbackThread);
}
grpc::ServerUnaryReactor* AutoQuantService::EvaluateScheme(Ctx* ctx, const Bytes* in, Bytes* out) {
  return Handle<v1::EvaluateSchemeRequest, v1::Job>(
      ctx, "EvaluateScheme", in, out, [this](const auto& req, auto* resp) { return DoEvaluateScheme(req, resp); },
      Where::kWrites);
}
grpc::ServerUnaryReactor* AutoQuantService::GetReport(Ctx* ctx, const Bytes* in, Bytes* out) {
  return Handle<v1::GetReportRequest, v1::Report>(
      ctx, "GetReport", in, out, [this](const auto& req, auto* resp) { return DoGetReport(req, resp); }, Where::kReads);
}

absl::Status AutoQuantService::DoSubmitScheme(const v1::SubmitSchemeRequest& req, v1::Job* resp) {
  ASSIGN_OR_RETURN(JobSpec spec, SpecFromProto(req.spec()));
  ASSIGN_OR_RETURN(Job job, d_->jobs->Submit(spec, req.idempotency_key()));
  return FillJob(d_, job, resp);
}

absl::Status AutoQuantService::DoSubmitSweep(const v1::SubmitSweepRequest& req, v1::SubmitSweepResponse* resp) {
  if (req.points_size() == 0) return absl::InvalidArgumentError("points: a sweep needs at least one point");
  // Counted before the points are converted; their contents are checked by the job manager.
  RETURN_IF_ERROR(CheckFieldCount("points", req.points_size(), kMaxSweepPoints));
  std::vector<JobSpec> specs;
  for (int i = 0; i < req.points_size(); ++i) {
    auto spec = SpecFromProto(req.points(i));
    if (!spec.ok()) {
      // The name is echoed only when it passes: an unchecked one can be megabytes of anything.
      const std::string& name = req.points(i).scheme();
      return absl::Status(
          spec.status().code(),
          absl::StrCat("point ", i, ValidateSchemeName(name).ok() ? absl::StrCat(" (scheme '", name, "')") : "", ": ",
                       spec.status().message()));
    }
    specs.push_back(*std::move(spec));
  }
  ASSIGN_OR_RETURN(auto sweep, d_->jobs->SubmitSweep(specs, req.idempotency_key()));
  resp->set_sweep_id(sweep.first);
  for (const Job& j : sweep.second) RETURN_IF_ERROR(FillJob(d_, j, resp->add_jobs()));
  return absl::OkStatus();
}

absl::Status AutoQuantService::DoEvaluateScheme(const v1::EvaluateSchemeRequest& req, v1::Job* resp) {
  JobSpec spec;
  spec.kind = JobKind::kEvaluate;
  spec.scheme = req.scheme();
  spec.priority = req.priority();
  ASSIGN_OR_RETURN(Job job, d_->jobs->Submit(spec, req.idempotency_key()));
  return FillJob(d_, job, resp);
}

absl::Status AutoQuantService::DoGetReport(const v1::GetReportRequest& req, v1::Report* resp) {
  if (req.job_ids_size() + req.schemes_size() == 0) {
    return absl::InvalidArgumentError("a report needs job_ids or schemes (evaluated schemes under the models root)");
  }
  RETURN_IF_ERROR(CheckFieldCount("job_ids and schemes", req.job_ids_size() + req.schemes_size(), kMaxReportEntries));
  std::vector<ReportPoint> points;
  auto add = [&](const std::filesystem::path& dir) -> absl::Status {
    auto p = ReadReportPoint(dir);
    if (!p.ok()) return p.status();
    points.push_back(*std::move(p));
    return absl::OkStatus();
  };
  for (const auto& id : req.job_ids()) {
    RETURN_IF_ERROR(CheckJobId(id));
    ASSIGN_OR_RETURN(Job job, d_->jobs->Get(id));
    if (job.state != JobState::kSucceeded || !job.result || job.result->output_dir.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("job ", id, " (scheme ", job.spec.scheme, ") is ",
                                                        JobStateName(job.state),
                                                        "; a report needs succeeded, evaluated jobs"));
    }
    RETURN_IF_ERROR(add(job.result->output_dir));
  }
  for (const auto& scheme : req.schemes()) {
    ASSIGN_OR_RETURN(std::filesystem::path dir, ExistingSchemeDir(d_->models_root, scheme));
    RETURN_IF_ERROR(add(dir));
  }
  ReportOptions options;
  options.allow_mixed_inputs = req.allow_mixed();
  ASSIGN_OR_RETURN(nlohmann::ordered_json report, BuildReport(std::move(points), options));
  resp->set_report_json(report.dump(2));
  resp->set_report_markdown(ReportMarkdown(report));
  for (const auto& line : ReportFindingLines(report)) resp->add_findings(line);
  return absl::OkStatus();
}

absl::Status AutoQuantService::DoGetStatus(const v1::GetStatusRequest& req, v1::Job* resp) {
  RETURN_IF_ERROR(CheckJobId(req.job_id()));
  ASSIGN_OR_RETURN(Job job, d_->jobs->Get(req.job_id()));
  return FillJob(d_, job, resp);
}

absl::Status AutoQuantService::DoListJobs(const v1::ListJobsRequest& req, v1::ListJobsResponse* resp) {
  JobListFilter f;
  if (req.page_size() < 0 || req.page_size() > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size ", req.page_size(), " is outside 0..", kMaxPageSize, " (0 = ", kDefaultPageSize, ")"));
  }
  f.page_size = req.page_size() == 0 ? kDefaultPageSize : req.page_size();
  RETURN_IF_ERROR(CheckFieldLength("page_token", req.page_token(), kMaxPageTokenLength));
  if (!req.page_token().empty() && (!absl::SimpleAtoi(req.page_token(), &f.after_seq) || f.after_seq <= 0)) {
    return absl::InvalidArgumentError("page_token is not one this server returned; start without a page_token");
  }
  // Six states exist; repeating one is harmless but a long list is not a filter.
  RETURN_IF_ERROR(CheckFieldCount("states", req.states_size(), 16));
  for (int st : req.states()) {
    ASSIGN_OR_RETURN(JobState state, StateFromProto(static_cast<v1::JobState>(st)));
    f.states.push_back(state);
  }
  ASSIGN_OR_RETURN(JobPage page, d_->jobs->List(f));
  for (const std::string& why : page.unreadable) spdlog::warn("ListJobs: skipped an unreadable stored job: {}", why);
  size_t bytes = 0;
  for (size_t i = 0; i < page.jobs.size(); ++i) {
    v1::Job out;
    RETURN_IF_ERROR(FillJob(d_, page.jobs[i], &out));
    if (out.ByteSizeLong() > kMaxListReplyBytes) ShrinkForListing(&out);
    const size_t size = out.ByteSizeLong() + 16;  // the field's tag and length prefix, generously
    if (i > 0 && bytes + size > kMaxListReplyBytes) {
      // Full by bytes: the next page starts at this job.
      resp->set_next_page_token(absl::StrCat(page.jobs[i - 1].seq));
      return absl::OkStatus();
    }
    bytes += size;
    *resp->add_jobs() = std::move(out);
  }
  if (page.next_after_seq > 0) resp->set_next_page_token(absl::StrCat(page.next_after_seq));
  return absl::OkStatus();
}

absl::Status AutoQuantService::DoCancelJob(const v1::CancelJobRequest& req, v1::Job* resp) {
  RETURN_IF_ERROR(CheckJobId(req.job_id()));
  ASSIGN_OR_RETURN(Job job, d_->jobs->Cancel(req.job_id()));
  return FillJob(d_, job, resp);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* AutoQuantService::StreamLogs(Ctx* ctx, const Bytes* in) {
  if (absl::Status s = d_->auth->Check(*ctx); !s.ok()) {
    // A reactor that only reports the error.
    class Failed : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
     public:
      explicit Failed(const grpc::Status& s) { Finish(s); }
      void OnDone() override { delete this; }
    };
    d_->metrics->CountRpc("StreamLogs", absl::StatusCodeToString(s.code()));
    return new Failed(ToGrpcStatus(s));
  }
  auto* stream = new LogStream(d_, in);
  stream->Start();
  return stream;
}

absl::Status AutoQuantService::DoGetSensitivity(const v1::GetSensitivityRequest& req, v1::Sensitivity* resp) {
  const EngineInfo* engine = d_->engine.load();
  if (!engine) return absl::UnavailableError("the model is still loading; retry when health is SERVING");
  ASSIGN_OR_RETURN(const ScoreMethod method, MethodFromProto(req.method()));
  if (req.calib_steps() < 0 || req.score_steps() < 0) {
    return absl::InvalidArgumentError("calib_steps and score_steps must be >= 0");
  }
  ASSIGN_OR_RETURN(std::vector<Format> formats, FormatsFromProto(req.formats()));
  RETURN_IF_ERROR(CandidateFormats(formats).status());
  ASSIGN_OR_RETURN(Baseline b, engine->CachedBaseline({.method = method,
                                                       .calib_steps = req.calib_steps(),
                                                       .score_steps = req.score_steps(),
                                                       .include_vision = req.include_vision(),
                                                       .batch_size = 0,
                                                       .formats = std::move(formats)}));
  resp->set_baseline_key(b.key);
  std::vector<int> rank(b.groups.size());
  for (size_t r = 0; r < b.ranking.size(); ++r) rank[b.ranking[r]] = static_cast<int>(r);
  for (size_t g = 0; g < b.groups.size(); ++g) {
    auto* out = resp->add_groups();
    out->set_key(b.groups[g].key);
    for (const auto& m : b.groups[g].modules) out->add_modules(m);
    for (size_t f = 0; f < b.formats.size(); ++f) {
      const std::string name(FormatName(b.formats[f]));  // the API's key: the format's name, as in manifests
      (*out->mutable_scores())[name] = b.scores[g][f];
      (*out->mutable_costs())[name] = b.costs[g][f];
    }
    out->set_rank(rank[g]);
  }
  return absl::OkStatus();
}

absl::Status AutoQuantService::DoGetServerInfo(v1::ServerInfo* resp) {
  resp->set_version(BuildInfoString(GetBuildInfo()));
  resp->set_model_path(d_->model_path);
  resp->set_calib_path(d_->calib_path);
  resp->set_models_root(d_->models_root);
  resp->set_metrics_address(d_->metrics_address);
  resp->set_uptime_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - d_->started).count());
  resp->set_model_load_seconds(d_->load_seconds.load());
  resp->set_batch_size(d_->batch_size);
  resp->set_daemon_id(d_->daemon_id);
  resp->set_job_store(d_->job_store);
  resp->set_serving(d_->jobs->serving());
  resp->set_running_job_id(d_->jobs->running_job_id());
  // From memory, not the store: GetServerInfo answers on the callback thread, even while the store stalls.
  resp->set_queued_jobs(static_cast<int32_t>(d_->metrics->queued_jobs()));
  if (const EngineInfo* e = d_->engine.load()) {
    resp->set_model_fingerprint(e->model_fingerprint());
    resp->set_calib_fingerprint(e->calib_fingerprint());
    resp->set_calib_samples(static_cast<int32_t>(e->calib_samples()));
    resp->set_device(e->device());
    resp->set_dtype(e->dtype());
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
}

}  // namespace autoquant

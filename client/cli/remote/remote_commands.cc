// status, wait, logs, list, cancel, sensitivity, server info, server health; the shared
// helpers of remote_common.h. submit and sweep are in submit_commands.cc.
#include "client/cli/remote/remote_commands.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli/remote/job_view.h"
#include "client/cli/remote/remote_common.h"
#include "core/quant/baseline.h"
#include "core/util/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/job_proto.h"

namespace autoquant::cli {
namespace {

using google::protobuf::util::TimeUtil;

absl::StatusOr<v1::Job> GetJob(const Connection& c, const std::string& id) {
  v1::GetStatusRequest req;
  req.set_job_id(id);
  v1::Job job;
  auto ctx = c.Context();
  RETURN_IF_ERROR(c.Check(c.stub()->GetStatus(ctx.get(), req, &job), "GetStatus"));
  return job;
}

struct JobsOptions {
  CommonOptions common;
  std::vector<std::string> ids;
};

absl::Status RunStatus(const JobsOptions& o) {
  ASSIGN_OR_RETURN(Connection c, Connect(o.common.connection));
  std::vector<v1::Job> jobs;
  for (const auto& id : o.ids) {
    ASSIGN_OR_RETURN(v1::Job j, GetJob(c, id));
    jobs.push_back(std::move(j));
  }
  PrintJobs(jobs, o.common.json, std::cout);
  return absl::OkStatus();
}

absl::Status RunWait(const JobsOptions& o) {
  ASSIGN_OR_RETURN(Connection c, Connect(o.common.connection));
  ASSIGN_OR_RETURN(auto jobs, WaitForJobs(c, o.ids, o.common.json, std::cout));
  if (o.common.json) PrintJobs(jobs, true, std::cout);
  return AllSucceeded(jobs);
}

absl::Status RunCancel(const JobsOptions& o) {
  ASSIGN_OR_RETURN(Connection c, Connect(o.common.connection));
  std::vector<v1::Job> jobs;
  for (const auto& id : o.ids) {
    v1::CancelJobRequest req;
    req.set_job_id(id);
    v1::Job job;
    auto ctx = c.Context();
    RETURN_IF_ERROR(c.Check(c.stub()->CancelJob(ctx.get(), req, &job), "CancelJob"));
    jobs.push_back(std::move(job));
  }
  PrintJobs(jobs, o.common.json, std::cout);
  return absl::OkStatus();
}

struct LogsOptions {
  CommonOptions common;
  std::string id;
  bool follow = false;
  int64_t from = 0;
};

absl::Status RunLogs(const LogsOptions& o) {
  ASSIGN_OR_RETURN(Connection c, Connect(o.common.connection));
  v1::StreamLogsRequest req;
  req.set_job_id(o.id);
  req.set_after_sequence(o.from);
  req.set_follow(o.follow);
  auto ctx = c.Context(/*streaming=*/o.follow);
  auto reader = c.stub()->StreamLogs(ctx.get(), req);
  v1::LogLine line;
  v1::JobState final_state = v1::JOB_STATE_UNSPECIFIED;
  while (reader->Read(&line)) {
    if (line.state() != v1::JOB_STATE_UNSPECIFIED) final_state = line.state();
    if (o.common.json) {
      std::cout << ToJson(line).dump() << "\n";
    } else {
      std::string text = absl::StrCat(line.sequence(), "  ", TimeUtil::ToString(line.time()), "  ", line.level());
      if (line.phase() != v1::PHASE_UNSPECIFIED) absl::StrAppend(&text, "  [", PhaseName(line.phase()), "]");
      absl::StrAppend(&text, "  ", line.message());
      if (line.state() != v1::JOB_STATE_UNSPECIFIED) absl::StrAppend(&text, "  (", StateName(line.state()), ")");
      std::cout << text << "\n";
    }
    std::cout.flush();
  }
  RETURN_IF_ERROR(c.Check(reader->Finish(), "StreamLogs"));
  // Following a job to its end is waiting for it: its outcome is the exit code.
  if (o.follow && (final_state == v1::JOB_STATE_FAILED || final_state == v1::JOB_STATE_CANCELLED)) {
    return absl::AbortedError(absl::StrCat("job ", o.id, " ", StateName(final_state)));
  }
  return absl::OkStatus();
}

struct ListOptions {
  CommonOptions common;
  std::vector<std::string> states;
};

absl::Status RunList(const ListOptions& o) {
  v1::ListJobsRequest req;
  for (const auto& s : o.states) {
    v1::JobState st;
    if (!v1::JobState_Parse("JOB_STATE_" + absl::AsciiStrToUpper(s), &st) || st == v1::JOB_STATE_UNSPECIFIED) {
      return absl::InvalidArgumentError(
          absl::StrCat("--state ", s, ": expected queued, running, succeeded, failed or cancelled"));
    }
    req.add_states(st);
  }
  ASSIGN_OR_RETURN(Connection c, Connect(o.common.connection));
  req.set_page_size(1000);
  std::vector<v1::Job> jobs;
  do {
    v1::ListJobsResponse resp;
    auto ctx = c.Context();
    RETURN_IF_ERROR(c.Check(c.stub()->ListJobs(ctx.get(), req, &resp), "ListJobs"));
    for (auto& j : *resp.mutable_jobs()) jobs.push_back(std::move(j));
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  PrintJobs(jobs, o.common.json, std::cout);
  return absl::OkStatus();
}

struct SensitivityOptions {
  CommonOptions common;
  std::string method = "gradient";
  bool include_vision = false;
  std::string formats;
  int calib_steps = 0;
  int score_steps = 0;
};

absl::Status RunSensitivity(const SensitivityOptions& o) {
  ASSIGN_OR_RETURN(ScoreMethod method, ParseScoreMethod(o.method));
  v1::GetSensitivityRequest req;
  req.set_method(MethodToProto(method));
  ASSIGN_OR_RETURN(std::vector<Format> formats, ParseFormatList(o.formats));
  for (Format f : formats) req.add_formats(FormatToProto(f));
  req.set_include_vision(o.include_vision);
  req.set_calib_steps(o.calib_steps);
  req.set_score_steps(o.score_steps);
  ASSIGN_OR_RETURN(Connection c, Connect(o.common.connection));
  v1::Sensitivity resp;
  auto ctx = c.Context();
  RETURN_IF_ERROR(c.Check(c.stub()->GetSensitivity(ctx.get(), req, &resp), "GetSensitivity"));
  if (o.common.json) {
    std::cout << ToJson(resp).dump(2) << "\n";
    return absl::OkStatus();
  }
  std::cout << "baseline " << resp.baseline_key() << ": " << resp.groups_size() << " groups, least sensitive first\n";
  std::vector<const v1::GroupSensitivity*> groups;
  for (const auto& g : resp.groups()) groups.push_back(&g);
  std::sort(groups.begin(), groups.end(), [](auto* a, auto* b) { return a->rank() < b->rank(); });
  for (const auto* g : groups) {
    std::cout << g->rank() << "  " << g->key();
    std::map<std::string, double> scores(g->scores().begin(), g->scores().end());
    for (const auto& [format, score] : scores) std::cout << "  " << format << "=" << score;
    std::cout << "\n";
  }
  return absl::OkStatus();
}

absl::Status RunServerInfo(const CommonOptions& o) {
  ASSIGN_OR_RETURN(Connection c, Connect(o.connection));
  v1::ServerInfo info;
  auto ctx = c.Context();
  RETURN_IF_ERROR(c.Check(c.stub()->GetServerInfo(ctx.get(), v1::GetServerInfoRequest(), &info), "GetServerInfo"));
  if (o.json) {
    std::cout << ToJson(info).dump(2) << "\n";
    return absl::OkStatus();
  }
  const nlohmann::json j = ToJson(info);
  for (const auto& [key, value] : j.items()) {
    std::cout << key << ": " << (value.is_string() ? value.get<std::string>() : value.dump()) << "\n";
  }
  return absl::OkStatus();
}

struct HealthOptions {
  CommonOptions common;
  std::string service;
};

// grpc.health.v1 Check: OK when SERVING; UNAVAILABLE (exit 3) otherwise, so a container
// HEALTHCHECK can run it. Health is not behind the token, so probes need no secret.
absl::Status RunServerHealth(const HealthOptions& o) {
  ASSIGN_OR_RETURN(Connection c, Connect(o.common.connection));
  auto stub = grpc::health::v1::Health::NewStub(c.channel());
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(o.service);
  grpc::health::v1::HealthCheckResponse resp;
  auto ctx = c.Context();
  RETURN_IF_ERROR(c.Check(stub->Check(ctx.get(), req, &resp), "Health.Check"));
  const std::string status = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
  if (o.common.json) {
    std::cout << nlohmann::json({{"service", o.service}, {"status", status}}).dump(2) << "\n";
  } else {
    std::cout << status << "\n";
  }
  if (resp.status() == grpc::health::v1::HealthCheckResponse::SERVING) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("daemon at ", c.server(), " is ", status, " (loading the model, or draining to stop)"));
}

}  // namespace

void AddCommonOptions(CLI::App* cmd, CommonOptions* o) {
  AddConnectionOptions(cmd, &o->connection);
  cmd->add_flag("--json", o->json, "print JSON for scripts (the API's JSON mapping, .proto field names)");
}

void PrintJobs(const std::vector<v1::Job>& jobs, bool json, std::ostream& out) {
  if (json) {
    nlohmann::json j = {{"jobs", nlohmann::json::array()}};
    for (const auto& job : jobs) j["jobs"].push_back(ToJson(job));
    out << j.dump(2) << "\n";
    return;
  }
  for (const auto& job : jobs) out << JobLine(job) << "\n";
}

absl::StatusOr<std::vector<v1::Job>> WaitForJobs(const Connection& c, const std::vector<std::string>& ids, bool quiet,
                                                 std::ostream& out) {
  const bool terminal = &out == &std::cout && isatty(fileno(stdout));
  ProgressView view(out, terminal);
  while (true) {
    std::vector<v1::Job> jobs;
    bool done = true;
    for (const auto& id : ids) {
      ASSIGN_OR_RETURN(v1::Job j, GetJob(c, id));
      done = done && IsTerminal(j.state());
      jobs.push_back(std::move(j));
    }
    if (!quiet) view.Update(jobs);
    if (done) return jobs;
    std::this_thread::sleep_for(std::chrono::milliseconds(terminal ? 200 : 500));
  }
}

absl::Status AllSucceeded(const std::vector<v1::Job>& jobs) {
  std::vector<std::string> bad;
  for (const auto& j : jobs) {
    if (j.state() != v1::JOB_STATE_SUCCEEDED) {
      bad.push_back(absl::StrCat(j.scheme(), " (", j.id(), ") ", StateName(j.state()),
                                 j.message().empty() ? "" : ": " + j.message()));
    }
  }
  if (bad.empty()) return absl::OkStatus();
  return absl::AbortedError(
      absl::StrCat(bad.size(), " of ", jobs.size(), " jobs did not succeed: ", absl::StrJoin(bad, "; ")));
}

void AddRemoteCommands(CLI::App& app, absl::Status* status, bool* ran) {
  const CommandResult result{status, ran};
  AddSubmitCommand(app, result);
  AddSweepCommand(app, result);
  AddEvalCommand(app, result);

  auto jobs_command = [&](const char* name, const char* help, absl::Status (*run)(const JobsOptions&)) {
    auto o = std::make_shared<JobsOptions>();
    CLI::App* cmd = app.add_subcommand(name, help);
    cmd->add_option("job", o->ids, "job id(s)")->required();
    AddCommonOptions(cmd, &o->common);
    cmd->callback([o, result, run] { result.Set(run(*o)); });
  };
  jobs_command("status", "Show jobs of a daemon", RunStatus);
  jobs_command("wait", "Wait for jobs to finish, with progress; exit code 1 if one failed or was cancelled", RunWait);
  jobs_command("cancel", "Cancel queued or running jobs", RunCancel);

  {
    auto o = std::make_shared<LogsOptions>();
    CLI::App* cmd = app.add_subcommand("logs", "Print a job's log lines");
    cmd->add_option("job", o->id, "job id")->required();
    cmd->add_flag("-f,--follow", o->follow,
                  "keep printing until the job ends; exit code 1 if it failed or was cancelled");
    cmd->add_option("--from", o->from, "print lines after this sequence number (the last one seen; 0: all)")
        ->check(CLI::NonNegativeNumber);
    AddCommonOptions(cmd, &o->common);
    cmd->callback([o, result] { result.Set(RunLogs(*o)); });
  }
  {
    auto o = std::make_shared<ListOptions>();
    CLI::App* cmd = app.add_subcommand("list", "List a daemon's jobs, oldest first");
    cmd->add_option("--state", o->states, "only jobs in these states: queued, running, succeeded, failed, cancelled")
        ->delimiter(',');
    AddCommonOptions(cmd, &o->common);
    cmd->callback([o, result] { result.Set(RunList(*o)); });
  }
  {
    auto o = std::make_shared<SensitivityOptions>();
    CLI::App* cmd = app.add_subcommand("sensitivity", "Show the daemon's cached sensitivity baseline");
    cmd->add_option("--method", o->method, "sensitivity method: gradient | kl_div");
    cmd->add_flag("--include-vision", o->include_vision, "the baseline that includes the vision tower");
    cmd->add_option("--formats", o->formats, "the baseline's quantization formats, e.g. nvfp4,fp8 (default fp8)");
    cmd->add_option("--calib-steps", o->calib_steps, "calibration batches of the baseline (0: all)");
    cmd->add_option("--score-steps", o->score_steps, "scoring batches of the baseline (0: default)");
    AddCommonOptions(cmd, &o->common);
    cmd->callback([o, result] { result.Set(RunSensitivity(*o)); });
  }
  {
    auto o = std::make_shared<CommonOptions>();
    CLI::App* server = app.add_subcommand("server", "About the daemon itself");
    server->require_subcommand(1);
    CLI::App* info = server->add_subcommand("info", "What the daemon holds: model, calibration set, device, queue");
    AddCommonOptions(info, o.get());
    info->callback([o, result] { result.Set(RunServerInfo(*o)); });
    auto h = std::make_shared<HealthOptions>();
    CLI::App* health = server->add_subcommand(
        "health", "grpc.health.v1 check: prints SERVING and exits 0, else exits 3 (for container probes)");
    health->add_option("--service", h->service,
                       "service to ask about (default: the whole server; autoquant.v1.AutoQuant works too)");
    AddCommonOptions(health, &h->common);
    health->callback([h, result] { result.Set(RunServerHealth(*h)); });
  }
}

}  // namespace autoquant::cli

namespace autoquant::cli {

absl::StatusOr<std::string> RemoteJobOutputDir(const std::string& server, const std::string& job_id) {
  ConnectionOptions o;
  o.server = server;
  ASSIGN_OR_RETURN(Connection c, Connect(o));
  v1::GetStatusRequest req;
  req.set_job_id(job_id);
  v1::Job job;
  auto ctx = c.Context();
  RETURN_IF_ERROR(c.Check(c.stub()->GetStatus(ctx.get(), req, &job), "GetStatus"));
  if (job.state() != v1::JOB_STATE_SUCCEEDED || job.result().output_dir().empty()) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " (scheme ", job.scheme(), ") is ",
                                                      v1::JobState_Name(job.state()),
                                                      "; a report needs succeeded, evaluated jobs"));
  }
  return job.result().output_dir();
}

}  // namespace autoquant::cli

#include "core/jobs/job.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/json_int.h"
#include "core/util/status_macros.h"

namespace autoquant {
using json = nlohmann::json;

absl::string_view JobStateName(JobState s) {
  switch (s) {
    case JobState::kQueued:
      return "queued";
    case JobState::kRunning:
      return "running";
    case JobState::kSucceeded:
      return "succeeded";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "?";
}

absl::StatusOr<JobState> ParseJobState(absl::string_view name) {
  for (JobState s :
       {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed, JobState::kCancelled}) {
    if (JobStateName(s) == name) return s;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown job state '", name, "'"));
}

bool IsTerminal(JobState s) { return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled; }

absl::Status CheckTransition(JobState from, JobState to) {
  bool ok = false;
  switch (from) {
    case JobState::kQueued:
      ok = to == JobState::kRunning || to == JobState::kCancelled || to == JobState::kFailed;
      break;
    case JobState::kRunning:
      ok = to == JobState::kQueued || IsTerminal(to);
      break;
    default:
      ok = false;  // terminal states never change
  }
  if (ok) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("job is ", JobStateName(from), "; it cannot become ", JobStateName(to)));
}

absl::string_view JobKindName(JobKind k) { return k == JobKind::kEvaluate ? "evaluate" : "scheme"; }

json JobSpec::ToJson() const {
  json j;
  j["kind"] = JobKindName(kind);
  SchemeSpecToJson(*this, &j);
  j["priority"] = priority;
  j["evaluate"] = evaluate;
  return j;
}

absl::StatusOr<JobSpec> JobSpec::FromJson(const json& j) {
  JobSpec s;
  std::string kind;
  try {
    kind = j.value("kind", std::string("scheme"));  // rows from before evaluation jobs have none
    s.priority = JsonInt<int>(j.at("priority"));
    s.evaluate = j.value("evaluate", false);
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("stored job spec is malformed: ", e.what()));
  }
  if (kind == "scheme") {
    s.kind = JobKind::kScheme;
  } else if (kind == "evaluate") {
    s.kind = JobKind::kEvaluate;
  } else {
    return absl::DataLossError(absl::StrCat("stored job spec is malformed: unknown job kind '", kind, "'"));
  }
  ASSIGN_OR_RETURN(static_cast<SchemeSpec&>(s), SchemeSpecFromJson(j));
  // The rule a submit passed, applied again: a row edited or written by another version is refused with
  // the reason rather than run with a meaning nobody asked for.
  if (s.kind == JobKind::kScheme) RETURN_IF_ERROR(ValidateSchemeSpec(s));
  return s;
}

json JobResultInfo::ToJson() const {
  return {{"output_dir", output_dir},
          {"effective_bits", effective_bits},
          {"groups_quantized", groups_quantized},
          {"groups_total", groups_total},
          {"baseline_reused", baseline_reused},
          {"baseline_key", baseline_key},
          {"metrics", metrics}};
}

JobResultInfo JobResultInfo::FromJson(const json& j) {
  JobResultInfo r;
  r.output_dir = j.value("output_dir", "");
  r.effective_bits = j.value("effective_bits", 0.0);
  r.groups_quantized = j.value("groups_quantized", 0);
  r.groups_total = j.value("groups_total", 0);
  r.baseline_reused = j.value("baseline_reused", false);
  r.baseline_key = j.value("baseline_key", "");
  if (j.contains("metrics") && j["metrics"].is_object()) {
    for (const auto& [k, v] : j["metrics"].items()) {
      if (v.is_number()) r.metrics[k] = v.get<double>();
    }
  }
  return r;
}

std::string StoredPhase(std::optional<Phase> p) { return p ? std::string(PhaseName(*p)) : std::string(); }

std::optional<Phase> PhaseFromStore(absl::string_view text) {
  auto p = ParsePhase(text);
  return p.ok() ? std::optional<Phase>(*p) : std::nullopt;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string NewJobId(absl::string_view prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrCat(prefix, absl::StrFormat("%016x", rng()));
}

std::string NewDaemonId() {
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') std::snprintf(host, sizeof(host), "host");
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("%s-%d-%04x", host, static_cast<int>(::getpid()), rng() & 0xffff);
}

}  // namespace autoquant

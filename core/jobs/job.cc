#include "core/jobs/job.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/json_int.h"

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

json JobSpec::ToJson() const {
  json j;
  j["kind"] = kind;
  j["scheme"] = scheme;
  j["coverage"] = coverage ? json(*coverage) : json(nullptr);
  if (has_manifest) {
    j["coverage_manifest"] = {{"selected_layers", manifest_selected},
                              {"dropped_layers", manifest_dropped},
                              {"disabled_layers", manifest_disabled}};
  } else {
    j["coverage_manifest"] = nullptr;
  }
  j["disabled_layers"] = disabled_layers;
  j["effective_bits"] = effective_bits ? json(*effective_bits) : json(nullptr);
  j["method"] = method;
  j["format"] = format;
  // Only when set, so that the JSON of specs stored before layouts existed is unchanged.
  if (!layout.empty()) j["layout"] = layout;
  if (batch_size != 0) j["batch_size"] = batch_size;
  j["overwrite"] = overwrite;
  j["include_vision"] = include_vision;
  j["calib_steps"] = calib_steps;
  j["score_steps"] = score_steps;
  j["priority"] = priority;
  j["evaluate"] = evaluate;
  return j;
}

absl::StatusOr<JobSpec> JobSpec::FromJson(const json& j) {
  try {
    JobSpec s;
    s.kind = j.value("kind", std::string(kJobKindScheme));  // rows from before evaluation jobs have none
    s.scheme = j.at("scheme").get<std::string>();
    if (!j.at("coverage").is_null()) s.coverage = j.at("coverage").get<double>();
    const json& m = j.at("coverage_manifest");
    if (!m.is_null()) {
      s.has_manifest = true;
      s.manifest_selected = m.at("selected_layers").get<std::vector<std::string>>();
      s.manifest_dropped = m.at("dropped_layers").get<std::vector<std::string>>();
      s.manifest_disabled = m.value("disabled_layers", std::vector<std::string>{});
    }
    s.disabled_layers = j.at("disabled_layers").get<std::vector<std::string>>();
    if (!j.at("effective_bits").is_null()) s.effective_bits = j.at("effective_bits").get<double>();
    s.method = j.at("method").get<std::string>();
    s.format = j.at("format").get<std::string>();
    s.layout = j.value("layout", std::string());
    s.batch_size = j.contains("batch_size") ? JsonInt<int>(j.at("batch_size")) : 0;
    s.overwrite = j.at("overwrite").get<bool>();
    s.include_vision = j.at("include_vision").get<bool>();
    s.calib_steps = JsonInt<int>(j.at("calib_steps"));
    s.score_steps = JsonInt<int>(j.at("score_steps"));
    s.priority = JsonInt<int>(j.at("priority"));
    s.evaluate = j.value("evaluate", false);
    return s;
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("stored job spec is malformed: ", e.what()));
  }
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

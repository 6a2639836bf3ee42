// The job model of autoquantd: what a job is, its states and the one rule
// for moving between them. Torch-free and gRPC-free (the store, the worker
// and the service all use it).
//
// States: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED. A job can also
// go RUNNING -> QUEUED (re-queued after the daemon stopped or died mid-run)
// and QUEUED -> CANCELLED, and QUEUED -> FAILED (a stored job that cannot be read is failed
// saying why instead of holding up the queue). Terminal states never change.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/quant/scheme_spec.h"
#include "nlohmann/json.hpp"

namespace autoquant {

enum class JobState { kQueued, kRunning, kSucceeded, kFailed, kCancelled };

absl::string_view JobStateName(JobState s);  // "queued", ...
absl::StatusOr<JobState> ParseJobState(absl::string_view name);
bool IsTerminal(JobState s);
// FailedPrecondition naming both states unless from -> to is allowed.
absl::Status CheckTransition(JobState from, JobState to);

// What a job does.
enum class JobKind {
  kScheme,    // produce a scheme (and evaluate it with `evaluate`)
  kEvaluate,  // evaluate an existing scheme directory (only the spec's scheme name is used)
};
absl::string_view JobKindName(JobKind k);  // "scheme" | "evaluate"

// One job: the user's scheme spec (scheme_spec.h; layout none: the daemon's --layout, batch_size 0: its
// --batch-size) and how the queue treats it, as the daemon stores it.
struct JobSpec : SchemeSpec {
  JobKind kind = JobKind::kScheme;
  int priority = 0;
  bool evaluate = false;  // kind scheme: evaluate the scheme once written

  // The store's JSON (scheme_spec.h's plus kind, priority, evaluate). FromJson is DataLoss for a
  // malformed row and InvalidArgument for a scheme job whose spec ValidateSchemeSpec refuses.
  nlohmann::json ToJson() const;
  static absl::StatusOr<JobSpec> FromJson(const nlohmann::json& j);
  bool operator==(const JobSpec&) const = default;
};

struct JobResultInfo {
  std::string output_dir;
  double effective_bits = 0;
  int groups_quantized = 0;
  int groups_total = 0;
  bool baseline_reused = false;
  std::string baseline_key;
  std::map<std::string, double> metrics;

  nlohmann::json ToJson() const;
  static JobResultInfo FromJson(const nlohmann::json& j);
};

struct Job {
  std::string id;
  int64_t seq = 0;  // store order (submission order)
  std::string idempotency_key;
  std::string sweep_id;
  JobSpec spec;
  JobState state = JobState::kQueued;
  std::optional<Phase> phase;  // none until the runner reports one
  double progress = 0;
  std::string message;
  int64_t created_ms = 0;  // Unix epoch milliseconds; 0 = not yet
  int64_t started_ms = 0;
  int64_t finished_ms = 0;
  int attempts = 0;
  std::optional<JobResultInfo> result;
  // A cancel was asked for while the job ran; kept in the store so that a
  // restart does not run the job to completion after acknowledging it.
  bool cancel_requested = false;
  // Fleet mode (a store shared by several daemons, job_store.h):
  std::string affinity;          // the model + calibration set the job was submitted against ("" = any daemon)
  std::string owner;             // the daemon that runs (or last ran) it; "" in a single-daemon store
  int64_t lease_epoch = 0;       // fencing token: + 1 at every claim
  int64_t lease_expires_ms = 0;  // while RUNNING: when the owner's lease runs out (the database's clock)
};

// Proof that a daemon holds a RUNNING job: its owner id and the claim's
// fencing token. A store shared by several daemons refuses the owner's writes
// (progress, log lines, state changes, publishing) once either no longer
// matches the job, i.e. after its lease expired and the job was re-queued.
struct Lease {
  std::string owner;
  int64_t epoch = 0;
};

struct LogEntry {
  int64_t sequence = 0;
  int64_t time_ms = 0;
  std::string level;  // info | warning | error
  std::string message;
  std::optional<Phase> phase;
  double progress = 0;
  std::optional<JobState> state;  // set on the line recording a terminal state
};

// A phase as the stores keep it: its name, "" for none. An unknown name reads as none (a row written by
// a later version with a new phase is still listed).
std::string StoredPhase(std::optional<Phase> p);
std::optional<Phase> PhaseFromStore(absl::string_view text);

int64_t NowMs();
// A fresh random job id, e.g. "j-5f0c3a9e21b47d68".
std::string NewJobId(absl::string_view prefix = "j-");
// A daemon's owner id in a fleet, unique across hosts and restarts:
// "HOSTNAME-PID-RANDOM", e.g. "gpu-node-3-4242-9f1c".
std::string NewDaemonId();

}  // namespace autoquant

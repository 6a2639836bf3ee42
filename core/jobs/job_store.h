// Where autoquantd keeps its jobs and their logs, so that a restarted daemon
// still knows every job it acknowledged.
//
//   ASSIGN_OR_RETURN(auto store, OpenJobStore("sqlite:/models/.autoquant/jobs.db"));
//   ASSIGN_OR_RETURN(auto jobs, store->Insert({job}, &created));
//   ASSIGN_OR_RETURN(std::optional<Job> next, store->ClaimNext(affinity));
//
// Writes refused by a full disk fail ResourceExhausted ("the disk holding ...
// is full"), once, in the store; the caller retries once space returns.
//
// Every method is thread-safe and atomic: Insert with idempotency keys, a
// claim, and a state change together with its log line are each one
// transaction. State changes go through CheckTransition, so a terminal state
// never changes whoever asks.
//
// Two kinds of store. SQLite ("sqlite:PATH") serves one daemon: a RUNNING job
// is that daemon's, leases are not kept (lease_seconds() == 0), and
// RecoverInterrupted re-queues every RUNNING job at start. PostgreSQL
// ("postgresql://...", postgres_job_store.h) is shared by a fleet of daemons:
// a claim gives the daemon a lease (owner id + fencing token, Job::owner and
// Job::lease_epoch) that its Heartbeat renews; a job whose lease expired is
// given back by whichever daemon notices (RequeueExpired, which the job
// manager also runs before every claim), and from then on the old owner's
// fenced writes (those given its Lease) fail with Aborted, so a daemon that
// was only paused cannot finish a job twice.
//
// Stores hold no policy: what becomes of an interrupted job (re-queued, or
// failed after too many starts) is the job manager's RecoveryPolicy, which a
// store applies inside the transaction that found the job.
//
// A store also keeps the daemon's records of the blobs it produced
// (BlobRecords, core/io/blob_records.h: blob key -> blob id and size), so
// that the blob store trusts a blob found by key only through what the
// daemon itself recorded, in a place only the daemon writes. A fleet shares
// them, as it shares the models volume.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/io/blob_records.h"
#include "core/jobs/job.h"

namespace autoquant {

struct JobListFilter {
  std::vector<JobState> states;  // empty: all
  int page_size = 100;
  int64_t after_seq = 0;  // the page starts after this job (store order)
};

struct JobPage {
  std::vector<Job> jobs;
  int64_t next_after_seq = 0;  // 0 on the last page
  // Rows of this page that could not be read (a corrupted spec, an unknown state), one line each
  // naming the job: left out of `jobs` so that one bad row does not fail every listing; the caller
  // logs them.
  std::vector<std::string> unreadable;
};

// Why a RUNNING job is being given back without its daemon finishing it.
struct Interruption {
  // Shared stores: the job's lease expired this long ago (its daemon died, hung or lost the database).
  // None: the single daemon that ran it stopped (a crash, kill -9) and this is its restart.
  std::optional<double> lease_expired_seconds_ago;
};

// What becomes of an interrupted job: it moves to `to` (kQueued or kFailed) with `message` as the
// job's message and `log` appended; a re-queued job's phase and progress are reset.
struct Recovery {
  JobState to = JobState::kQueued;
  std::string message;
  LogEntry log;
};
using RecoveryPolicy = std::function<Recovery(const Job& job, const Interruption& why)>;

// What a store does to the job row it moves by a Recovery (besides the state and the log line).
inline void ApplyRecovery(const Recovery& r, Job& job) {
  if (r.to == JobState::kQueued) {
    job.phase.reset();
    job.progress = 0;
  }
  job.message = r.message;
}

class JobStore : public BlobRecords {
 public:
  ~JobStore() override = default;

  // Stores new jobs in one transaction and appends `first_log` to each new
  // one. A job whose idempotency key is already stored is not inserted: the
  // stored job is returned in its place if its spec is equal, otherwise the
  // whole call fails with AlreadyExists (nothing inserted). `created[i]`
  // says whether jobs[i] is new.
  virtual absl::StatusOr<std::vector<Job>> Insert(const std::vector<Job>& jobs, const std::string& first_log,
                                                  std::vector<bool>* created) = 0;

  // NotFound for an unknown id.
  virtual absl::StatusOr<Job> Get(const std::string& id) = 0;
  // The job stored under an idempotency key, if any.
  virtual absl::StatusOr<std::optional<Job>> FindByKey(const std::string& idempotency_key) = 0;
  // Rows that cannot be read are left out and named in JobPage::unreadable.
  virtual absl::StatusOr<JobPage> List(const JobListFilter& filter) = 0;

  // Moves a job to `to` (CheckTransition: FailedPrecondition if not
  // allowed), lets `mutate` fill other fields, and appends `log` (if any;
  // its state is set to `to` when `to` is terminal), all in one transaction.
  // `lease` (may be null): the owner's write of a RUNNING job, fenced
  // (Aborted, nothing changed, if the lease is no longer the job's).
  virtual absl::StatusOr<Job> Transition(const std::string& id, JobState to, const std::function<void(Job&)>& mutate,
                                         const std::optional<LogEntry>& log, const Lease* lease) = 0;

  // Records that a RUNNING job's cancel was requested (no-op otherwise), so
  // that a job cut off before it stopped is cancelled after a restart, and
  // so that the daemon running it (perhaps another one) sees it at its next
  // Heartbeat.
  virtual absl::Status RequestCancel(const std::string& id) = 0;

  // Phase and progress of a RUNNING job (no-op otherwise). `lease` as for
  // Transition.
  virtual absl::Status UpdateProgress(const std::string& id, Phase phase, double progress, const Lease* lease) = 0;

  // The next queued job by priority (higher first), then submission order,
  // moved to RUNNING with attempts + 1; nullopt when none is queued. A
  // shared store claims only jobs whose affinity is `affinity` or empty, skips rows another
  // daemon is claiming (FOR UPDATE SKIP LOCKED), and returns the job with its
  // new lease (owner, lease_epoch). A single-daemon store ignores `affinity`.
  virtual absl::StatusOr<std::optional<Job>> ClaimNext(const std::string& affinity) = 0;

  // Appends a line with the job's next sequence number; returns it. `lease`
  // as for Transition (null: a line from anyone, e.g. "cancel requested").
  virtual absl::StatusOr<int64_t> AppendLog(const std::string& id, const LogEntry& entry, const Lease* lease) = 0;
  // Lines with sequence > after, at most `limit`, in order.
  virtual absl::StatusOr<std::vector<LogEntry>> ReadLogs(const std::string& id, int64_t after, int limit) = 0;

  // 1-based position among queued jobs in run order; 0 if not queued.
  virtual absl::StatusOr<int> QueuePosition(const std::string& id) = 0;
  virtual absl::StatusOr<std::map<JobState, int64_t>> CountByState() = 0;

  // At a daemon's start: each job cut off mid-run gets what `policy` decides,
  // in one transaction with finding it. Returns the jobs it changed. Cut off
  // means RUNNING in a single-daemon store; in a shared store only a RUNNING
  // job whose lease expired (other daemons' live jobs are left alone), i.e.
  // RequeueExpired.
  virtual absl::StatusOr<std::vector<Job>> RecoverInterrupted(const RecoveryPolicy& policy) = 0;

  // A small real write, to tell when a store that failed (a full disk, a
  // database server that is down) takes writes again. ResourceExhausted for
  // a full disk, Unavailable for a server that cannot be reached.
  virtual absl::Status CheckWritable() = 0;

  // --- Leases (shared stores; a single-daemon store has none) ---

  // How long a claim holds a job without a Heartbeat; 0: no leases (one daemon).
  virtual double lease_seconds() const = 0;
  // Renews the lease of a job this daemon runs; returns whether a cancel was
  // requested (by any daemon). Aborted when the lease is lost (the job was
  // re-queued, re-claimed or finished by someone else): stop the job and
  // write nothing more for it.
  virtual absl::StatusOr<bool> Heartbeat(const std::string& id, const Lease& lease) = 0;
  // Runs `publish` (renaming a finished scheme into place) only while the
  // lease is held: the job's row stays locked for the duration, so no other
  // daemon can re-queue the job meanwhile. Aborted, without running
  // `publish`, when the lease is lost or expired; otherwise what `publish`
  // returns. A single-daemon store just runs `publish`.
  virtual absl::Status WhileLeaseHeld(const std::string& id, const Lease& lease,
                                      const std::function<absl::Status()>& publish) = 0;
  // RUNNING jobs whose lease expired get what `policy` decides, each in the
  // transaction that found it (a job being published, its row locked, is
  // left for the next look). Returns the jobs it changed; none in a
  // single-daemon store.
  virtual absl::StatusOr<std::vector<Job>> RequeueExpired(const RecoveryPolicy& policy) = 0;
};

struct JobStoreOptions {
  std::string owner;          // this daemon's id in a fleet (NewDaemonId() if empty)
  double lease_seconds = 30;  // shared stores: how long a claim lasts without a heartbeat
};

// "sqlite:PATH" (created if missing; WAL mode) or "postgresql://..." /
// "postgres://..." (a libpq URI; the schema is created or migrated). InvalidArgument
// for an unknown scheme, FailedPrecondition for a store written by a newer
// schema, DataLoss for a file that is not a readable database (an empty file
// included: only a missing one is created), Unavailable
// for a database server that cannot be reached.
absl::StatusOr<std::unique_ptr<JobStore>> OpenJobStore(const std::string& url, const JobStoreOptions& options = {});

}  // namespace autoquant

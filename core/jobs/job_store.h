// Where autoquantd keeps its jobs and their logs, so that a restarted daemon
// still knows every job it acknowledged.
//
//   ASSIGN_OR_RETURN(auto store, OpenJobStore("sqlite:/models/.autoquant/jobs.db"));
//   ASSIGN_OR_RETURN(auto jobs, store->Insert({job}, &created));
//   ASSIGN_OR_RETURN(std::optional<Job> next, store->ClaimNext());
//
// Every method is thread-safe and atomic: Insert with idempotency keys, a
// claim, and a state change together with its log line are each one
// transaction. State changes go through CheckTransition, so a terminal state
// never changes whoever asks.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
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
};

class JobStore {
 public:
  virtual ~JobStore() = default;

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
  virtual absl::StatusOr<JobPage> List(const JobListFilter& filter) = 0;

  // Moves a job to `to` (CheckTransition: FailedPrecondition if not
  // allowed), lets `mutate` fill other fields, and appends `log` (if any;
  // its state is set to `to` when `to` is terminal), all in one transaction.
  virtual absl::StatusOr<Job> Transition(const std::string& id, JobState to,
                                         const std::function<void(Job&)>& mutate,
                                         const std::optional<LogEntry>& log) = 0;

  // Records that a RUNNING job's cancel was requested (no-op otherwise), so
  // that a job cut off before it stopped is cancelled after a restart.
  virtual absl::Status RequestCancel(const std::string& id) = 0;

  // Phase and progress of a RUNNING job (no-op otherwise).
  virtual absl::Status UpdateProgress(const std::string& id, const std::string& phase, double progress) = 0;

  // The next queued job by priority (higher first), then submission order,
  // moved to RUNNING with attempts + 1; nullopt when none is queued.
  virtual absl::StatusOr<std::optional<Job>> ClaimNext() = 0;

  // Appends a line with the job's next sequence number; returns it.
  virtual absl::StatusOr<int64_t> AppendLog(const std::string& id, const LogEntry& entry) = 0;
  // Lines with sequence > after, at most `limit`, in order.
  virtual absl::StatusOr<std::vector<LogEntry>> ReadLogs(const std::string& id, int64_t after, int limit) = 0;

  // 1-based position among queued jobs in run order; 0 if not queued.
  virtual absl::StatusOr<int> QueuePosition(const std::string& id) = 0;
  virtual absl::StatusOr<std::map<JobState, int64_t>> CountByState() = 0;

  // After a restart: each RUNNING job (cut off mid-run) goes back to QUEUED
  // if it has been started fewer than `max_attempts` times, else to FAILED,
  // each with a log line saying so. Returns the jobs it changed.
  virtual absl::StatusOr<std::vector<Job>> RecoverInterrupted(int max_attempts) = 0;
};

// "sqlite:PATH" (created if missing; WAL mode). InvalidArgument for an
// unknown scheme, FailedPrecondition for a store written by a newer schema,
// DataLoss for a file that is not a readable database.
absl::StatusOr<std::unique_ptr<JobStore>> OpenJobStore(const std::string& url);

}  // namespace autoquant

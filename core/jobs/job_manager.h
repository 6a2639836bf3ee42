// The job queue and its one worker: accepts jobs (validated, stored, made
// idempotent by the store), runs them one after another on the device by
// priority then submission order, reports progress into the job and its
// log, cancels cooperatively, and after a restart finishes what the last
// process left (queued jobs run; a job cut off mid-run is re-queued once).
//
//   JobManager jobs(store.get(), observer);
//   jobs.Start(runner);                       // after the model is loaded
//   ASSIGN_OR_RETURN(Job j, jobs.Submit(spec, "my-key"));
//   jobs.Drain();                             // on SIGTERM: stop, re-queue the running job
//
// Thread-safe: RPC threads call Submit/Get/List/Cancel/Subscribe while the
// worker runs. The manager owns the state machine's policy: every change it
// asks for goes through SetState (a store transition, checked by
// CheckTransition), what becomes of an interrupted job is RecoveryFor (the
// stores apply it), and every change, the store's own included (a claim, a
// recovery), reaches the observer through one place (Moved), so gauges kept
// by the observer cannot drift from the store.
//
// With a shared store (a fleet, store->lease_seconds() > 0) a lease thread
// also runs: it renews the running job's lease (every third of its term, at
// most every 2 s), picks up a cancel requested through another daemon, gives
// back jobs whose daemon's lease expired, and wakes log followers of jobs
// that other daemons run (their lines arrive through the store only). Every
// write for the running job carries its lease; once one is refused (Aborted:
// the job was taken over) the job is stopped, nothing more is written or
// published for it, and the observer hears OnLeaseLost.
//
// A store that fails (a full disk, a database server that is down) is loud,
// and nothing is stranded: each failed write is reported (OnStoreError), a
// job's final state is retried with backoff until it is stored or the daemon
// drains, serving() is false until the store takes writes again (the worker
// probes it), and the queue then goes on by itself.
//
// A job records the model and calibration set it was submitted against (the
// runner's Affinity); one claimed by a daemon that now serves another (a
// restart with another --model) fails with a message saying so, unrun.
//
// Log followers (Subscribe) are woken on the manager's own notifier thread:
// a new log line costs the worker one set insertion, however many follow.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "core/jobs/job.h"
#include "core/jobs/job_runner.h"
#include "core/jobs/job_store.h"

namespace autoquant {

// Told about every state change and progress step (metrics). Called on the
// thread that made the change; must not block or call back into the manager.
class JobObserver {
 public:
  virtual ~JobObserver() = default;
  virtual void OnSubmitted(const Job& job) {}
  virtual void OnStateChange(const Job& job, JobState from) {}
  virtual void OnProgress(const Job& job, const RunnerEvent& event) {}
  virtual void OnPhaseDone(const Job& job, Phase phase, double seconds) {}
  virtual void OnQueueDepth(int64_t queued) {}
  // This daemon lost the lease of a job it ran (fleet mode): `why` says who
  // holds the job now; the job's own log cannot be written by this daemon any
  // more, so this is where the daemon says so.
  virtual void OnLeaseLost(const Job& job, const absl::Status& why) {}
  // A write to the job store failed: `what` says which, `why` the store's
  // error. Every failure is reported; the manager retries what must not be
  // lost (a job's final state).
  virtual void OnStoreError(const std::string& what, const absl::Status& why) {}
  // The store took a write again after failing.
  virtual void OnStoreRecovered() {}
};

// The one policy for a job cut off mid-run (JobStore::RecoverInterrupted and RequeueExpired apply
// it): back to QUEUED while it has been started fewer than `max_attempts` times, or when its cancel
// was requested (its next run ends at once, cancelled, or keeps a scheme the cut-off run had already
// published, as a live cancel that came too late would); FAILED otherwise. The log line says why and
// which; a lease's expiry names the daemon that held it.
Recovery RecoveryFor(const Job& job, const Interruption& why, int max_attempts);
RecoveryPolicy RecoveryPolicyFor(int max_attempts);

struct JobManagerOptions {
  int max_attempts = 2;        // a job cut off mid-run is re-queued once, then failed
  int64_t max_queued = 10000;  // Submit fails ResourceExhausted beyond this
};

class JobManager {
 public:
  JobManager(JobStore* store, JobObserver* observer, JobManagerOptions options = {});
  ~JobManager();  // Drain()s if still running

  // Re-queues or fails jobs a previous process left RUNNING (logged in each
  // job). Call once before Start.
  absl::StatusOr<std::vector<Job>> Recover();
  // Starts the worker with this runner (not owned; must outlive the manager
  // or Drain). Before Start, Submit fails Unavailable.
  void Start(JobRunner* runner);
  // Stops taking jobs; a running job is cancelled and re-queued (its attempt
  // not counted); returns when the worker has stopped. Idempotent.
  void Drain();
  // Started, not draining, and the store takes writes.
  bool serving() const;

  // Checks the request's limits (request_limits.h: InvalidArgument naming the
  // field), validates, then stores. Unavailable before Start and while draining;
  // the runner's codes for a bad spec; AlreadyExists for a reused key with a
  // different spec; ResourceExhausted when the queue is full.
  absl::StatusOr<Job> Submit(const JobSpec& spec, const std::string& idempotency_key);
  // All specs validated first (a failure names the point); all stored or none.
  absl::StatusOr<std::pair<std::string, std::vector<Job>>> SubmitSweep(const std::vector<JobSpec>& specs,
                                                                       const std::string& idempotency_key);
  absl::StatusOr<Job> Get(const std::string& id);
  absl::StatusOr<JobPage> List(const JobListFilter& filter);
  // Queued: cancelled now. Running: the worker stops at its next check and
  // the job becomes CANCELLED; returned as still running with a message.
  // FailedPrecondition for a finished job.
  absl::StatusOr<Job> Cancel(const std::string& id);
  absl::StatusOr<std::vector<LogEntry>> ReadLogs(const std::string& id, int64_t after, int limit);

  // Calls `notify` (on the manager's notifier thread, never the worker's,
  // without locks held) after new log lines of job `id`; lines that arrive
  // while a call is pending share it. Returns a handle; the subscription ends
  // when the handle is destroyed.
  std::shared_ptr<void> Subscribe(const std::string& id, std::function<void()> notify);

  // 1-based place in the run order; 0 when not queued.
  absl::StatusOr<int> QueuePosition(const std::string& id);
  std::string running_job_id() const;
  absl::StatusOr<int64_t> queued_count();

 private:
  struct Running;
  absl::StatusOr<Job> SetState(const std::string& id, JobState to, const std::function<void(Job&)>& mutate,
                               const std::optional<LogEntry>& log, const Lease* lease = nullptr);
  absl::Status Log(const std::string& id, const std::string& level, const std::string& message,
                   std::optional<Phase> phase = std::nullopt, double progress = 0, const Lease* lease = nullptr);
  void Notify(const std::string& id);
  void NotifyAll();
  void NotifierLoop();
  // Reports a store call's outcome: a failure (when `what` is set) to the
  // observer, and whether the store is failing (`wrote`: the call wrote, so
  // its success proves the store takes writes again).
  void NoteStore(const absl::Status& s, const char* what, bool wrote = true);
  void PublishQueueDepth();
  void WorkerLoop();
  // One claimed job: run it (progress reported, publish gated by the lease), then store its end.
  void RunOne(Job job);
  class ProgressReporter;
  // Stops the running job when `s` says its lease was refused (Aborted).
  void Fenced(const absl::Status& s);
  // Waits `wait`; false when the daemon began draining meanwhile.
  bool WaitUnlessDraining(std::chrono::milliseconds wait);
  // The runner's publish gate: publishes only while the job's lease holds, waiting out a failing store.
  PublishGate LeaseGate(const std::string& id, const Lease& lease);
  // Moves the job to its end state (succeeded, re-queued at shutdown, cancelled or failed) with its line.
  absl::StatusOr<Job> RecordEnd(const Job& job, const Lease& lease, absl::StatusOr<JobResultInfo>& result,
                                double seconds, bool requeue);
  // RecordEnd, retried with backoff while the store fails, until stored or draining.
  void StoreEnd(const Job& job, const Lease& lease, absl::StatusOr<JobResultInfo> result, double seconds, bool requeue);
  void LeaseLoop();
  // The running job's lease was refused: stop the job, remember why (first reason wins).
  void LoseLease(const absl::Status& why);
  void ReportRequeued(const std::vector<Job>& jobs);
  // Every state change's effects beyond the store, in one place: the observer (and so the gauges), the
  // queue depth, the job's followers. SetState's own, and those the store made (a claim, a recovery).
  void Moved(const Job& job, JobState from, bool publish_depth = true);

  JobStore* store_;
  JobObserver* observer_;
  JobManagerOptions options_;
  JobRunner* runner_ = nullptr;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false;
  bool draining_ = false;
  bool wake_ = false;
  std::thread worker_;
  std::string affinity_;  // the runner's, recorded in submitted jobs and required of claimed ones
  std::string running_id_;
  Lease running_lease_;                     // guarded by mu_
  std::optional<absl::Status> lease_lost_;  // the running job's lease was refused (guarded by mu_)
  std::thread lease_thread_;
  std::condition_variable lease_cv_;
  bool lease_stop_ = false;  // guarded by mu_
  std::atomic<bool> cancel_running_{false};
  bool requeue_running_ = false;          // set by Drain: the running job goes back to the queue
  std::set<std::string> cancel_pending_;  // cancels of claimed jobs that were not yet running_id_ (guarded by mu_)

  std::atomic<bool> store_failing_{false};

  std::mutex sub_mu_;
  std::multimap<std::string, std::weak_ptr<std::function<void()>>> subscribers_;
  std::mutex notify_mu_;
  std::condition_variable notify_cv_;
  std::set<std::string> notify_pending_;  // jobs with new lines not yet told (guarded by notify_mu_)
  bool notify_all_ = false;               // guarded by notify_mu_
  bool notify_stop_ = false;              // guarded by notify_mu_
  std::thread notifier_;                  // last: started by the constructor, once the members above exist
};

}  // namespace autoquant

#include "core/jobs/job_manager.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/jobs/request_limits.h"
#include "core/util/crash_point.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace {

// Where each phase sits within a job's overall progress. A reused baseline
// skips calibrate and score, so progress jumps to search.
struct PhaseSpan {
  Phase phase;
  double begin, end;
};
constexpr PhaseSpan kSchemeSpans[] = {
    {Phase::kCalibrate, 0.00, 0.30},
    {Phase::kScore, 0.30, 0.65},
    {Phase::kSearch, 0.65, 0.67},
    {Phase::kExport, 0.67, 1.00},
};
constexpr PhaseSpan kEvaluatedSchemeSpans[] = {
    {Phase::kCalibrate, 0.00, 0.25}, {Phase::kScore, 0.25, 0.50},    {Phase::kSearch, 0.50, 0.52},
    {Phase::kExport, 0.52, 0.75},    {Phase::kEvaluate, 0.75, 1.00},
};
constexpr PhaseSpan kEvaluateSpans[] = {{Phase::kEvaluate, 0.00, 1.00}};

double JobProgress(const JobSpec& spec, Phase phase, double fraction) {
  auto in = [&](const auto& spans) {
    for (const auto& s : spans) {
      if (phase == s.phase) return s.begin + (s.end - s.begin) * std::clamp(fraction, 0.0, 1.0);
    }
    return 0.0;
  };
  if (spec.kind == JobKind::kEvaluate) return in(kEvaluateSpans);
  return spec.evaluate ? in(kEvaluatedSchemeSpans) : in(kSchemeSpans);
}

std::string StatusText(const absl::Status& s) {
  return absl::StrCat(absl::StatusCodeToString(s.code()), ": ", s.message());
}

// A store that cannot do what it is asked (a full disk, a server that is down,
// an I/O error), as opposed to one that refuses the request (NotFound,
// FailedPrecondition, AlreadyExists, Aborted: a fenced write).
bool IsStoreFailure(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDeadlineExceeded:
      return true;
    default:
      return false;
  }
}

// Waits between attempts to record a job's end in a failing store.
constexpr std::chrono::milliseconds kFirstStoreRetry{100};
constexpr std::chrono::milliseconds kLastStoreRetry{5000};

// "model M... with calibration set C..." for an affinity "MODEL_SHA256:CALIB_SHA256".
std::string DescribeAffinity(const std::string& affinity) {
  auto brief = [](const std::string& fp) { return fp.size() > 12 ? fp.substr(0, 12) + "..." : fp; };
  const size_t colon = affinity.find(':');
  if (colon == std::string::npos) return absl::StrCat("model ", brief(affinity));
  return absl::StrCat("model ", brief(affinity.substr(0, colon)), " with calibration set ",
                      brief(affinity.substr(colon + 1)));
}

// A job stored by a daemon that served another model or calibration set (one
// restarted since with another --model or --calib) is not run by this one.
absl::Status CheckSameModel(const Job& job, const std::string& ours) {
  if (job.affinity.empty() || ours.empty() || job.affinity == ours) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("this job was submitted against ", DescribeAffinity(job.affinity), ", but this daemon serves ",
                   DescribeAffinity(ours),
                   " (GetServerInfo shows its fingerprints); not run: resubmit it to run it "
                   "on this model"));
}

}  // namespace

JobManager::JobManager(JobStore* store, JobObserver* observer, JobManagerOptions options)
    : store_(store), observer_(observer), options_(options), notifier_([this] { NotifierLoop(); }) {}

JobManager::~JobManager() {
  Drain();
  {
    std::lock_guard<std::mutex> lock(notify_mu_);
    notify_stop_ = true;
  }
  notify_cv_.notify_all();
  notifier_.join();
}

bool JobManager::serving() const {
  std::lock_guard<std::mutex> lock(mu_);
  return started_ && !draining_ && !store_failing_;
}

void JobManager::NoteStore(const absl::Status& s, const char* what, bool wrote) {
  if (s.ok()) {
    if (wrote && store_failing_.exchange(false) && observer_) observer_->OnStoreRecovered();
    return;
  }
  if (!IsStoreFailure(s)) return;
  store_failing_ = true;
  if (what && observer_) observer_->OnStoreError(what, s);
}

std::string JobManager::running_job_id() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_id_;
}

absl::StatusOr<int64_t> JobManager::queued_count() {
  ASSIGN_OR_RETURN(auto counts, store_->CountByState());
  return counts[JobState::kQueued];
}

void JobManager::PublishQueueDepth() {
  if (!observer_) return;
  auto n = queued_count();
  if (n.ok()) observer_->OnQueueDepth(*n);
}

Recovery RecoveryFor(const Job& job, const Interruption& why, int max_attempts) {
  const std::string cause =
      why.lease_expired_seconds_ago
          ? absl::StrFormat(
                "the lease of daemon %s expired %.1f s ago while this job ran (attempt %d): it stopped "
                "renewing it (died, hung, or lost the database)",
                job.owner, *why.lease_expired_seconds_ago, job.attempts)
          : absl::StrCat("the daemon stopped while this job ran (attempt ", job.attempts, ")");
  Recovery r;
  if (job.attempts < max_attempts || job.cancel_requested) {
    r.to = JobState::kQueued;
    r.message = why.lease_expired_seconds_ago ? "re-queued after its daemon's lease expired"
                                              : "re-queued after the daemon restarted";
    r.log.level = "warning";
    r.log.message = absl::StrCat(cause, "; re-queued", job.cancel_requested ? " to finish its requested cancel" : "",
                                 " (its unpublished output is discarded; a scheme it had already published is "
                                 "verified and kept)");
  } else {
    r.to = JobState::kFailed;
    r.log.level = "error";
    r.log.message = absl::StrCat(cause, "; it has been started ", job.attempts,
                                 " times, so it failed instead of being re-queued again (resubmit to retry)");
    r.message = r.log.message;
  }
  return r;
}

RecoveryPolicy RecoveryPolicyFor(int max_attempts) {
  return [max_attempts](const Job& job, const Interruption& why) { return RecoveryFor(job, why, max_attempts); };
}

absl::StatusOr<std::vector<Job>> JobManager::Recover() {
  ASSIGN_OR_RETURN(std::vector<Job> changed, store_->RecoverInterrupted(RecoveryPolicyFor(options_.max_attempts)));
  ReportRequeued(changed);
  PublishQueueDepth();
  return changed;
}

void JobManager::Start(JobRunner* runner) {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) return;
  runner_ = runner;
  affinity_ = runner->Affinity();
  started_ = true;
  wake_ = true;
  worker_ = std::thread([this] { WorkerLoop(); });
  if (store_->lease_seconds() > 0) lease_thread_ = std::thread([this] { LeaseLoop(); });
}

void JobManager::Drain() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_ && !worker_.joinable() && !lease_thread_.joinable()) return;
    draining_ = true;
    if (!running_id_.empty()) {
      requeue_running_ = true;
      cancel_running_ = true;
    }
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  // Only now: the running job's lease must hold until the worker has re-queued it.
  {
    std::lock_guard<std::mutex> lock(mu_);
    lease_stop_ = true;
  }
  lease_cv_.notify_all();
  if (lease_thread_.joinable()) lease_thread_.join();
}

absl::StatusOr<Job> JobManager::SetState(const std::string& id, JobState to, const std::function<void(Job&)>& mutate,
                                         const std::optional<LogEntry>& log, const Lease* lease) {
  absl::StatusOr<Job> before = store_->Get(id);
  NoteStore(before.status(), "reading a job to change its state", false);
  if (!before.ok()) return before.status();
  absl::StatusOr<Job> after = store_->Transition(id, to, mutate, log, lease);
  NoteStore(after.status(), "recording a job's state");
  if (!after.ok()) return after.status();
  Moved(*after, before->state);
  return after;
}

void JobManager::Moved(const Job& job, JobState from, bool publish_depth) {
  if (observer_) observer_->OnStateChange(job, from);
  if (publish_depth) PublishQueueDepth();
  Notify(job.id);
}

absl::Status JobManager::Log(const std::string& id, const std::string& level, const std::string& message,
                             std::optional<Phase> phase, double progress, const Lease* lease) {
  LogEntry e;
  e.level = level;
  e.message = message;
  e.phase = phase;
  e.progress = progress;
  absl::Status s = store_->AppendLog(id, e, lease).status();
  NoteStore(s, "appending a line to a job's log");
  RETURN_IF_ERROR(s);
  Notify(id);
  return absl::OkStatus();
}

void JobManager::LoseLease(const absl::Status& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!lease_lost_) lease_lost_ = why;
  cancel_running_ = true;
}

void JobManager::ReportRequeued(const std::vector<Job>& jobs) {
  for (const Job& j : jobs) Moved(j, JobState::kRunning, /*publish_depth=*/false);
  if (!jobs.empty()) {
    PublishQueueDepth();
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  if (!jobs.empty()) cv_.notify_all();
}

void JobManager::LeaseLoop() {
  using namespace std::chrono;
  const auto beat = duration_cast<milliseconds>(duration<double>(std::clamp(store_->lease_seconds() / 3.0, 0.05, 2.0)));
  // Followers of a job another daemon runs learn of its new lines only by looking.
  const auto poll = std::min(beat, milliseconds(500));
  auto next_beat = steady_clock::now();
  while (true) {
    std::string id;
    Lease lease;
    {
      std::unique_lock<std::mutex> lock(mu_);
      lease_cv_.wait_until(lock, std::min(next_beat, steady_clock::now() + poll), [this] { return lease_stop_; });
      if (lease_stop_) return;
      id = running_id_;
      lease = running_lease_;
    }
    NotifyAll();
    if (steady_clock::now() < next_beat) continue;
    next_beat = steady_clock::now() + beat;
    if (!id.empty()) {
      absl::StatusOr<bool> cancel = store_->Heartbeat(id, lease);
      if (cancel.ok() && *cancel) {
        cancel_running_ = true;
      } else if (absl::IsAborted(cancel.status())) {
        LoseLease(cancel.status());
      }
      // Unavailable (the database is down): keep trying; if it stays down past the lease, another
      // daemon takes the job over and this one's writes are refused from then on.
    }
    auto requeued = store_->RequeueExpired(RecoveryPolicyFor(options_.max_attempts));
    if (requeued.ok()) ReportRequeued(*requeued);
  }
}

absl::StatusOr<Job> JobManager::Submit(const JobSpec& spec, const std::string& idempotency_key) {
  ASSIGN_OR_RETURN(auto r, SubmitSweep({spec}, idempotency_key));
  return r.second.front();
}

absl::StatusOr<std::pair<std::string, std::vector<Job>>> JobManager::SubmitSweep(const std::vector<JobSpec>& specs,
                                                                                 const std::string& key) {
  if (specs.empty()) return absl::InvalidArgumentError("a sweep needs at least one point");
  // Before anything else reads the request: every later step is linear in what passes.
  RETURN_IF_ERROR(CheckSubmitLimits(specs, key));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!started_) return absl::UnavailableError("the model is still loading; retry when health is SERVING");
    if (draining_) return absl::UnavailableError("the daemon is shutting down; submit to it after it restarts");
  }
  const bool sweep = specs.size() > 1;
  // A retried submit returns what the first one stored, even where validating it again would now fail
  // (the job already ran, so its scheme directory exists).
  if (!key.empty()) {
    std::vector<Job> replay;
    for (const JobSpec& spec : specs) {
      ASSIGN_OR_RETURN(std::optional<Job> j, store_->FindByKey(sweep ? absl::StrCat(key, "/", spec.scheme) : key));
      if (!j || !(j->spec == spec)) break;
      replay.push_back(*std::move(j));
    }
    if (replay.size() == specs.size()) return std::make_pair(replay.front().sweep_id, std::move(replay));
  }
  std::map<std::string, size_t> names;
  for (size_t i = 0; i < specs.size(); ++i) {
    // The request's own rules first (the same function the CLI and the engine apply), then what needs
    // the model and the disk.
    absl::Status s = specs[i].kind == JobKind::kScheme ? ValidateSchemeSpec(specs[i]) : absl::OkStatus();
    if (s.ok()) s = runner_->Validate(specs[i]);
    if (!s.ok()) {
      return sweep
                 ? absl::Status(s.code(), absl::StrCat("point ", i, " (scheme '", specs[i].scheme, "'): ", s.message()))
                 : s;
    }
    auto [it, fresh] = names.emplace(specs[i].scheme, i);
    if (!fresh) {
      return absl::InvalidArgumentError(absl::StrCat("points ", it->second, " and ", i, " both name scheme '",
                                                     specs[i].scheme, "'; each point needs its own scheme name"));
    }
  }
  ASSIGN_OR_RETURN(int64_t queued, queued_count());
  if (queued + static_cast<int64_t>(specs.size()) > options_.max_queued) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the queue is full (", queued, " jobs queued, limit ", options_.max_queued, "); retry later"));
  }
  const std::string sweep_id = sweep ? NewJobId("s-") : "";
  std::vector<Job> jobs;
  const int64_t now = NowMs();
  for (const JobSpec& spec : specs) {
    Job j;
    j.id = NewJobId();
    j.sweep_id = sweep_id;
    j.spec = spec;
    j.created_ms = now;
    j.affinity = affinity_;
    if (!key.empty()) j.idempotency_key = sweep ? absl::StrCat(key, "/", spec.scheme) : key;
    jobs.push_back(std::move(j));
  }
  std::vector<bool> created;
  absl::StatusOr<std::vector<Job>> inserted =
      store_->Insert(jobs, sweep ? absl::StrCat("queued (sweep ", sweep_id, ")") : "queued", &created);
  NoteStore(inserted.status(), "storing a submitted job",
            std::find(created.begin(), created.end(), true) != created.end());
  ASSIGN_OR_RETURN(std::vector<Job> stored, std::move(inserted));
  CrashPoint("submitted");
  std::string returned_sweep = sweep_id;
  for (size_t i = 0; i < stored.size(); ++i) {
    if (created[i] && observer_) observer_->OnSubmitted(stored[i]);
    if (!created[i] && sweep) returned_sweep = stored[i].sweep_id;
  }
  PublishQueueDepth();
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  cv_.notify_all();
  return std::make_pair(returned_sweep, std::move(stored));
}

absl::StatusOr<int> JobManager::QueuePosition(const std::string& id) { return store_->QueuePosition(id); }

absl::StatusOr<Job> JobManager::Get(const std::string& id) { return store_->Get(id); }

absl::StatusOr<JobPage> JobManager::List(const JobListFilter& filter) { return store_->List(filter); }

absl::StatusOr<std::vector<LogEntry>> JobManager::ReadLogs(const std::string& id, int64_t after, int limit) {
  return store_->ReadLogs(id, after, limit);
}

absl::StatusOr<Job> JobManager::Cancel(const std::string& id) {
  ASSIGN_OR_RETURN(Job j, store_->Get(id));
  if (IsTerminal(j.state)) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " has already finished (", JobStateName(j.state), "); nothing to cancel"));
  }
  if (j.state == JobState::kQueued) {
    LogEntry e;
    e.level = "info";
    e.message = "cancelled while queued";
    auto r = SetState(
        id, JobState::kCancelled, [](Job& j) { j.message = "cancelled by request"; }, e);
    if (r.ok() || r.status().code() != absl::StatusCode::kFailedPrecondition) return r;
    // The worker claimed it in between: cancel it as a running job.
    ASSIGN_OR_RETURN(j, store_->Get(id));
    if (IsTerminal(j.state)) return j;
  }
  RETURN_IF_ERROR(store_->RequestCancel(id));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (running_id_ == id) {
      cancel_running_ = true;
    } else {
      // Claimed by the worker (RUNNING in the store) but not yet its running job: the worker
      // picks this up when it starts the job, so the cancel is not lost.
      cancel_pending_.insert(id);
    }
  }
  RETURN_IF_ERROR(Log(id, "info",
                      store_->lease_seconds() > 0 && running_job_id() != id
                          ? "cancel requested; the daemon running it stops at its next heartbeat, then at the next "
                            "batch, group or shard"
                          : "cancel requested; stopping at the next batch, group or shard"));
  j.message = "cancelling";
  return j;
}

std::shared_ptr<void> JobManager::Subscribe(const std::string& id, std::function<void()> notify) {
  auto fn = std::make_shared<std::function<void()>>(std::move(notify));
  std::lock_guard<std::mutex> lock(sub_mu_);
  for (auto it = subscribers_.begin(); it != subscribers_.end();) {
    it = it->second.expired() ? subscribers_.erase(it) : std::next(it);
  }
  subscribers_.emplace(id, fn);
  return fn;
}

void JobManager::NotifyAll() {
  {
    std::lock_guard<std::mutex> lock(notify_mu_);
    notify_all_ = true;
  }
  notify_cv_.notify_one();
}

// The worker calls this for every line: it only marks the job. A follower
// reads the store when woken, so waking a thousand followers on the worker
// would cost every line a thousand reads there.
void JobManager::Notify(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(notify_mu_);
    notify_pending_.insert(id);
  }
  notify_cv_.notify_one();
}

void JobManager::NotifierLoop() {
  while (true) {
    std::set<std::string> ids;
    bool all = false;
    {
      std::unique_lock<std::mutex> lock(notify_mu_);
      notify_cv_.wait(lock, [this] { return notify_stop_ || notify_all_ || !notify_pending_.empty(); });
      if (notify_stop_ && !notify_all_ && notify_pending_.empty()) return;
      ids.swap(notify_pending_);
      std::swap(all, notify_all_);
    }
    std::vector<std::shared_ptr<std::function<void()>>> fns;
    {
      std::lock_guard<std::mutex> lock(sub_mu_);
      for (auto& [id, weak] : subscribers_) {
        if (!all && !ids.count(id)) continue;
        if (auto fn = weak.lock()) fns.push_back(std::move(fn));
      }
    }
    for (auto& fn : fns) (*fn)();
  }
}

void JobManager::WorkerLoop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(1), [this] { return wake_ || draining_; });
      if (draining_) return;
      wake_ = false;
    }
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (draining_) return;
      }
      if (store_failing_) {
        // With nothing else writing (an empty queue), this is how the store is seen to be back.
        absl::Status writable = store_->CheckWritable();
        NoteStore(writable, nullptr);
        if (!writable.ok()) break;
      }
      // Whoever looks for work first gives the jobs of dead daemons back to the queue.
      auto requeued = store_->RequeueExpired(RecoveryPolicyFor(options_.max_attempts));
      NoteStore(requeued.status(), "re-queueing the jobs of expired leases", requeued.ok() && !requeued->empty());
      if (requeued.ok()) ReportRequeued(*requeued);
      auto next = store_->ClaimNext(affinity_);
      NoteStore(next.status(), "claiming the next job", next.ok() && next->has_value());
      if (!next.ok() || !next->has_value()) break;
      Job job = std::move(**next);
      CrashPoint("claimed");
      {
        std::lock_guard<std::mutex> lock(mu_);
        running_id_ = job.id;
        running_lease_ = Lease{job.owner, job.lease_epoch};
        lease_lost_.reset();
        cancel_running_ = cancel_pending_.erase(job.id) > 0 || job.cancel_requested;
        cancel_pending_.clear();  // any other entry is a job that finished before its cancel arrived
        requeue_running_ = false;
      }
      Moved(job, JobState::kQueued);
      RunOne(std::move(job));
      std::lock_guard<std::mutex> lock(mu_);
      running_id_.clear();
    }
  }
}

// What the worker reports while the runner works on a job: each phase's end (timed, a log line), the
// job's progress in the store (a line per tenth of a phase, and every line with a message).
class JobManager::ProgressReporter {
 public:
  ProgressReporter(JobManager* m, Job* job, const Lease* lease) : m_(m), job_(job), lease_(lease) {}

  void OnEvent(const RunnerEvent& e) {
    CrashPoint(std::string(PhaseName(e.phase)));
    if (e.phase != phase_) {
      EndPhase();
      phase_ = e.phase;
      phase_start_ = Clock::now();
      decile_ = -1;
    }
    job_->phase = e.phase;
    job_->progress = JobProgress(job_->spec, e.phase, e.fraction);
    if (m_->observer_) m_->observer_->OnProgress(*job_, e);
    const int d = static_cast<int>(std::floor(e.fraction * 10));
    if (d == decile_ && e.message.empty()) return;
    decile_ = d;
    absl::Status progressed = m_->store_->UpdateProgress(job_->id, e.phase, job_->progress, lease_);
    m_->NoteStore(progressed, "recording a job's progress");
    m_->Fenced(progressed);
    std::string msg = absl::StrFormat("[%s] %3.0f%%", PhaseName(e.phase), e.fraction * 100);
    if (!e.message.empty()) absl::StrAppend(&msg, "  ", e.message);
    m_->Fenced(m_->Log(job_->id, e.warning ? "warning" : "info", msg, e.phase, job_->progress, lease_));
  }

  void EndPhase() {
    if (!phase_) return;
    const double secs = std::chrono::duration<double>(Clock::now() - phase_start_).count();
    if (m_->observer_) m_->observer_->OnPhaseDone(*job_, *phase_, secs);
    m_->Fenced(m_->Log(job_->id, "info", absl::StrFormat("%s done in %.2f s", PhaseName(*phase_), secs), phase_,
                       job_->progress, lease_));
  }

 private:
  using Clock = std::chrono::steady_clock;
  JobManager* m_;
  Job* job_;
  const Lease* lease_;
  std::optional<Phase> phase_;
  Clock::time_point phase_start_ = Clock::now();
  int decile_ = -1;
};

void JobManager::Fenced(const absl::Status& s) {
  // A refused write means the job was taken over: stop, and write nothing more for it.
  if (absl::IsAborted(s)) LoseLease(s);
}

bool JobManager::WaitUnlessDraining(std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lock(mu_);
  return !cv_.wait_for(lock, wait, [this] { return draining_; });
}

PublishGate JobManager::LeaseGate(const std::string& id, const Lease& lease) {
  return [this, id, lease](const std::function<absl::Status()>& publish) {
    // A store that cannot confirm the lease (a full disk, a database that is down) is waited out, as for
    // the job's end: the work is done, and failing the job now would throw it away. Only a refusal that
    // came before the publish ran is retried; a failed publish is the job's own failure.
    bool ran = false;
    auto publish_once = [&] {
      ran = true;
      return publish();
    };
    absl::Status s = store_->WhileLeaseHeld(id, lease, publish_once);
    for (auto wait = kFirstStoreRetry; !ran && IsStoreFailure(s); wait = std::min(2 * wait, kLastStoreRetry)) {
      NoteStore(s, "confirming the job's lease before publishing", false);
      if (!WaitUnlessDraining(wait)) break;
      s = store_->WhileLeaseHeld(id, lease, publish_once);
    }
    if (s.ok()) NoteStore(s, nullptr);
    Fenced(s);
    return s;
  };
}

absl::StatusOr<Job> JobManager::RecordEnd(const Job& job, const Lease& lease, absl::StatusOr<JobResultInfo>& result,
                                          double seconds, bool requeue) {
  LogEntry e;
  if (result.ok()) {
    result->metrics["job_seconds"] = seconds;
    e.level = "info";
    e.message = absl::StrFormat("succeeded: %s (%d of %d groups quantized, effective bits %.4f, baseline %s)",
                                result->output_dir, result->groups_quantized, result->groups_total,
                                result->effective_bits, result->baseline_reused ? "reused" : "computed");
    return SetState(
        job.id, JobState::kSucceeded,
        [&](Job& j) {
          j.result = *result;
          j.progress = 1;
          j.phase.reset();
          j.message = "";
        },
        e, &lease);
  }
  if (result.status().code() == absl::StatusCode::kCancelled && requeue) {
    e.level = "warning";
    e.message = "the daemon is shutting down: stopped at a safe point and re-queued (nothing was published)";
    return SetState(
        job.id, JobState::kQueued,
        [](Job& j) {
          j.attempts = std::max(0, j.attempts - 1);
          j.phase.reset();
          j.progress = 0;
          j.message = "re-queued at shutdown";
        },
        e, &lease);
  }
  if (result.status().code() == absl::StatusCode::kCancelled) {
    e.level = "info";
    e.message = "cancelled; nothing was published";
    return SetState(
        job.id, JobState::kCancelled,
        [](Job& j) {
          j.phase.reset();
          j.message = "cancelled by request";
        },
        e, &lease);
  }
  e.level = "error";
  e.message = absl::StrCat("failed: ", StatusText(result.status()));
  return SetState(
      job.id, JobState::kFailed, [&](Job& j) { j.message = StatusText(result.status()); }, e, &lease);
}

void JobManager::StoreEnd(const Job& job, const Lease& lease, absl::StatusOr<JobResultInfo> result, double seconds,
                          bool requeue) {
  // A store that cannot record the end (a full disk, a database that is down) is waited out: the job
  // stays this worker's, and the queue behind it waits, until the end is stored or the daemon drains.
  absl::StatusOr<Job> done = RecordEnd(job, lease, result, seconds, requeue);
  for (auto wait = kFirstStoreRetry; !done.ok() && IsStoreFailure(done.status());
       wait = std::min(2 * wait, kLastStoreRetry)) {
    if (!WaitUnlessDraining(wait)) break;
    done = RecordEnd(job, lease, result, seconds, requeue);
  }
  if (absl::IsAborted(done.status())) {
    // Taken over between the run's end and this write (the lease expired meanwhile).
    if (observer_) observer_->OnLeaseLost(job, done.status());
  } else if (!done.ok()) {
    // The store still refused the final state when the daemon was told to stop: leave the job RUNNING,
    // so the next start (or, in a fleet, the lease's expiry) re-queues it, rather than pretending it
    // finished.
    Log(job.id, "error", absl::StrCat("could not record the job's end: ", StatusText(done.status())), std::nullopt, 0,
        &lease)
        .IgnoreError();
  }
}

void JobManager::RunOne(Job job) {
  const auto job_start = std::chrono::steady_clock::now();
  // Every write for this job carries the claim's lease (ignored by a single-daemon store).
  const Lease lease{job.owner, job.lease_epoch};
  ProgressReporter progress(this, &job, &lease);
  RunnerEventFn on_event = [&](const RunnerEvent& e) { progress.OnEvent(e); };
  absl::Status same_model = CheckSameModel(job, affinity_);
  absl::StatusOr<JobResultInfo> result =
      same_model.ok() ? runner_->Run(job, on_event, &cancel_running_, LeaseGate(job.id, lease)) : same_model;
  progress.EndPhase();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - job_start).count();

  bool requeue = false;
  std::optional<absl::Status> lost;
  {
    std::lock_guard<std::mutex> lock(mu_);
    requeue = requeue_running_;
    lost = lease_lost_;
  }
  if (lost) {
    // Another daemon owns the job now; whatever this attempt did is not recorded (and was not published).
    if (observer_) observer_->OnLeaseLost(job, *lost);
    return;
  }
  StoreEnd(job, lease, std::move(result), secs, requeue);
}

}  // namespace autoquant

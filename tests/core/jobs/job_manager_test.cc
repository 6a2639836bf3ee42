#include "core/jobs/job_manager.h"

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"
#include "tests/scripted_runner.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using namespace std::chrono_literals;
using testing::ScriptedRunner;

class CountingObserver : public JobObserver {
 public:
  void OnStateChange(const Job& job, JobState from) override {
    std::lock_guard<std::mutex> lock(mu);
    ++changes[{from, job.state}];
  }
  void OnStoreError(const std::string& what, const absl::Status& why) override {
    EXPECT_EQ(why.code(), absl::StatusCode::kResourceExhausted) << what << ": " << why;
    ++store_errors;
  }
  void OnStoreRecovered() override { ++store_recovered; }
  std::mutex mu;
  std::map<std::pair<JobState, JobState>, int> changes;
  std::atomic<int> store_errors{0};
  std::atomic<int> store_recovered{0};
};

// A store whose disk fills on demand: while `full`, every write fails as the
// SQLite store's does on a full disk; reads still work.
class FullDiskStore : public JobStore {
 public:
  explicit FullDiskStore(JobStore* inner) : inner_(inner) {}
  std::atomic<bool> full{false};
  std::atomic<int> refused{0};
  std::atomic<int> transitions_refused{0};  // state changes refused (a job's end among them)

  absl::StatusOr<std::vector<Job>> Insert(const std::vector<Job>& jobs, const std::string& first_log,
                                          std::vector<bool>* created) override {
    RETURN_IF_ERROR(Write());
    return inner_->Insert(jobs, first_log, created);
  }
  absl::StatusOr<Job> Get(const std::string& id) override { return inner_->Get(id); }
  absl::StatusOr<std::optional<Job>> FindByKey(const std::string& key) override { return inner_->FindByKey(key); }
  absl::StatusOr<JobPage> List(const JobListFilter& f) override { return inner_->List(f); }
  absl::StatusOr<Job> Transition(const std::string& id, JobState to, const std::function<void(Job&)>& mutate,
                                 const std::optional<LogEntry>& log, const Lease* lease) override {
    if (full) ++transitions_refused;
    RETURN_IF_ERROR(Write());
    return inner_->Transition(id, to, mutate, log, lease);
  }
  absl::Status RequestCancel(const std::string& id) override {
    RETURN_IF_ERROR(Write());
    return inner_->RequestCancel(id);
  }
  absl::Status UpdateProgress(const std::string& id, Phase phase, double progress, const Lease* lease) override {
    RETURN_IF_ERROR(Write());
    return inner_->UpdateProgress(id, phase, progress, lease);
  }
  absl::StatusOr<std::optional<BlobRecord>> LookupBlob(const std::string& key) override {
    return inner_->LookupBlob(key);
  }
  absl::Status RecordBlob(const std::string& key, const BlobRecord& record) override {
    RETURN_IF_ERROR(Write());
    return inner_->RecordBlob(key, record);
  }
  absl::StatusOr<std::optional<Job>> ClaimNext(const std::string& affinity) override {
    RETURN_IF_ERROR(Write());
    return inner_->ClaimNext(affinity);
  }
  absl::StatusOr<int64_t> AppendLog(const std::string& id, const LogEntry& e, const Lease* lease) override {
    RETURN_IF_ERROR(Write());
    return inner_->AppendLog(id, e, lease);
  }
  absl::StatusOr<std::vector<LogEntry>> ReadLogs(const std::string& id, int64_t after, int limit) override {
    return inner_->ReadLogs(id, after, limit);
  }
  absl::StatusOr<int> QueuePosition(const std::string& id) override { return inner_->QueuePosition(id); }
  absl::StatusOr<std::map<JobState, int64_t>> CountByState() override { return inner_->CountByState(); }
  absl::StatusOr<std::vector<Job>> RecoverInterrupted(const RecoveryPolicy& policy) override {
    RETURN_IF_ERROR(Write());
    return inner_->RecoverInterrupted(policy);
  }
  absl::Status CheckWritable() override {
    RETURN_IF_ERROR(Write());
    return inner_->CheckWritable();
  }
  double lease_seconds() const override { return inner_->lease_seconds(); }
  absl::StatusOr<bool> Heartbeat(const std::string& id, const Lease& lease) override {
    return inner_->Heartbeat(id, lease);
  }
  absl::Status WhileLeaseHeld(const std::string& id, const Lease& lease,
                              const std::function<absl::Status()>& publish) override {
    return inner_->WhileLeaseHeld(id, lease, publish);
  }
  absl::StatusOr<std::vector<Job>> RequeueExpired(const RecoveryPolicy& policy) override {
    return inner_->RequeueExpired(policy);
  }

 private:
  absl::Status Write() {
    if (!full) return absl::OkStatus();
    ++refused;
    return absl::ResourceExhaustedError("the disk holding the job store /test/jobs.db is full: free space and retry");
  }
  JobStore* inner_;
};

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir();
    auto s = OpenJobStore("sqlite:" + (dir_ / "jobs.db").string());
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
    disk_ = std::make_unique<FullDiskStore>(store_.get());
    manager_ = std::make_unique<JobManager>(store_.get(), &observer_);
  }

  // The manager works on a store whose disk the test fills (disk_->full).
  void UseFullableDisk() { manager_ = std::make_unique<JobManager>(disk_.get(), &observer_); }

  template <typename F>
  bool Eventually(F condition) {
    for (int i = 0; i < 2000; ++i) {
      if (condition()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return condition();
  }

  JobSpec Spec(const std::string& scheme, int priority = 0) {
    JobSpec s;
    s.scheme = scheme;
    s.selection.coverage = 0.5;
    s.priority = priority;
    return s;
  }

  Job WaitTerminal(const std::string& id) {
    for (int i = 0; i < 2000; ++i) {
      auto j = manager_->Get(id);
      if (j.ok() && IsTerminal(j->state)) return *j;
      std::this_thread::sleep_for(5ms);
    }
    ADD_FAILURE() << "job " << id << " did not finish";
    return {};
  }

  std::filesystem::path dir_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<FullDiskStore> disk_;
  CountingObserver observer_;
  ScriptedRunner runner_;
  std::unique_ptr<JobManager> manager_;
};

// The one recovery policy, whichever store applies it (job_store_contract.h checks that both do).
TEST(RecoveryPolicyTest, RequeuedWhileStartsRemainThenFailedAndACancelAlwaysGoesBack) {
  Job j;
  j.owner = "daemon-a";
  struct Case {
    int attempts;
    bool cancel_requested;
    std::optional<double> lease_expired;
    JobState want;
    const char* says;
  };
  const Case kCases[] = {
      {1, false, std::nullopt, JobState::kQueued, "the daemon stopped while this job ran (attempt 1); re-queued"},
      {2, false, std::nullopt, JobState::kFailed, "started 2 times, so it failed"},
      {3, false, std::nullopt, JobState::kFailed, "resubmit to retry"},
      {2, true, std::nullopt, JobState::kQueued, "re-queued to finish its requested cancel"},
      {1, false, 1.5, JobState::kQueued, "the lease of daemon daemon-a expired 1.5 s ago"},
      {2, false, 1.5, JobState::kFailed, "the lease of daemon daemon-a expired"},
  };
  for (const Case& c : kCases) {
    j.attempts = c.attempts;
    j.cancel_requested = c.cancel_requested;
    const Recovery r = RecoveryFor(j, Interruption{.lease_expired_seconds_ago = c.lease_expired}, 2);
    EXPECT_EQ(r.to, c.want) << c.says;
    EXPECT_NE(r.log.message.find(c.says), std::string::npos) << r.log.message;
    EXPECT_EQ(r.log.level, c.want == JobState::kQueued ? "warning" : "error");
    EXPECT_FALSE(r.message.empty());
  }
}

TEST_F(JobManagerTest, SubmitBeforeStartIsUnavailable) {
  EXPECT_EQ(manager_->Submit(Spec("a"), "").status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(JobManagerTest, RunsJobsAndLogsPhasesToTheTerminalLine) {
  manager_->Start(&runner_);
  auto j = manager_->Submit(Spec("top10"), "");
  ASSERT_TRUE(j.ok()) << j.status();
  Job done = WaitTerminal(j->id);
  EXPECT_EQ(done.state, JobState::kSucceeded);
  EXPECT_DOUBLE_EQ(done.progress, 1.0);
  ASSERT_TRUE(done.result.has_value());
  EXPECT_EQ(done.result->output_dir, "/models/top10");
  auto logs = manager_->ReadLogs(j->id, 0, 1000);
  ASSERT_TRUE(logs.ok());
  for (size_t i = 0; i < logs->size(); ++i) EXPECT_EQ((*logs)[i].sequence, static_cast<int64_t>(i + 1));
  std::string all;
  for (const auto& l : *logs) absl::StrAppend(&all, l.message, "\n");
  EXPECT_NE(all.find("[calibrate]"), std::string::npos) << all;
  EXPECT_NE(all.find("export done in"), std::string::npos) << all;
  ASSERT_TRUE(logs->back().state.has_value());
  EXPECT_EQ(*logs->back().state, JobState::kSucceeded);
}

TEST_F(JobManagerTest, BadSpecIsRejectedAtSubmitAndNothingIsStored) {
  manager_->Start(&runner_);
  auto r = manager_->Submit(Spec("bad"), "");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  auto sweep = manager_->SubmitSweep({Spec("ok1"), Spec("bad")}, "");
  EXPECT_EQ(sweep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(sweep.status().message().find("point 1"), std::string::npos) << sweep.status();
  EXPECT_TRUE(manager_->List({})->jobs.empty());
}

// The spec's own rules (scheme_spec.h) are the manager's, whatever the runner: the scripted runner
// accepts all of these, the manager does not. An evaluation job carries no selection and passes.
TEST_F(JobManagerTest, TheOneSpecValidationRunsAtSubmitForEveryRunner) {
  manager_->Start(&runner_);
  JobSpec none = Spec("none");
  none.selection.coverage.reset();
  JobSpec two = Spec("two");
  two.selection.effective_bits = 12;
  JobSpec range = Spec("range");
  range.selection.coverage = 1.5;
  JobSpec steps = Spec("steps");
  steps.score_steps = -1;
  JobSpec batch = Spec("batch");
  batch.batch_size = -2;
  for (const auto& [spec, words] : std::vector<std::pair<JobSpec, std::string>>{{none, "no selection given"},
                                                                                {two, "more than one selection"},
                                                                                {range, "coverage 1.5"},
                                                                                {steps, "score_steps"},
                                                                                {batch, "batch_size"}}) {
    auto r = manager_->Submit(spec, "");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << spec.scheme;
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status();
  }
  EXPECT_TRUE(manager_->List({})->jobs.empty());
  JobSpec eval;
  eval.kind = JobKind::kEvaluate;
  eval.scheme = "evaluated";
  ASSERT_OK(manager_->Submit(eval, "").status());
}

TEST_F(JobManagerTest, SweepNamesMustBeDistinctAndKeysArePerPoint) {
  manager_->Start(&runner_);
  EXPECT_EQ(manager_->SubmitSweep({Spec("a"), Spec("a")}, "").status().code(), absl::StatusCode::kInvalidArgument);
  auto first = manager_->SubmitSweep({Spec("a"), Spec("b")}, "sweep-key");
  ASSERT_TRUE(first.ok());
  auto again = manager_->SubmitSweep({Spec("a"), Spec("b")}, "sweep-key");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(first->first, again->first);
  EXPECT_EQ(first->second[0].id, again->second[0].id);
  EXPECT_EQ(first->second[1].idempotency_key, "sweep-key/b");
  for (const auto& j : first->second) EXPECT_EQ(WaitTerminal(j.id).state, JobState::kSucceeded);
  EXPECT_EQ(manager_->List({})->jobs.size(), 2u);
}

TEST_F(JobManagerTest, FailureIsRecordedWithItsCode) {
  manager_->Start(&runner_);
  auto j = manager_->Submit(Spec("fails"), "");
  ASSERT_TRUE(j.ok());
  Job done = WaitTerminal(j->id);
  EXPECT_EQ(done.state, JobState::kFailed);
  EXPECT_NE(done.message.find("RESOURCE_EXHAUSTED"), std::string::npos) << done.message;
  // The worker goes on with the next job.
  auto next = manager_->Submit(Spec("after"), "");
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(WaitTerminal(next->id).state, JobState::kSucceeded);
}

TEST_F(JobManagerTest, CancelQueuedAndRunningJobs) {
  runner_.hold = true;
  manager_->Start(&runner_);
  auto running = manager_->Submit(Spec("running"), "");
  auto queued = manager_->Submit(Spec("queued"), "");
  ASSERT_TRUE(running.ok() && queued.ok());
  for (int i = 0; i < 1000 && manager_->running_job_id() != running->id; ++i) std::this_thread::sleep_for(2ms);
  ASSERT_EQ(manager_->running_job_id(), running->id);
  auto c1 = manager_->Cancel(queued->id);
  ASSERT_TRUE(c1.ok());
  EXPECT_EQ(c1->state, JobState::kCancelled);
  auto c2 = manager_->Cancel(running->id);
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(WaitTerminal(running->id).state, JobState::kCancelled);
  EXPECT_EQ(manager_->Cancel(running->id).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(runner_.ran, std::vector<std::string>{"running"});  // the cancelled queued job never ran
}

TEST_F(JobManagerTest, AcknowledgedCancelOfARunningJobIsKeptAcrossACrash) {
  // A previous process claimed the job (RUNNING in the store) and dies after this cancel is answered.
  Job j;
  j.id = NewJobId();
  j.spec = Spec("cut-off");
  std::vector<bool> created;
  ASSERT_TRUE(store_->Insert({j}, "queued", &created).ok());
  ASSERT_TRUE(store_->ClaimNext("").ok());
  auto c = manager_->Cancel(j.id);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->state, JobState::kRunning);
  manager_.reset();
  store_.reset();
  auto reopened = OpenJobStore("sqlite:" + (dir_ / "jobs.db").string());
  ASSERT_TRUE(reopened.ok());
  store_ = std::move(*reopened);
  manager_ = std::make_unique<JobManager>(store_.get(), &observer_);
  ASSERT_TRUE(manager_->Recover().ok());
  manager_->Start(&runner_);
  EXPECT_EQ(WaitTerminal(j.id).state, JobState::kCancelled);  // not run to completion
}

TEST_F(JobManagerTest, RetriedSubmitReturnsTheStoredJobEvenAfterItRan) {
  manager_->Start(&runner_);
  auto first = manager_->Submit(Spec("once"), "key-once");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(WaitTerminal(first->id).state, JobState::kSucceeded);
  runner_.exists.insert("once");  // its output now exists: a fresh submit would be refused
  auto retry = manager_->Submit(Spec("once"), "key-once");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->id, first->id);
  EXPECT_EQ(retry->state, JobState::kSucceeded);
  EXPECT_EQ(manager_->Submit(Spec("once"), "").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(manager_->Submit(Spec("once"), "other-key").status().code(), absl::StatusCode::kAlreadyExists);
  // The same key with another spec is still refused.
  JobSpec changed = Spec("once");
  changed.selection.coverage = 0.9;
  EXPECT_FALSE(manager_->Submit(changed, "key-once").ok());
  EXPECT_EQ(runner_.ran, std::vector<std::string>{"once"});
}

TEST_F(JobManagerTest, DrainRequeuesTheRunningJobWithoutCountingTheAttempt) {
  runner_.hold = true;
  manager_->Start(&runner_);
  auto j = manager_->Submit(Spec("long"), "");
  ASSERT_TRUE(j.ok());
  for (int i = 0; i < 1000 && manager_->running_job_id() != j->id; ++i) std::this_thread::sleep_for(2ms);
  manager_->Drain();
  auto after = manager_->Get(j->id);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->state, JobState::kQueued);
  EXPECT_EQ(after->attempts, 0);
  EXPECT_EQ(manager_->Submit(Spec("late"), "").status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(JobManagerTest, SubscribersHearNewLines) {
  runner_.hold = true;
  manager_->Start(&runner_);
  auto j = manager_->Submit(Spec("s"), "");
  ASSERT_TRUE(j.ok());
  std::atomic<int> calls{0};
  auto sub = manager_->Subscribe(j->id, [&] { ++calls; });
  runner_.hold = false;
  WaitTerminal(j->id);
  EXPECT_GT(calls.load(), 3);
  sub.reset();
  // A notification already being delivered when the handle went away may still land.
  std::this_thread::sleep_for(50ms);
  const int before = calls.load();
  auto k = manager_->Submit(Spec("t"), "");
  WaitTerminal(k->id);
  EXPECT_EQ(calls.load(), before);
}

TEST_F(JobManagerTest, ObserverSeesEveryTransition) {
  manager_->Start(&runner_);
  auto j = manager_->Submit(Spec("x"), "");
  WaitTerminal(j->id);
  // The observer hears of a change just after the store commits it.
  auto count = [&](JobState from, JobState to) {
    std::lock_guard<std::mutex> lock(observer_.mu);
    return observer_.changes[{from, to}];
  };
  for (int i = 0; i < 1000 && count(JobState::kRunning, JobState::kSucceeded) == 0; ++i) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(count(JobState::kQueued, JobState::kRunning), 1);
  EXPECT_EQ(count(JobState::kRunning, JobState::kSucceeded), 1);
}

TEST_F(JobManagerTest, FinalStateIsRetriedWhileTheDiskIsFullAndTheQueueResumesWhenSpaceReturns) {
  UseFullableDisk();
  runner_.hold = true;
  manager_->Start(&runner_);
  auto first = manager_->Submit(Spec("first"), "");
  auto second = manager_->Submit(Spec("second"), "");
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_TRUE(Eventually([&] { return manager_->running_job_id() == first->id; }));
  EXPECT_TRUE(manager_->serving());

  disk_->full = true;
  runner_.hold = false;  // the job's work ends; its progress and its end cannot be stored
  ASSERT_TRUE(Eventually([&] { return disk_->transitions_refused >= 3; }));  // the end, tried 3 times
  EXPECT_FALSE(manager_->serving());                                         // health NOT_SERVING
  EXPECT_GT(observer_.store_errors.load(), 3);                               // each failure reported (logged, counted)
  EXPECT_EQ(manager_->Get(first->id)->state, JobState::kRunning);            // still this worker's: retried
  EXPECT_EQ(manager_->running_job_id(), first->id);
  auto refused = manager_->Submit(Spec("third"), "");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(refused.status().message().find("is full"), std::string::npos) << refused.status();

  disk_->full = false;  // space returns: the end is recorded and the queue goes on, nobody restarts anything
  EXPECT_EQ(WaitTerminal(first->id).state, JobState::kSucceeded);
  EXPECT_EQ(WaitTerminal(second->id).state, JobState::kSucceeded);
  EXPECT_TRUE(manager_->serving());
  EXPECT_EQ(observer_.store_recovered.load(), 1);
  auto logs = manager_->ReadLogs(first->id, 0, 1000);
  ASSERT_TRUE(logs.ok());
  ASSERT_TRUE(logs->back().state.has_value());
  EXPECT_EQ(*logs->back().state, JobState::kSucceeded);
}

TEST_F(JobManagerTest, HealthReturnsWhenTheStoreTakesWritesAgainWithNothingQueued) {
  UseFullableDisk();
  manager_->Start(&runner_);
  disk_->full = true;
  EXPECT_EQ(manager_->Submit(Spec("a"), "").status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(manager_->serving());
  EXPECT_GE(observer_.store_errors.load(), 1);  // the refused submit (and perhaps a claim at that moment)
  disk_->full = false;
  // Nothing else writes: the worker's probe sees the store back.
  EXPECT_TRUE(Eventually([&] { return manager_->serving(); }));
  auto j = manager_->Submit(Spec("a"), "");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(WaitTerminal(j->id).state, JobState::kSucceeded);
}

TEST_F(JobManagerTest, DrainStopsRetryingAndLeavesTheJobToTheNextStart) {
  UseFullableDisk();
  runner_.hold = true;
  manager_->Start(&runner_);
  auto j = manager_->Submit(Spec("stuck"), "");
  ASSERT_TRUE(j.ok());
  ASSERT_TRUE(Eventually([&] { return manager_->running_job_id() == j->id; }));
  disk_->full = true;
  runner_.hold = false;
  ASSERT_TRUE(Eventually([&] { return disk_->transitions_refused >= 2; }));  // retrying the end
  manager_->Drain();                                           // returns although the store never took the end
  EXPECT_EQ(manager_->Get(j->id)->state, JobState::kRunning);  // re-queued by the next start's Recover
}

TEST_F(JobManagerTest, JobSubmittedAgainstAnotherModelFailsUnrunWithWhatToDo) {
  Job other;
  other.id = NewJobId();
  other.spec = Spec("other-model");
  other.affinity = "aaaaaaaaaaaaaaaaaaaa:cccccccccccccccccccc";
  Job same;
  same.id = NewJobId();
  same.spec = Spec("same-model");
  same.affinity = "bbbbbbbbbbbbbbbbbbbb:cccccccccccccccccccc";
  Job older;  // stored before jobs recorded their model: runs, as it did
  older.id = NewJobId();
  older.spec = Spec("older");
  std::vector<bool> created;
  ASSERT_TRUE(store_->Insert({other, same, older}, "queued", &created).ok());
  EXPECT_EQ(store_->Get(other.id)->affinity, other.affinity);  // the store keeps it

  runner_.affinity = same.affinity;  // the daemon restarted with another --model
  manager_->Start(&runner_);
  Job failed = WaitTerminal(other.id);
  EXPECT_EQ(failed.state, JobState::kFailed);
  EXPECT_NE(failed.message.find("submitted against model aaaaaaaaaaaa... with calibration set cccccccccccc..."),
            std::string::npos)
      << failed.message;
  EXPECT_NE(failed.message.find("this daemon serves model bbbbbbbbbbbb..."), std::string::npos) << failed.message;
  EXPECT_NE(failed.message.find("resubmit"), std::string::npos) << failed.message;
  EXPECT_EQ(WaitTerminal(same.id).state, JobState::kSucceeded);
  EXPECT_EQ(WaitTerminal(older.id).state, JobState::kSucceeded);
  EXPECT_EQ(runner_.ran, (std::vector<std::string>{"same-model", "older"}));
  // What is submitted now records this daemon's model.
  auto fresh = manager_->Submit(Spec("fresh"), "");
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(store_->Get(fresh->id)->affinity, same.affinity);
}

TEST_F(JobManagerTest, LogFollowersAreWokenOffTheWorkerThread) {
  runner_.hold = true;
  manager_->Start(&runner_);
  auto j = manager_->Submit(Spec("followed"), "");
  ASSERT_TRUE(j.ok());
  ASSERT_TRUE(Eventually([&] { return manager_->running_job_id() == j->id; }));
  ASSERT_TRUE(Eventually([&] { return runner_.run_thread.load() != std::thread::id(); }));
  const std::thread::id worker = runner_.run_thread;
  std::atomic<int> calls{0}, on_worker{0};
  std::vector<std::shared_ptr<void>> followers;
  for (int i = 0; i < 2000; ++i) {
    followers.push_back(manager_->Subscribe(j->id, [&] {
      ++calls;
      if (std::this_thread::get_id() == worker) ++on_worker;
    }));
  }
  runner_.hold = false;
  EXPECT_EQ(WaitTerminal(j->id).state, JobState::kSucceeded);
  EXPECT_TRUE(Eventually([&] { return calls >= 2000; }));  // every follower hears of the lines
  EXPECT_EQ(on_worker.load(), 0);                          // none of them at the worker's expense
  manager_.reset();  // joins the notifier: no call still in flight reaches the counters below after they are gone
}

}  // namespace
}  // namespace autoquant

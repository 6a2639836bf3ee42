#include "core/jobs/job_manager.h"

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
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
  std::mutex mu;
  std::map<std::pair<JobState, JobState>, int> changes;
};

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir();
    auto s = OpenJobStore("sqlite:" + (dir_ / "jobs.db").string());
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
    manager_ = std::make_unique<JobManager>(store_.get(), &observer_);
  }

  JobSpec Spec(const std::string& scheme, int priority = 0) {
    JobSpec s;
    s.scheme = scheme;
    s.coverage = 0.5;
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
  CountingObserver observer_;
  ScriptedRunner runner_;
  std::unique_ptr<JobManager> manager_;
};

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
  changed.coverage = 0.9;
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

}  // namespace
}  // namespace autoquant

// What every JobStore must do whatever it is built on, run by each store's own test
// (sqlite_job_store_test.cc, postgres_job_store_test.cc) so that both keep one state machine.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/jobs/job_manager.h"
#include "core/jobs/job_store.h"

namespace autoquant::testing {

// Every (from, to) pair of job states, through `store`: a new job is brought to `from` the way the
// daemon brings it there (insert; claim; a final transition), then asked to become `to`. The store
// must allow exactly what CheckTransition allows, refuse the rest with FailedPrecondition leaving
// the job as it was, and mark the log line of a terminal state with that state. `store` must hold no
// other queued job.
inline void ExpectEveryTransitionAsCheckTransitionSays(JobStore* store) {
  const JobState kAll[] = {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed,
                           JobState::kCancelled};
  for (JobState from : kAll) {
    for (JobState to : kAll) {
      const std::string what = absl::StrCat(JobStateName(from), " -> ", JobStateName(to));
      Job j;
      j.id = NewJobId();
      j.spec.scheme = absl::StrCat("t-", JobStateName(from), "-", JobStateName(to));
      j.spec.selection.coverage = 0.5;
      j.created_ms = NowMs();
      std::vector<bool> created;
      ASSERT_TRUE(store->Insert({j}, "queued", &created).ok()) << what;
      if (from != JobState::kQueued) {
        auto claimed = store->ClaimNext("");
        ASSERT_TRUE(claimed.ok() && claimed->has_value()) << what;
        ASSERT_EQ((*claimed)->id, j.id) << what;
      }
      if (IsTerminal(from)) {
        ASSERT_TRUE(store->Transition(j.id, from, nullptr, std::nullopt, nullptr).ok()) << what;
      }

      LogEntry line;
      line.message = what;
      absl::StatusOr<Job> moved = store->Transition(j.id, to, nullptr, line, nullptr);
      const bool allowed = CheckTransition(from, to).ok();
      EXPECT_EQ(moved.ok(), allowed) << what << ": " << moved.status();
      if (!allowed) {
        EXPECT_EQ(moved.status().code(), absl::StatusCode::kFailedPrecondition) << what;
      }
      auto now = store->Get(j.id);
      ASSERT_TRUE(now.ok()) << what;
      EXPECT_EQ(now->state, allowed ? to : from) << what;
      auto logs = store->ReadLogs(j.id, 0, 100);
      ASSERT_TRUE(logs.ok()) << what;
      if (allowed) {
        ASSERT_FALSE(logs->empty()) << what;
        EXPECT_EQ(logs->back().message, what);
        EXPECT_EQ(logs->back().state.has_value(), IsTerminal(to)) << what;
      } else {
        for (const auto& l : *logs) EXPECT_NE(l.message, what) << "a refused transition logged its line";
      }
      // Out of the queue, so that the next pair's claim finds its own job.
      if (!IsTerminal(now->state)) {
        ASSERT_TRUE(store->Transition(j.id, JobState::kCancelled, nullptr, std::nullopt, nullptr).ok()) << what;
      }
    }
  }
}

// The manager's recovery policy applied by the store: a job cut off on its first start goes back
// to the queue (phase and progress reset), on its `max_attempts`-th it fails; `interrupt` makes
// the store see the running job as cut off (a reopen, or an expired lease) and returns what the
// store's recovery changed.
inline void ExpectRecoveryAppliedAsThePolicySays(
    JobStore* store, const std::function<absl::StatusOr<std::vector<Job>>(const RecoveryPolicy&)>& interrupt) {
  Job j;
  j.id = NewJobId();
  j.spec.scheme = "recovered";
  j.spec.selection.coverage = 0.5;
  j.created_ms = NowMs();
  std::vector<bool> created;
  ASSERT_TRUE(store->Insert({j}, "queued", &created).ok());
  std::vector<Interruption> seen;
  const RecoveryPolicy policy = [&](const Job& job, const Interruption& why) {
    seen.push_back(why);
    return RecoveryFor(job, why, /*max_attempts=*/2);
  };
  for (int attempt = 1; attempt <= 2; ++attempt) {
    auto claimed = store->ClaimNext("");
    ASSERT_TRUE(claimed.ok() && claimed->has_value()) << "attempt " << attempt;
    const Lease lease{(*claimed)->owner, (*claimed)->lease_epoch};
    ASSERT_TRUE(store->UpdateProgress(j.id, Phase::kExport, 0.5, &lease).ok());
    auto changed = interrupt(policy);
    ASSERT_TRUE(changed.ok()) << changed.status();
    ASSERT_EQ(changed->size(), 1u) << "attempt " << attempt;
    const Job& after = changed->front();
    EXPECT_EQ(after.state, attempt == 1 ? JobState::kQueued : JobState::kFailed);
    if (attempt == 1) {
      EXPECT_FALSE(after.phase.has_value());
      EXPECT_EQ(after.progress, 0);
    }
    const Recovery want = RecoveryFor(**claimed, seen.back(), 2);
    EXPECT_EQ(after.message, want.message);
    auto logs = store->ReadLogs(j.id, 0, 100);
    ASSERT_TRUE(logs.ok());
    EXPECT_EQ(logs->back().message, want.log.message);
    EXPECT_EQ(logs->back().level, want.log.level);
  }
  EXPECT_EQ(seen.size(), 2u);
}

}  // namespace autoquant::testing

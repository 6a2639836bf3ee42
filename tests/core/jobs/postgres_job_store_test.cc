// The fleet's job store against a real PostgreSQL server (tests/pg_test_server.h),
// one fresh database per test. Two store instances stand for two daemons.
#include "core/jobs/postgres_job_store.h"

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/jobs/job_manager.h"
#include "tests/core/jobs/job_store_contract.h"
#include "tests/pg_test_server.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using namespace std::chrono_literals;

Job MakeJob(const std::string& scheme, const std::string& key = "", int priority = 0,
            const std::string& affinity = "") {
  Job j;
  j.id = NewJobId();
  j.spec.scheme = scheme;
  j.spec.selection.coverage = 0.5;
  j.spec.priority = priority;
  j.idempotency_key = key;
  j.affinity = affinity;
  j.created_ms = NowMs();
  return j;
}

class PostgresJobStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto s = testing::PgTestServer::Start();
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = s->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "the PostgreSQL test server did not start";
    auto url = server_->NewDatabase();
    ASSERT_TRUE(url.ok()) << url.status();
    url_ = *url;
    auto a = Open("daemon-a", 30);
    ASSERT_TRUE(a.ok()) << a.status();
    a_ = std::move(*a);
    auto b = Open("daemon-b", 30);
    ASSERT_TRUE(b.ok()) << b.status();
    b_ = std::move(*b);
  }

  absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& owner, double lease_seconds) {
    return OpenJobStore(url_, {.owner = owner, .lease_seconds = lease_seconds});
  }

  std::string Insert(JobStore* s, const Job& j) {
    std::vector<bool> created;
    auto r = s->Insert({j}, "queued", &created);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->front().id : "";
  }

  std::vector<std::string> LogMessages(JobStore* s, const std::string& id) {
    std::vector<std::string> out;
    auto logs = s->ReadLogs(id, 0, 1000);
    EXPECT_TRUE(logs.ok()) << logs.status();
    if (logs.ok()) {
      for (const auto& l : *logs) out.push_back(l.message);
    }
    return out;
  }

  static testing::PgTestServer* server_;
  std::string url_;
  std::unique_ptr<JobStore> a_, b_;
};

testing::PgTestServer* PostgresJobStoreTest::server_ = nullptr;

bool AnyContains(const std::vector<std::string>& lines, const std::string& needle) {
  for (const auto& l : lines) {
    if (l.find(needle) != std::string::npos) return true;
  }
  return false;
}

TEST_F(PostgresJobStoreTest, InsertGetListLogsAndCountsAreSharedByEveryDaemon) {
  const std::string id = Insert(a_.get(), MakeJob("top10"));
  auto got = b_->Get(id);  // the other daemon sees it at once
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->spec.scheme, "top10");
  EXPECT_EQ(got->state, JobState::kQueued);
  ASSERT_TRUE(got->spec.selection.coverage.has_value());
  EXPECT_DOUBLE_EQ(*got->spec.selection.coverage, 0.5);
  EXPECT_EQ(LogMessages(b_.get(), id), std::vector<std::string>{"queued"});
  EXPECT_EQ(b_->Get("nope").status().code(), absl::StatusCode::kNotFound);
  for (int i = 0; i < 4; ++i) Insert(b_.get(), MakeJob(absl::StrCat("s", i)));
  auto page = a_->List({.page_size = 3});
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->jobs.size(), 3u);
  EXPECT_EQ(page->jobs[0].id, id);  // submission order
  auto rest = a_->List({.page_size = 3, .after_seq = page->next_after_seq});
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(rest->jobs.size(), 2u);
  EXPECT_EQ(rest->next_after_seq, 0);
  auto counts = b_->CountByState();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ((*counts)[JobState::kQueued], 5);
  EXPECT_EQ((*counts)[JobState::kRunning], 0);
  EXPECT_GT(a_->lease_seconds(), 0);
}

TEST_F(PostgresJobStoreTest, ClaimOrderQueuePositionAndTransitions) {
  std::vector<bool> created;
  auto jobs = a_->Insert({MakeJob("low"), MakeJob("mid"), MakeJob("high", "", 5)}, "queued", &created);
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ(*b_->QueuePosition((*jobs)[2].id), 1);
  EXPECT_EQ(*b_->QueuePosition((*jobs)[0].id), 2);
  EXPECT_EQ(*b_->QueuePosition((*jobs)[1].id), 3);
  auto first = b_->ClaimNext("");
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->has_value());
  const Job& j = **first;
  EXPECT_EQ(j.spec.scheme, "high");
  EXPECT_EQ(j.state, JobState::kRunning);
  EXPECT_EQ(j.attempts, 1);
  EXPECT_EQ(j.owner, "daemon-b");
  EXPECT_EQ(j.lease_epoch, 1);
  EXPECT_GT(j.lease_expires_ms, NowMs());
  EXPECT_EQ(*b_->QueuePosition(j.id), 0);
  EXPECT_TRUE(AnyContains(LogMessages(a_.get(), j.id), "started (attempt 1) on daemon daemon-b"));
  const Lease lease{j.owner, j.lease_epoch};
  ASSERT_TRUE(b_->UpdateProgress(j.id, Phase::kScore, 0.4, &lease).ok());
  LogEntry done;
  done.message = "succeeded";
  auto finished = b_->Transition(
      j.id, JobState::kSucceeded, [](Job& j) { j.result.emplace().output_dir = "/models/high"; }, done, &lease);
  ASSERT_TRUE(finished.ok()) << finished.status();
  auto read = a_->Get(j.id);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->state, JobState::kSucceeded);
  ASSERT_TRUE(read->result.has_value());
  EXPECT_EQ(read->result->output_dir, "/models/high");
  EXPECT_EQ(read->lease_expires_ms, 0);  // the lease ends with the run
  auto logs = a_->ReadLogs(j.id, 0, 100);
  ASSERT_TRUE(logs.ok());
  ASSERT_TRUE(logs->back().state.has_value());
  EXPECT_EQ(*logs->back().state, JobState::kSucceeded);
  for (JobState to : {JobState::kQueued, JobState::kRunning, JobState::kFailed}) {
    EXPECT_EQ(a_->Transition(j.id, to, nullptr, std::nullopt, nullptr).status().code(),
              absl::StatusCode::kFailedPrecondition);
  }
}

TEST_F(PostgresJobStoreTest, IdempotencyKeysAreUniqueAcrossDaemons) {
  std::vector<bool> created;
  auto a = a_->Insert({MakeJob("top10", "k1")}, "queued", &created);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = b_->Insert({MakeJob("top10", "k1")}, "queued", &created);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(created, std::vector<bool>{false});
  EXPECT_EQ(a->front().id, b->front().id);
  auto found = b_->FindByKey("k1");
  ASSERT_TRUE(found.ok() && found->has_value()) << found.status();
  EXPECT_EQ((*found)->id, a->front().id);
  auto missing = b_->FindByKey("nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  auto c = b_->Insert({MakeJob("top20", "k1")}, "queued", &created);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(c.status().message().find("different request"), std::string::npos);

  // Sixteen racing submits of one key through two daemons make one job.
  std::vector<std::string> ids(16);
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      JobStore* s = i % 2 ? b_.get() : a_.get();
      std::vector<bool> made;
      auto r = s->Insert({MakeJob("raced", "k2")}, "queued", &made);
      if (r.ok()) ids[i] = r->front().id;
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& id : ids) EXPECT_EQ(id, ids[0]);
  EXPECT_FALSE(ids[0].empty());
  auto page = a_->List({.page_size = 100});
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->jobs.size(), 2u);
}

TEST_F(PostgresJobStoreTest, SkipLockedClaimsFromTwoDaemonsNeverReturnOneJobTwice) {
  std::vector<Job> batch;
  for (int i = 0; i < 60; ++i) batch.push_back(MakeJob(absl::StrCat("j", i)));
  std::vector<bool> created;
  ASSERT_TRUE(a_->Insert(batch, "queued", &created).ok());
  std::mutex mu;
  std::vector<std::string> claimed;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      JobStore* s = t % 2 ? b_.get() : a_.get();
      while (true) {
        auto next = s->ClaimNext("");
        ASSERT_TRUE(next.ok()) << next.status();
        if (!next->has_value()) return;
        std::lock_guard<std::mutex> lock(mu);
        claimed.push_back((*next)->id);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(claimed.size(), 60u);
  EXPECT_EQ(std::set<std::string>(claimed.begin(), claimed.end()).size(), 60u);
  auto counts = a_->CountByState();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ((*counts)[JobState::kRunning], 60);
}

TEST_F(PostgresJobStoreTest, ExpiredLeaseIsRequeuedAndTheLateOwnerIsFencedOut) {
  auto shortlived = Open("daemon-a", 0.3);
  ASSERT_TRUE(shortlived.ok()) << shortlived.status();
  const std::string id = Insert(a_.get(), MakeJob("top30"));
  auto claimed = (*shortlived)->ClaimNext("");
  ASSERT_TRUE(claimed.ok() && claimed->has_value());
  const Lease stale{(*claimed)->owner, (*claimed)->lease_epoch};
  // While the lease runs, nobody takes the job, and a restarting daemon leaves it alone.
  auto none = b_->ClaimNext("");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto recovered = b_->RecoverInterrupted(RecoveryPolicyFor(2));
  ASSERT_TRUE(recovered.ok());
  EXPECT_TRUE(recovered->empty());

  std::this_thread::sleep_for(500ms);  // daemon-a stops heartbeating: dead, hung or cut off
  // What daemon-b's manager does before each claim.
  auto requeued = b_->RequeueExpired(RecoveryPolicyFor(2));
  ASSERT_TRUE(requeued.ok()) << requeued.status();
  EXPECT_EQ(requeued->size(), 1u);
  auto retaken = b_->ClaimNext("");
  ASSERT_TRUE(retaken.ok()) << retaken.status();
  ASSERT_TRUE(retaken->has_value());
  EXPECT_EQ((*retaken)->id, id);
  EXPECT_EQ((*retaken)->owner, "daemon-b");
  EXPECT_EQ((*retaken)->attempts, 2);
  EXPECT_EQ((*retaken)->lease_epoch, stale.epoch + 1);
  const auto logs = LogMessages(a_.get(), id);
  EXPECT_TRUE(AnyContains(logs, "the lease of daemon daemon-a expired")) << ::testing::PrintToString(logs);
  EXPECT_TRUE(AnyContains(logs, "re-queued"));

  // The late owner wakes up: every write it tries is refused, and says who has the job now.
  JobStore* late = shortlived->get();
  absl::Status progress = late->UpdateProgress(id, Phase::kExport, 0.9, &stale);
  EXPECT_EQ(progress.code(), absl::StatusCode::kAborted) << progress;
  EXPECT_NE(progress.message().find("daemon-b"), std::string::npos) << progress;
  LogEntry line;
  line.message = "late line";
  EXPECT_EQ(late->AppendLog(id, line, &stale).status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(late->Transition(id, JobState::kSucceeded, nullptr, line, &stale).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(late->Heartbeat(id, stale).status().code(), absl::StatusCode::kAborted);
  bool published = false;
  absl::Status gate = late->WhileLeaseHeld(id, stale, [&] {
    published = true;
    return absl::OkStatus();
  });
  EXPECT_EQ(gate.code(), absl::StatusCode::kAborted) << gate;
  EXPECT_FALSE(published);
  EXPECT_FALSE(AnyContains(LogMessages(a_.get(), id), "late line"));
  auto now = a_->Get(id);
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->state, JobState::kRunning);
  EXPECT_EQ(now->owner, "daemon-b");
  EXPECT_DOUBLE_EQ(now->progress, 0);

  // The new owner's writes go through.
  const Lease fresh{(*retaken)->owner, (*retaken)->lease_epoch};
  EXPECT_TRUE(b_->UpdateProgress(id, Phase::kExport, 0.5, &fresh).ok());
  EXPECT_TRUE(b_->WhileLeaseHeld(id, fresh, [&] {
                  published = true;
                  return absl::OkStatus();
                }).ok());
  EXPECT_TRUE(published);
  EXPECT_TRUE(b_->Transition(id, JobState::kSucceeded, nullptr, line, &fresh).ok());
}

TEST_F(PostgresJobStoreTest, EveryTransitionIsAllowedExactlyAsCheckTransitionSays) {
  testing::ExpectEveryTransitionAsCheckTransitionSays(a_.get());
}

TEST_F(PostgresJobStoreTest, RecoveryIsAppliedAsTheManagersPolicySays) {
  auto shortlived = Open("daemon-a", 0.2);
  ASSERT_TRUE(shortlived.ok()) << shortlived.status();
  testing::ExpectRecoveryAppliedAsThePolicySays(shortlived->get(), [&](const RecoveryPolicy& policy) {
    std::this_thread::sleep_for(300ms);  // the lease expires: daemon-a stopped renewing it
    return b_->RecoverInterrupted(policy);
  });
}

TEST_F(PostgresJobStoreTest, AJobWhoseLeaseExpiresTooOftenFails) {
  auto shortlived = Open("daemon-a", 0.2);
  ASSERT_TRUE(shortlived.ok());
  const std::string id = Insert(a_.get(), MakeJob("doomed"));
  for (int attempt = 1; attempt <= 2; ++attempt) {
    ASSERT_TRUE((*shortlived)->RequeueExpired(RecoveryPolicyFor(2)).ok());
    auto c = (*shortlived)->ClaimNext("");
    ASSERT_TRUE(c.ok() && c->has_value()) << "attempt " << attempt;
    std::this_thread::sleep_for(300ms);
  }
  auto swept = b_->RequeueExpired(RecoveryPolicyFor(2));
  ASSERT_TRUE(swept.ok()) << swept.status();
  ASSERT_EQ(swept->size(), 1u);
  EXPECT_EQ(swept->front().state, JobState::kFailed);
  auto j = a_->Get(id);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->state, JobState::kFailed);
  EXPECT_NE(j->message.find("started 2 times"), std::string::npos) << j->message;
}

TEST_F(PostgresJobStoreTest, HeartbeatsKeepTheLeaseAndCarryCancelRequests) {
  auto shortlived = Open("daemon-a", 0.4);
  ASSERT_TRUE(shortlived.ok());
  const std::string id = Insert(a_.get(), MakeJob("long"));
  auto c = (*shortlived)->ClaimNext("");
  ASSERT_TRUE(c.ok() && c->has_value());
  const Lease lease{(*c)->owner, (*c)->lease_epoch};
  for (int i = 0; i < 10; ++i) {  // 1 s, over twice the lease
    auto beat = (*shortlived)->Heartbeat(id, lease);
    ASSERT_TRUE(beat.ok()) << beat.status();
    EXPECT_FALSE(*beat);
    auto other = b_->ClaimNext("");
    ASSERT_TRUE(other.ok());
    EXPECT_FALSE(other->has_value());
    std::this_thread::sleep_for(100ms);
  }
  // A cancel asked through another daemon reaches the owner at its next heartbeat.
  ASSERT_TRUE(b_->RequestCancel(id).ok());
  auto beat = (*shortlived)->Heartbeat(id, lease);
  ASSERT_TRUE(beat.ok());
  EXPECT_TRUE(*beat);
}

TEST_F(PostgresJobStoreTest, PublishGateHoldsTheRowSoNoRequeueHappensMidPublish) {
  auto shortlived = Open("daemon-a", 0.3);
  ASSERT_TRUE(shortlived.ok());
  const std::string id = Insert(a_.get(), MakeJob("gated"));
  auto c = (*shortlived)->ClaimNext("");
  ASSERT_TRUE(c.ok() && c->has_value());
  const Lease lease{(*c)->owner, (*c)->lease_epoch};
  std::vector<Job> swept_during;
  absl::Status gate = (*shortlived)->WhileLeaseHeld(id, lease, [&] {
    // The rename takes longer than the whole lease: the sweeper must still not take the job.
    std::this_thread::sleep_for(500ms);
    auto swept = b_->RequeueExpired(RecoveryPolicyFor(2));
    EXPECT_TRUE(swept.ok()) << swept.status();
    if (swept.ok()) swept_during = *swept;
    return absl::OkStatus();
  });
  EXPECT_TRUE(gate.ok()) << gate;
  EXPECT_TRUE(swept_during.empty());
  // And a publish that fails is reported as such, not as a lost lease.
  for (const Lease& forged : {Lease{"daemon-b", lease.epoch}, Lease{lease.owner, lease.epoch + 1}}) {
    absl::Status refused = b_->WhileLeaseHeld(id, forged, [] { return absl::AlreadyExistsError("exists"); });
    EXPECT_EQ(refused.code(), absl::StatusCode::kAborted) << refused;  // not the lease: refused before publishing
  }
  absl::Status own = (*shortlived)->WhileLeaseHeld(id, lease, [] { return absl::AlreadyExistsError("exists"); });
  EXPECT_EQ(own.code(), absl::StatusCode::kAlreadyExists) << own;
}

TEST_F(PostgresJobStoreTest, DaemonsClaimOnlyJobsForTheModelAndCalibrationSetTheyHold) {
  const std::string m1 = Insert(a_.get(), MakeJob("for-m1", "", 0, "model1:calib1"));
  const std::string m2 = Insert(a_.get(), MakeJob("for-m2", "", 0, "model2:calib1"));
  const std::string any = Insert(a_.get(), MakeJob("for-any"));
  std::set<std::string> got;
  while (true) {
    auto c = b_->ClaimNext("model2:calib1");
    ASSERT_TRUE(c.ok()) << c.status();
    if (!c->has_value()) break;
    got.insert((*c)->id);
  }
  EXPECT_EQ(got, (std::set<std::string>{m2, any}));
  auto j = a_->Get(m1);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->state, JobState::kQueued);
  EXPECT_EQ(j->affinity, "model1:calib1");
}

TEST_F(PostgresJobStoreTest, SchemaIsVersionedAndANewerOneIsRefused) {
  {
    pqxx::connection c(url_);
    pqxx::work w(c);
    EXPECT_EQ(w.exec("SELECT max(version) FROM autoquant_schema")[0][0].as<int>(), kPostgresSchemaVersion);
    w.exec("UPDATE autoquant_schema SET version = 99");
    w.commit();
  }
  auto s = Open("daemon-c", 30);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("newer than this autoquantd's"), std::string::npos) << s.status();
}

TEST_F(PostgresJobStoreTest, BlobRecordsAreSharedByEveryDaemonAndReplaced) {
  auto none = b_->LookupBlob("k1");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(a_->RecordBlob("k1", {"id-a", 100}).ok());
  auto seen = b_->LookupBlob("k1");
  ASSERT_TRUE(seen.ok() && seen->has_value()) << seen.status();
  EXPECT_EQ(**seen, (BlobRecord{"id-a", 100}));
  ASSERT_TRUE(b_->RecordBlob("k1", {"id-b", uint64_t{5} << 33}).ok());  // sizes past 32 bits
  auto replaced = a_->LookupBlob("k1");
  ASSERT_TRUE(replaced.ok() && replaced->has_value()) << replaced.status();
  EXPECT_EQ(**replaced, (BlobRecord{"id-b", uint64_t{5} << 33}));
}

TEST_F(PostgresJobStoreTest, Version1SchemaIsMigratedWithTheBlobRecords) {
  {
    pqxx::connection c(url_);
    pqxx::work w(c);
    w.exec("DROP TABLE autoquant_blobs");
    w.exec("UPDATE autoquant_schema SET version = 1");  // what a version-1 daemon created
    w.commit();
  }
  auto c_store = Open("daemon-c", 30);
  ASSERT_TRUE(c_store.ok()) << c_store.status();
  ASSERT_TRUE((*c_store)->RecordBlob("k", {"id", 1}).ok());
  auto k = a_->LookupBlob("k");
  ASSERT_TRUE(k.ok() && k->has_value()) << k.status();
  pqxx::connection c(url_);
  pqxx::work w(c);
  EXPECT_EQ(w.exec("SELECT max(version) FROM autoquant_schema")[0][0].as<int>(), 2);
}

TEST_F(PostgresJobStoreTest, CheckWritableWritesAndLeavesTheSchemaAsItWas) {
  EXPECT_TRUE(a_->CheckWritable().ok());
  EXPECT_TRUE(b_->CheckWritable().ok());  // two daemons probing at once do not conflict
  auto again = Open("daemon-c", 30);      // the schema row it rewrote still reads as this version
  EXPECT_TRUE(again.ok()) << again.status();
}

TEST_F(PostgresJobStoreTest, UnreachableServerIsUnavailableWithoutThePassword) {
  auto s = OpenJobStore(absl::StrCat("postgresql://autoquant:s3cret@127.0.0.1:1/none"), {.owner = "x"});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable) << s.status();
  EXPECT_EQ(s.status().message().find("s3cret"), std::string::npos) << s.status();
  EXPECT_NE(s.status().message().find("postgresql://autoquant:***@127.0.0.1:1/none"), std::string::npos) << s.status();
  EXPECT_EQ(OpenJobStore("mysql://x").status().code(), absl::StatusCode::kInvalidArgument);
}

// Two job managers (two daemons) with runners of their own over one store: every job runs once.
class CountingRunner : public JobRunner {
 public:
  absl::Status Validate(const JobSpec&) override { return absl::OkStatus(); }
  absl::StatusOr<JobResultInfo> Run(const Job& job, const RunnerEventFn& on_event, const std::atomic<bool>* cancel,
                                    const PublishGate& gate) override {
    for (int step = 0; step < 3; ++step) {
      if (cancel->load()) return absl::CancelledError("cancelled");
      on_event({Phase::kExport, (step + 1) / 3.0, "", false});
      std::this_thread::sleep_for(10ms);
    }
    absl::Status published = PublishThrough(gate, [&] {
      std::lock_guard<std::mutex> lock(mu);
      ++runs[job.spec.scheme];
      return absl::OkStatus();
    });
    if (!published.ok()) return published;
    JobResultInfo r;
    r.output_dir = "/models/" + job.spec.scheme;
    return r;
  }
  std::string Affinity() const override { return "m:c"; }
  std::mutex mu;
  std::map<std::string, int> runs;
};

TEST_F(PostgresJobStoreTest, TwoManagersOverOneStoreRunEveryJobExactlyOnce) {
  CountingRunner ra, rb;
  auto a = Open("daemon-a", 2);
  auto b = Open("daemon-b", 2);
  ASSERT_TRUE(a.ok() && b.ok());
  JobManager ma(a->get(), nullptr), mb(b->get(), nullptr);
  ma.Start(&ra);
  mb.Start(&rb);
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) {
    JobSpec spec;
    spec.scheme = absl::StrCat("s", i);
    spec.selection.coverage = 0.5;
    auto j = (i % 2 ? mb : ma).Submit(spec, "");
    ASSERT_TRUE(j.ok()) << j.status();
    EXPECT_EQ(j->affinity, "m:c");
    ids.push_back(j->id);
  }
  for (const auto& id : ids) {
    for (int i = 0; i < 1000; ++i) {
      auto j = mb.Get(id);
      if (j.ok() && IsTerminal(j->state)) break;
      std::this_thread::sleep_for(10ms);
    }
    auto j = ma.Get(id);
    ASSERT_TRUE(j.ok());
    EXPECT_EQ(j->state, JobState::kSucceeded) << j->message;
    EXPECT_EQ(j->attempts, 1);
  }
  ma.Drain();
  mb.Drain();
  std::map<std::string, int> runs = ra.runs;
  for (const auto& [scheme, n] : rb.runs) runs[scheme] += n;
  EXPECT_EQ(runs.size(), 10u);
  for (const auto& [scheme, n] : runs) EXPECT_EQ(n, 1) << scheme;
  EXPECT_FALSE(ra.runs.empty());  // both daemons took jobs
  EXPECT_FALSE(rb.runs.empty());
}

}  // namespace
}  // namespace autoquant

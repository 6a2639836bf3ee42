#include "core/jobs/sqlite_job_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>

#include <sqlite3.h>

#include "absl/strings/str_cat.h"

#include "core/jobs/job_manager.h"
#include "tests/core/jobs/job_store_contract.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {

Job MakeJob(const std::string& scheme, const std::string& key = "", int priority = 0) {
  Job j;
  j.id = NewJobId();
  j.spec.scheme = scheme;
  j.spec.selection.coverage = 0.5;
  j.spec.priority = priority;
  j.idempotency_key = key;
  j.created_ms = NowMs();
  return j;
}

class SqliteJobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir();
    auto s = OpenJobStore("sqlite:" + (dir_ / "jobs.db").string());
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  std::filesystem::path dir_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(SqliteJobStoreTest, InsertGetAndFirstLogLine) {
  std::vector<bool> created;
  auto jobs = store_->Insert({MakeJob("top10")}, "queued", &created);
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(created, std::vector<bool>{true});
  auto got = store_->Get(jobs->front().id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->spec.scheme, "top10");
  EXPECT_EQ(got->state, JobState::kQueued);
  ASSERT_TRUE(got->spec.selection.coverage.has_value());
  EXPECT_DOUBLE_EQ(*got->spec.selection.coverage, 0.5);
  auto logs = store_->ReadLogs(got->id, 0, 10);
  ASSERT_TRUE(logs.ok());
  ASSERT_EQ(logs->size(), 1u);
  EXPECT_EQ(logs->front().sequence, 1);
  EXPECT_EQ(logs->front().message, "queued");
  EXPECT_EQ(store_->Get("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SqliteJobStoreTest, IdempotencyKeyReturnsSameJobOrRefusesDifferentSpec) {
  std::vector<bool> created;
  auto a = store_->Insert({MakeJob("top10", "k1")}, "queued", &created);
  ASSERT_TRUE(a.ok());
  auto b = store_->Insert({MakeJob("top10", "k1")}, "queued", &created);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(created, std::vector<bool>{false});
  EXPECT_EQ(a->front().id, b->front().id);
  auto c = store_->Insert({MakeJob("top20", "k1")}, "queued", &created);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(c.status().message().find("different request"), std::string::npos);
}

TEST_F(SqliteJobStoreTest, RacingInsertsWithOneKeyMakeOneJob) {
  // Two connections to one file, as two RPC threads of one daemon or two daemons would race.
  auto other = OpenJobStore("sqlite:" + (dir_ / "jobs.db").string());
  ASSERT_TRUE(other.ok());
  std::vector<std::string> ids(16);
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      JobStore* s = i % 2 ? other->get() : store_.get();
      std::vector<bool> created;
      auto r = s->Insert({MakeJob("same", "race")}, "queued", &created);
      if (r.ok()) ids[i] = r->front().id;
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& id : ids) EXPECT_EQ(id, ids[0]);
  auto page = store_->List({});
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->jobs.size(), 1u);
}

TEST_F(SqliteJobStoreTest, BatchWithConflictingKeyInsertsNothing) {
  std::vector<bool> created;
  ASSERT_TRUE(store_->Insert({MakeJob("a", "k/a")}, "queued", &created).ok());
  auto r = store_->Insert({MakeJob("b", "k/b"), MakeJob("other", "k/a")}, "queued", &created);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists);
  auto page = store_->List({});
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->jobs.size(), 1u);
}

TEST_F(SqliteJobStoreTest, ClaimOrderIsPriorityThenSubmission) {
  std::vector<bool> created;
  auto jobs = store_->Insert({MakeJob("first"), MakeJob("second"), MakeJob("urgent", "", 5)}, "", &created);
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ(*store_->QueuePosition((*jobs)[2].id), 1);
  EXPECT_EQ(*store_->QueuePosition((*jobs)[0].id), 2);
  EXPECT_EQ(*store_->QueuePosition((*jobs)[1].id), 3);
  std::vector<std::string> order;
  while (true) {
    auto next = store_->ClaimNext("");
    ASSERT_TRUE(next.ok());
    if (!next->has_value()) break;
    EXPECT_EQ((*next)->state, JobState::kRunning);
    EXPECT_EQ((*next)->attempts, 1);
    order.push_back((*next)->spec.scheme);
  }
  EXPECT_EQ(order, (std::vector<std::string>{"urgent", "first", "second"}));
  EXPECT_EQ(*store_->QueuePosition((*jobs)[0].id), 0);
}

TEST_F(SqliteJobStoreTest, TerminalStatesNeverChange) {
  std::vector<bool> created;
  auto jobs = store_->Insert({MakeJob("a")}, "", &created);
  ASSERT_TRUE(jobs.ok());
  const std::string id = jobs->front().id;
  ASSERT_TRUE(store_->ClaimNext("").ok());
  LogEntry done;
  done.message = "finished";
  auto j = store_->Transition(id, JobState::kSucceeded, nullptr, done, nullptr);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_GT(j->finished_ms, 0);
  for (JobState to :
       {JobState::kQueued, JobState::kRunning, JobState::kFailed, JobState::kCancelled, JobState::kSucceeded}) {
    EXPECT_EQ(store_->Transition(id, to, nullptr, std::nullopt, nullptr).status().code(),
              absl::StatusCode::kFailedPrecondition);
  }
  auto logs = store_->ReadLogs(id, 0, 100);
  ASSERT_TRUE(logs.ok());
  ASSERT_FALSE(logs->empty());
  ASSERT_TRUE(logs->back().state.has_value());  // the terminal line carries the state
  EXPECT_EQ(*logs->back().state, JobState::kSucceeded);
}

TEST_F(SqliteJobStoreTest, EveryTransitionIsAllowedExactlyAsCheckTransitionSays) {
  testing::ExpectEveryTransitionAsCheckTransitionSays(store_.get());
}

TEST_F(SqliteJobStoreTest, RecoveryIsAppliedAsTheManagersPolicySays) {
  testing::ExpectRecoveryAppliedAsThePolicySays(
      store_.get(), [&](const RecoveryPolicy& policy) { return store_->RecoverInterrupted(policy); });
}

TEST_F(SqliteJobStoreTest, SurvivesReopenAndRecoversInterruptedJobsOnceThenFails) {
  std::vector<bool> created;
  auto jobs = store_->Insert({MakeJob("a"), MakeJob("b")}, "queued", &created);
  ASSERT_TRUE(jobs.ok());
  ASSERT_TRUE(store_->ClaimNext("").ok());  // "a" running when the process dies
  store_.reset();
  auto reopened = OpenJobStore("sqlite:" + (dir_ / "jobs.db").string());
  ASSERT_TRUE(reopened.ok());
  auto changed = (*reopened)->RecoverInterrupted(RecoveryPolicyFor(2));
  ASSERT_TRUE(changed.ok());
  ASSERT_EQ(changed->size(), 1u);
  EXPECT_EQ(changed->front().state, JobState::kQueued);
  EXPECT_EQ((*reopened)->Get((*jobs)[1].id)->state, JobState::kQueued);
  // Claimed again (attempt 2) and cut off again: now it fails instead.
  auto again = (*reopened)->ClaimNext("");
  ASSERT_TRUE(again.ok() && again->has_value());
  EXPECT_EQ((*again)->attempts, 2);
  changed = (*reopened)->RecoverInterrupted(RecoveryPolicyFor(2));
  ASSERT_TRUE(changed.ok());
  ASSERT_EQ(changed->size(), 1u);
  EXPECT_EQ(changed->front().state, JobState::kFailed);
  EXPECT_NE(changed->front().message.find("resubmit"), std::string::npos);
}

TEST_F(SqliteJobStoreTest, CancelRequestOfARunningJobSurvivesReopenAndIsFinishedNotFailed) {
  std::vector<bool> created;
  auto jobs = store_->Insert({MakeJob("a"), MakeJob("b")}, "queued", &created);
  ASSERT_TRUE(jobs.ok());
  const std::string a = (*jobs)[0].id, b = (*jobs)[1].id;
  ASSERT_TRUE(store_->ClaimNext("").ok());
  ASSERT_TRUE(store_->RequestCancel(a).ok());
  ASSERT_TRUE(store_->RequestCancel(b).ok());  // queued: not a running job's request, ignored
  EXPECT_FALSE(store_->Get(b)->cancel_requested);
  store_.reset();
  auto reopened = OpenJobStore("sqlite:" + (dir_ / "jobs.db").string());
  ASSERT_TRUE(reopened.ok());
  EXPECT_TRUE((*reopened)->Get(a)->cancel_requested);
  // Attempts exhausted (max 1), yet the job goes back to the queue: its next run only finishes the cancel.
  auto changed = (*reopened)->RecoverInterrupted(RecoveryPolicyFor(1));
  ASSERT_TRUE(changed.ok());
  ASSERT_EQ(changed->size(), 1u);
  EXPECT_EQ(changed->front().state, JobState::kQueued);
  EXPECT_TRUE(changed->front().cancel_requested);
  auto again = (*reopened)->ClaimNext("");
  ASSERT_TRUE(again.ok() && again->has_value());
  EXPECT_EQ((*again)->id, a);
  EXPECT_TRUE((*again)->cancel_requested);
}

TEST_F(SqliteJobStoreTest, Version1StoreIsMigratedKeepingItsJobs) {
  const std::filesystem::path path = dir_ / "v1.db";
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    // The version-1 layout: jobs without cancel_requested.
    const char* v1 =
        "CREATE TABLE jobs(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, idempotency_key TEXT "
        "UNIQUE, sweep_id TEXT NOT NULL DEFAULT '', spec TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0, state "
        "TEXT NOT NULL, phase TEXT NOT NULL DEFAULT '', progress REAL NOT NULL DEFAULT 0, message TEXT NOT NULL "
        "DEFAULT '', created_ms INTEGER NOT NULL DEFAULT 0, started_ms INTEGER NOT NULL DEFAULT 0, finished_ms "
        "INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, result TEXT);"
        "PRAGMA user_version=1;";
    ASSERT_EQ(sqlite3_exec(db, v1, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    const std::string insert = absl::StrCat("INSERT INTO jobs(id, spec, state) VALUES('j-old', '",
                                            MakeJob("old").spec.ToJson().dump(), "', 'running');");
    ASSERT_EQ(sqlite3_exec(db, insert.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  auto store = OpenJobStore("sqlite:" + path.string());
  ASSERT_TRUE(store.ok()) << store.status();
  auto old = (*store)->Get("j-old");
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->spec.scheme, "old");
  EXPECT_FALSE(old->cancel_requested);
  EXPECT_EQ(old->affinity, "");  // stored before jobs recorded their model: runs on any
  ASSERT_TRUE((*store)->RequestCancel("j-old").ok());
  EXPECT_TRUE((*store)->Get("j-old")->cancel_requested);
  store->reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), kJobStoreSchemaVersion);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST_F(SqliteJobStoreTest, BlobRecordsAreKeptReplacedAndSurviveReopen) {
  auto none = store_->LookupBlob("k1");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(store_->RecordBlob("k1", {"id-a", 100}).ok());
  ASSERT_TRUE(store_->RecordBlob("k2", {"id-b", 200}).ok());
  // A blob produced again (removed by gc, or found damaged) replaces the record.
  ASSERT_TRUE(store_->RecordBlob("k1", {"id-c", 300}).ok());
  store_.reset();
  auto reopened = OpenJobStore("sqlite:" + (dir_ / "jobs.db").string());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  auto k1 = (*reopened)->LookupBlob("k1");
  ASSERT_TRUE(k1.ok() && k1->has_value()) << k1.status();
  EXPECT_EQ(**k1, (BlobRecord{"id-c", 300}));
  auto k2 = (*reopened)->LookupBlob("k2");
  ASSERT_TRUE(k2.ok() && k2->has_value()) << k2.status();
  EXPECT_EQ(**k2, (BlobRecord{"id-b", 200}));
}

TEST_F(SqliteJobStoreTest, Version3StoreGainsTheBlobRecordsKeepingItsJobs) {
  std::vector<bool> created;
  ASSERT_TRUE(store_->Insert({MakeJob("kept")}, "queued", &created).ok());
  store_.reset();
  const std::filesystem::path path = dir_ / "jobs.db";
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "DROP TABLE blobs; PRAGMA user_version=3;", nullptr, nullptr, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  auto store = OpenJobStore("sqlite:" + path.string());
  ASSERT_TRUE(store.ok()) << store.status();
  auto page = (*store)->List({});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->jobs.size(), 1u);
  EXPECT_EQ(page->jobs[0].spec.scheme, "kept");
  ASSERT_TRUE((*store)->RecordBlob("k", {"id", 1}).ok());
  auto k = (*store)->LookupBlob("k");
  ASSERT_TRUE(k.ok() && k->has_value());
  store->reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), 4);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST_F(SqliteJobStoreTest, ListPagesInSubmissionOrderAndFilters) {
  std::vector<bool> created;
  std::vector<Job> in;
  for (int i = 0; i < 5; ++i) in.push_back(MakeJob("s" + std::to_string(i)));
  ASSERT_TRUE(store_->Insert(in, "", &created).ok());
  ASSERT_TRUE(store_->ClaimNext("").ok());
  JobListFilter f;
  f.page_size = 2;
  std::vector<std::string> seen;
  while (true) {
    auto page = store_->List(f);
    ASSERT_TRUE(page.ok());
    for (const auto& j : page->jobs) seen.push_back(j.spec.scheme);
    if (page->next_after_seq == 0) break;
    f.after_seq = page->next_after_seq;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"s0", "s1", "s2", "s3", "s4"}));
  JobListFilter running;
  running.states = {JobState::kRunning};
  auto page = store_->List(running);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->jobs.size(), 1u);
  EXPECT_EQ(page->jobs.front().spec.scheme, "s0");
}

TEST_F(SqliteJobStoreTest, CorruptDatabaseIsReportedNotOverwritten) {
  const auto path = dir_ / "garbage.db";
  {
    std::ofstream f(path, std::ios::binary);
    f << std::string(8192, 'x');
  }
  auto s = OpenJobStore("sqlite:" + path.string());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  std::ifstream f(path, std::ios::binary);
  std::string content((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, std::string(8192, 'x'));
}

TEST_F(SqliteJobStoreTest, EmptyOrForeignFileIsRefusedNotTakenForANewStore) {
  for (const std::string& content : {std::string(), std::string("hello"), std::string(4096, '\0')}) {
    const auto path = dir_ / "not-a-store.db";
    {
      std::ofstream f(path, std::ios::binary | std::ios::trunc);
      f << content;
    }
    auto s = OpenJobStore("sqlite:" + path.string());
    ASSERT_FALSE(s.ok()) << "a file of " << content.size() << " bytes was taken for a job store";
    EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
    EXPECT_NE(s.status().message().find(path.string()), std::string::npos) << s.status();
    EXPECT_NE(s.status().message().find(content.empty() ? "empty file" : "not a readable SQLite database"),
              std::string::npos)
        << s.status();
    EXPECT_NE(s.status().message().find("move it aside"), std::string::npos) << s.status();
    EXPECT_EQ(std::filesystem::file_size(path), content.size());  // left as it was
  }
}

TEST_F(SqliteJobStoreTest, MissingFileIsCreatedWholeWithNothingLeftBeside) {
  const auto sub = dir_ / "fresh";
  auto s = OpenJobStore("sqlite:" + (sub / "jobs.db").string());
  ASSERT_TRUE(s.ok()) << s.status();
  std::vector<bool> created;
  ASSERT_TRUE((*s)->Insert({MakeJob("a")}, "", &created).ok());
  s->reset();
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(sub)) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"jobs.db"});
  auto again = OpenJobStore("sqlite:" + (sub / "jobs.db").string());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->List({})->jobs.size(), 1u);
}

TEST_F(SqliteJobStoreTest, FullDiskIsResourceExhaustedNamingTheStoreAndLeavesItUsable) {
  const auto path = dir_ / "small.db";
  ASSERT_TRUE(OpenSqliteJobStore(path).ok());                   // made at its normal size
  auto s = OpenSqliteJobStore(path, /*max_pages_for_test=*/1);  // then no page more: SQLITE_FULL, as a full disk
  ASSERT_TRUE(s.ok()) << s.status();
  Job big = MakeJob("big");
  for (int i = 0; i < 200; ++i)
    big.spec.selection.disabled_layers.push_back(std::string(1000, static_cast<char>('a' + i % 26)));
  std::vector<bool> created;
  auto r = (*s)->Insert({big}, "queued", &created);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_NE(r.status().message().find("the disk holding the job store " + path.string() + " is full"),
            std::string::npos)
      << r.status();
  EXPECT_EQ((*s)->CheckWritable().code(), absl::StatusCode::kOk);  // a write that needs no new page
  EXPECT_TRUE((*s)->List({})->jobs.empty());                       // rolled back whole
  s->reset();
  auto roomy = OpenSqliteJobStore(path);  // space returns
  ASSERT_TRUE(roomy.ok()) << roomy.status();
  EXPECT_TRUE((*roomy)->Insert({big}, "queued", &created).ok());
}

// Another process holds SQLite's write lock (a second writer, a backup, a slow disk): a write of
// ours waits in the busy timeout, and reads, which status, list and log streaming make, still answer
// at once instead of queueing behind that write.
TEST_F(SqliteJobStoreTest, ReadsAnswerWhileAWriteWaitsForTheLock) {
  std::vector<bool> created;
  auto jobs = store_->Insert({MakeJob("top10")}, "queued", &created);
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  const std::string id = jobs->front().id;

  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "jobs.db").c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  std::atomic<bool> written{false};
  absl::Status write_status;
  std::thread writer([&] {
    LogEntry e;
    e.level = "info";
    e.message = "written after the lock went";
    e.time_ms = NowMs();
    write_status = store_->AppendLog(id, e, nullptr).status();
    written = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the write now waits for the lock
  ASSERT_FALSE(written) << "the write should wait while another connection holds the lock";

  const auto t0 = std::chrono::steady_clock::now();
  auto got = store_->Get(id);
  auto page = store_->List(JobListFilter{});
  auto logs = store_->ReadLogs(id, 0, 10);
  auto counts = store_->CountByState();
  auto position = store_->QueuePosition(id);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_FALSE(written) << "the reads above ran while the write still waited";
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  writer.join();

  EXPECT_LT(seconds, 2.0) << "reads waited behind the write";
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->state, JobState::kQueued);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->jobs.size(), 1u);
  ASSERT_TRUE(logs.ok()) << logs.status();
  EXPECT_EQ(logs->size(), 1u);
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ((*counts)[JobState::kQueued], 1);
  ASSERT_TRUE(position.ok()) << position.status();
  EXPECT_EQ(*position, 1);
  ASSERT_TRUE(write_status.ok()) << write_status;
  auto after = store_->ReadLogs(id, 0, 10);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), 2u);  // the waiting write landed once the lock went, and the reader sees it
  EXPECT_EQ(after->back().message, "written after the lock went");
}

TEST_F(SqliteJobStoreTest, UnknownStoreSchemeIsInvalidArgument) {
  EXPECT_EQ(OpenJobStore("mysql://x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenJobStore("sqlite:").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace autoquant

namespace autoquant {
namespace {

// Evaluation jobs are stored with their kind; rows written before kinds existed read as scheme jobs.
TEST(JobSpecJsonTest, KindAndEvaluateRoundTripAndOldRowsAreSchemes) {
  JobSpec s;
  s.kind = JobKind::kEvaluate;
  s.scheme = "top50";
  s.evaluate = true;
  auto back = JobSpec::FromJson(s.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->kind, JobKind::kEvaluate);
  EXPECT_TRUE(back->evaluate);
  EXPECT_EQ(*back, s);
  JobSpec before;
  before.scheme = "old";
  before.selection.coverage = 0.5;
  nlohmann::json old = before.ToJson();
  old.erase("kind");
  old.erase("evaluate");
  auto read = JobSpec::FromJson(old);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->kind, JobKind::kScheme);
  EXPECT_FALSE(read->evaluate);
}

// Found by fuzzing (tests/fuzz/job_spec_fuzz.cc): get<int>() on 1e30 was undefined
// behaviour; a stored spec with a non-integer or out-of-range count is DataLoss.
TEST(JobSpecJsonTest, NonIntegerOrOutOfRangeCountsAreDataLoss) {
  for (nlohmann::json bad : {nlohmann::json(1e30), nlohmann::json(2.5), nlohmann::json(int64_t{1} << 40)}) {
    nlohmann::json j = JobSpec{}.ToJson();
    j["calib_steps"] = bad;
    auto s = JobSpec::FromJson(j);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  }
}

// Names are the storage edge: an unknown one is a malformed row (DataLoss, naming it); a well-formed
// scheme spec that the one validation refuses is refused with its reason, not run.
TEST(JobSpecJsonTest, UnknownNamesAreDataLossAndInvalidSpecsAreRefused) {
  JobSpec good;
  good.scheme = "s";
  good.selection.coverage = 0.5;
  for (const auto& [field, value] : std::vector<std::pair<std::string, std::string>>{
           {"method", "fisher"}, {"format", "gguf"}, {"layout", "flat"}, {"kind", "distill"}}) {
    nlohmann::json j = good.ToJson();
    j[field] = value;
    auto s = JobSpec::FromJson(j);
    ASSERT_FALSE(s.ok()) << field;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << field;
    EXPECT_THAT(s.status().message(), ::testing::HasSubstr("'" + value + "'")) << field;
  }
  nlohmann::json both = good.ToJson();
  both["effective_bits"] = 12;
  auto s = JobSpec::FromJson(both);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), ::testing::HasSubstr("more than one selection"));
  // An evaluation job names only its scheme: no selection is needed.
  JobSpec eval;
  eval.kind = JobKind::kEvaluate;
  eval.scheme = "s";
  ASSERT_OK(JobSpec::FromJson(eval.ToJson()).status());
}

TEST_F(SqliteJobStoreTest, OneDaemonsStoreKeepsNoLeasesAndPublishesFreely) {
  std::vector<bool> created;
  auto jobs = store_->Insert({MakeJob("solo")}, "queued", &created);
  ASSERT_TRUE(jobs.ok());
  const std::string id = jobs->front().id;
  EXPECT_EQ(store_->lease_seconds(), 0);
  auto claimed = store_->ClaimNext("some-other-model:calib");  // affinity is a fleet notion
  ASSERT_TRUE(claimed.ok() && claimed->has_value());
  const Lease none{};
  auto beat = store_->Heartbeat(id, none);
  ASSERT_TRUE(beat.ok());
  EXPECT_FALSE(*beat);
  ASSERT_TRUE(store_->RequestCancel(id).ok());
  EXPECT_TRUE(*store_->Heartbeat(id, none));
  bool published = false;
  EXPECT_TRUE(store_
                  ->WhileLeaseHeld(id, none,
                                   [&] {
                                     published = true;
                                     return absl::OkStatus();
                                   })
                  .ok());
  EXPECT_TRUE(published);
  EXPECT_EQ(store_->WhileLeaseHeld(id, none, [] { return absl::AlreadyExistsError("x"); }).code(),
            absl::StatusCode::kAlreadyExists);
  auto swept = store_->RequeueExpired(RecoveryPolicyFor(2));
  ASSERT_TRUE(swept.ok());
  EXPECT_TRUE(swept->empty());  // a running job is this daemon's own: only a restart re-queues it
  EXPECT_EQ(store_->Get(id)->state, JobState::kRunning);
}

}  // namespace
}  // namespace autoquant

// The AutoQuant gRPC service in-process: the real service, job manager and
// SQLite store behind a loopback server, the engine replaced by a scripted
// runner. Many clients at once submit, follow logs, poll, list and cancel; the
// test command also runs this under ThreadSanitizer (build-tsan/), which is
// where races between RPC threads, log subscribers and the worker would show.
#include "server/autoquant_service.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sqlite3.h>

#include <atomic>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/jobs/job_manager.h"
#include "core/jobs/job_store.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/registry.h"
#include "server/daemon_context.h"
#include "server/daemon_metrics.h"
#include "server/request_executor.h"
#include "server/token_auth.h"
#include "tests/scripted_runner.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {

using testing::ScriptedRunner;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir();
    auto store = OpenJobStore("sqlite:" + (dir_ / "jobs.db").string());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    metrics_ = std::make_unique<DaemonMetrics>(std::make_shared<prometheus::Registry>());
    jobs_ = std::make_unique<JobManager>(store_.get(), metrics_.get());
    runner_.step_delay = std::chrono::milliseconds(1);
    jobs_->Start(&runner_);
    ctx_.jobs = jobs_.get();
    ctx_.auth = &auth_;
    ctx_.metrics = metrics_.get();
    ctx_.models_root = dir_.string();
    service_ = std::make_unique<AutoQuantService>(&ctx_);
    writes_ = std::make_unique<RequestExecutor>(executor_options_, metrics_->RequestPool("writes"));
    reads_ = std::make_unique<RequestExecutor>(executor_options_, metrics_->RequestPool("reads"));
    ctx_.writes = writes_.get();
    ctx_.reads = reads_.get();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_ != nullptr && port_ > 0);
  }
  void TearDown() override {
    // autoquantd's order (daemon.cc): the queue, the request pools, then gRPC.
    jobs_->Drain();
    writes_->Stop();
    reads_->Stop();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  std::unique_ptr<v1::AutoQuant::Stub> Stub() {
    return v1::AutoQuant::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials()));
  }

  RequestExecutorOptions executor_options_{.threads = 4, .max_queued = 256};
  std::filesystem::path dir_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<DaemonMetrics> metrics_;
  ScriptedRunner runner_;
  std::unique_ptr<JobManager> jobs_;
  TokenAuth auth_{""};
  DaemonContext ctx_;
  std::unique_ptr<AutoQuantService> service_;
  // After the service: destroyed (joined) before it.
  std::unique_ptr<RequestExecutor> writes_;
  std::unique_ptr<RequestExecutor> reads_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

// Follows a job's log to its end: sequence numbers 1, 2, 3, ... and the last line terminal.
v1::JobState Follow(v1::AutoQuant::Stub* stub, const std::string& job_id, std::string* error) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::StreamLogsRequest req;
  req.set_job_id(job_id);
  req.set_follow(true);
  auto reader = stub->StreamLogs(&ctx, req);
  v1::LogLine line;
  int64_t expect = 1;
  v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
  while (reader->Read(&line)) {
    if (line.sequence() != expect) *error = absl::StrCat(job_id, ": line ", line.sequence(), " after ", expect - 1);
    ++expect;
    last = line.state();
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) *error = absl::StrCat(job_id, ": stream ended with ", s.error_message());
  return last;
}

TEST_F(ServiceTest, ManyClientsSubmitFollowPollListAndCancelAtOnce) {
  constexpr int kClients = 8, kJobsEach = 4;
  std::mutex mu;
  std::map<std::string, std::set<std::string>> ids_by_key;  // idempotency key -> ids answered
  std::map<std::string, v1::JobState> followed;             // job -> last streamed state
  std::set<std::string> cancelled;                          // jobs whose cancel was answered
  std::vector<std::string> errors;
  std::atomic<bool> done{false};

  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto stub = Stub();
      std::vector<std::thread> followers;
      for (int i = 0; i < kJobsEach; ++i) {
        v1::SubmitSchemeRequest req;
        // Pairs of clients share keys: the same key must give the same job to both.
        req.set_idempotency_key(absl::StrCat("k", c / 2, "-", i));
        req.mutable_spec()->set_scheme(absl::StrCat("s", c / 2, "-", i));
        req.mutable_spec()->set_coverage(0.5);
        v1::Job job;
        grpc::ClientContext ctx;
        grpc::Status s = stub->SubmitScheme(&ctx, req, &job);
        std::lock_guard<std::mutex> lock(mu);
        if (!s.ok()) {
          errors.push_back(absl::StrCat("submit: ", s.error_message()));
          continue;
        }
        ids_by_key[req.idempotency_key()].insert(job.id());
        followers.emplace_back([&, id = job.id()] {
          auto own = Stub();
          std::string error;
          v1::JobState last = Follow(own.get(), id, &error);
          std::lock_guard<std::mutex> lock(mu);
          if (!error.empty()) errors.push_back(error);
          followed[id] = last;
        });
        if (c % 2 == 1 && i == kJobsEach - 1) {  // cancel one job, queued or running
          v1::CancelJobRequest cr;
          cr.set_job_id(job.id());
          v1::Job answer;
          grpc::ClientContext cctx;
          if (stub->CancelJob(&cctx, cr, &answer).ok()) cancelled.insert(job.id());
        }
      }
      for (auto& f : followers) f.join();
    });
  }
  std::thread poller([&] {  // status and list reads while all of that happens
    auto stub = Stub();
    while (!done.load()) {
      v1::ListJobsRequest req;
      req.set_page_size(7);
      v1::ListJobsResponse page;
      grpc::ClientContext ctx;
      if (!stub->ListJobs(&ctx, req, &page).ok()) continue;
      for (const v1::Job& j : page.jobs()) {
        v1::GetStatusRequest g;
        g.set_job_id(j.id());
        v1::Job got;
        grpc::ClientContext gctx;
        stub->GetStatus(&gctx, g, &got);
      }
    }
  });
  for (auto& t : threads) t.join();
  done = true;
  poller.join();

  EXPECT_TRUE(errors.empty()) << errors.front();
  ASSERT_EQ(ids_by_key.size(), static_cast<size_t>(kClients / 2 * kJobsEach));
  for (const auto& [key, ids] : ids_by_key) EXPECT_EQ(ids.size(), 1u) << key;
  for (const auto& [id, last] : followed) {
    if (cancelled.count(id)) {
      // A cancel answered while the job ran may lose the race with its last step.
      EXPECT_TRUE(last == v1::JOB_STATE_CANCELLED || last == v1::JOB_STATE_SUCCEEDED) << id;
    } else {
      EXPECT_EQ(last, v1::JOB_STATE_SUCCEEDED) << id;
    }
  }
  EXPECT_EQ(cancelled.size(), static_cast<size_t>(kClients / 2));
}

TEST_F(ServiceTest, ShutdownWithFollowersAttachedEndsEveryStream) {
  runner_.hold = true;  // the job never finishes on its own
  auto stub = Stub();
  v1::SubmitSchemeRequest req;
  req.mutable_spec()->set_scheme("held");
  req.mutable_spec()->set_coverage(0.5);
  v1::Job job;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub->SubmitScheme(&ctx, req, &job).ok());
  std::atomic<int> ended{0};
  std::vector<std::thread> followers;
  for (int i = 0; i < 16; ++i) {
    followers.emplace_back([&] {
      auto own = Stub();
      std::string error;
      Follow(own.get(), job.id(), &error);
      ++ended;
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  jobs_->Drain();  // as on SIGTERM: the held job is cancelled and re-queued, then the server stops
  writes_->Stop();
  reads_->Stop();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  for (auto& f : followers) f.join();
  EXPECT_EQ(ended.load(), 16);
  auto stored = store_->Get(job.id());
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->state, JobState::kQueued);
  server_.reset();
}

// Sends `bytes` as the request of `method` (as a client with a broken or foreign encoder would).
grpc::Status RawCall(int port, const std::string& method, const std::string& bytes) {
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) { done.set_value(std::move(s)); });
  return done.get_future().get();
}

// The engine as the service sees it (core/engine/engine_info.h): fixed values and one baseline.
class FixedEngine : public EngineInfo {
 public:
  FixedEngine() {
    baseline_.key = "b1";
    baseline_.formats = {Format::kFp8, Format::kNone};
    for (const char* name : {"language_model.layers.0.mlp.down_proj", "lm_head"}) {
      QuantGroup g;
      g.key = absl::StrCat(name, ".quant_recipe");
      g.modules = {absl::StrCat("model.", name)};
      baseline_.groups.push_back(g);
    }
    baseline_.scores = {{0.5, 0}, {0.25, 0}};
    baseline_.costs = {{8, 16}, {4, 8}};
    baseline_.ranking = {1, 0};  // least sensitive first
  }
  const std::string& model_fingerprint() const override { return model_fp_; }
  const std::string& calib_fingerprint() const override { return calib_fp_; }
  int64_t calib_samples() const override { return 16; }
  std::string device() const override { return "cpu"; }
  std::string dtype() const override { return "float32"; }
  DeviceMemory device_memory() const override { return {.allocated = 1, .reserved = 2, .peak_reserved = 3}; }
  std::vector<std::string> cached_baseline_keys() const override { return {baseline_.key}; }
  absl::StatusOr<Baseline> CachedBaseline(const BaselineRequest& request) const override {
    if (request.method != ScoreMethod::kKlDiv) return absl::FailedPreconditionError("no gradient baseline yet");
    last_formats_ = request.formats;
    return baseline_;
  }
  // The formats the last CachedBaseline call asked for.
  mutable std::vector<Format> last_formats_;

 private:
  std::string model_fp_ = "model-sha", calib_fp_ = "calib-sha";
  Baseline baseline_;
};

TEST_F(ServiceTest, EngineBackedRpcsAnswerFromTheEngineOnceLoaded) {
  auto stub = Stub();
  auto sensitivity = [&](int method, v1::Sensitivity* out) {
    grpc::ClientContext ctx;
    v1::GetSensitivityRequest req;
    req.set_method(static_cast<v1::ScoreMethod>(method));
    return stub->GetSensitivity(&ctx, req, out);
  };
  v1::Sensitivity sens;
  EXPECT_EQ(sensitivity(v1::SCORE_METHOD_KL_DIV, &sens).error_code(), grpc::StatusCode::UNAVAILABLE);

  FixedEngine engine;
  ctx_.engine = &engine;
  grpc::ClientContext info_ctx;
  v1::ServerInfo info;
  ASSERT_TRUE(stub->GetServerInfo(&info_ctx, v1::GetServerInfoRequest(), &info).ok());
  EXPECT_EQ(info.model_fingerprint(), "model-sha");
  EXPECT_EQ(info.calib_fingerprint(), "calib-sha");
  EXPECT_EQ(info.calib_samples(), 16);
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_EQ(info.device_memory_peak_bytes(), 3);
  EXPECT_THAT(info.cached_baselines(), ::testing::ElementsAre("b1"));

  ASSERT_TRUE(sensitivity(v1::SCORE_METHOD_KL_DIV, &sens).ok());
  ASSERT_EQ(sens.groups_size(), 2);
  EXPECT_EQ(sens.baseline_key(), "b1");
  EXPECT_EQ(sens.groups(0).key(), "language_model.layers.0.mlp.down_proj.quant_recipe");
  EXPECT_EQ(sens.groups(0).scores().at("FP8"), 0.5);
  EXPECT_EQ(sens.groups(1).rank(), 0);  // the least sensitive first
  EXPECT_EQ(sens.groups(0).rank(), 1);
  grpc::Status s = sensitivity(v1::SCORE_METHOD_GRADIENT, &sens);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  s = sensitivity(99, &sens);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("unknown score method 99"));
  ctx_.engine = nullptr;
}

TEST_F(ServiceTest, MalformedRequestsGetInvalidArgumentWithAMessage) {
  // Bytes that are no message at all, and a GetStatusRequest whose job_id is not UTF-8.
  for (const auto& [method, bytes] : std::vector<std::pair<std::string, std::string>>{
           {"/autoquant.v1.AutoQuant/SubmitScheme", "\xff"},
           {"/autoquant.v1.AutoQuant/ListJobs", "\x0a\x05\xff\xff"},
           {"/autoquant.v1.AutoQuant/GetStatus", std::string("\x0a\x02\xc3\x28", 4)},
           {"/autoquant.v1.AutoQuant/StreamLogs", "\xff"}}) {
    grpc::Status s = RawCall(port_, method, bytes);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), ::testing::HasSubstr("does not parse as autoquant.v1.")) << method;
  }
  // A well-formed request over the same raw path still works.
  v1::GetServerInfoRequest info;
  EXPECT_TRUE(RawCall(port_, "/autoquant.v1.AutoQuant/GetServerInfo", info.SerializeAsString()).ok());
}

TEST_F(ServiceTest, AnOversizedSpecIsRefusedAtOnceNamingTheField) {
  auto stub = Stub();
  v1::SubmitSchemeRequest req;
  req.mutable_spec()->set_scheme("huge");
  req.mutable_spec()->set_coverage(0.5);
  // The request: 40,000 patterns (about 420 KB). Before the limits, de-duplicating them took
  // seconds per request on the RPC threads.
  for (int i = 0; i < 40000; ++i) req.mutable_spec()->add_disabled_layers(absl::StrCat("*layers.", i, ".mlp*"));
  v1::Job job;
  grpc::ClientContext ctx;
  const auto t0 = std::chrono::steady_clock::now();
  grpc::Status s = stub->SubmitScheme(&ctx, req, &job);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("disabled_layers has 40000 entries; at most 4096"));
  v1::SubmitSchemeRequest dash;
  dash.mutable_spec()->set_scheme("-rf");
  dash.mutable_spec()->set_coverage(0.5);
  grpc::ClientContext dctx;
  s = stub->SubmitScheme(&dctx, dash, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("starts with '-'"));
  auto listed = store_->List({});
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->jobs.empty());
}

// A stored job with a spec of about `bytes` (as one stored before the limits, or at them).
Job BigJob(const std::string& scheme, size_t bytes) {
  Job j;
  j.id = NewJobId();
  j.spec.scheme = scheme;
  j.spec.selection.coverage_manifest.emplace();
  for (size_t n = 0; n < bytes; n += 200)
    j.spec.selection.coverage_manifest->selected_layers.push_back(std::string(199, 'k') + "*");
  j.created_ms = NowMs();
  return j;
}

TEST_F(ServiceTest, ListJobsRepliesStayUnderFourMiBWhateverIsStored) {
  runner_.hold = true;  // nothing needs to run
  std::vector<Job> jobs;
  for (int i = 0; i < 24; ++i) jobs.push_back(BigJob(absl::StrCat("big", i), 256 << 10));
  jobs.push_back(BigJob("giant", 6 << 20));  // one job larger than any reply may be
  for (int i = 0; i < 3; ++i) jobs.push_back(BigJob(absl::StrCat("after", i), 1000));
  std::vector<bool> created;
  ASSERT_TRUE(store_->Insert(jobs, "queued", &created).ok());
  auto stub = Stub();  // gRPC's default 4 MiB receive limit
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    v1::ListJobsRequest req;
    req.set_page_size(1000);
    req.set_page_token(token);
    v1::ListJobsResponse page;
    grpc::ClientContext ctx;
    grpc::Status s = stub->ListJobs(&ctx, req, &page);
    ASSERT_TRUE(s.ok()) << "page " << pages << ": " << s.error_message();
    EXPECT_LE(page.ByteSizeLong(), kMaxListReplyBytes);
    for (const auto& j : page.jobs()) {
      seen.push_back(j.scheme());
      if (j.scheme() == "giant") {
        EXPECT_EQ(j.spec().coverage_manifest().selected_layers_size(), 0);
        EXPECT_THAT(j.message(), ::testing::HasSubstr("GetStatus returns it whole"));
      }
    }
    token = page.next_page_token();
    ++pages;
  } while (!token.empty() && pages < 100);
  ASSERT_EQ(seen.size(), jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) EXPECT_EQ(seen[i], jobs[i].spec.scheme);
  EXPECT_GE(pages, 3);
}

TEST_F(ServiceTest, AnUnreadableStoredRowIsSkippedAndListJobsStillAnswers) {
  runner_.hold = true;
  std::vector<Job> jobs;
  for (const char* name : {"one", "two", "three"}) jobs.push_back(BigJob(name, 10));
  std::vector<bool> created;
  ASSERT_TRUE(store_->Insert(jobs, "queued", &created).ok());
  // Another writer (a bad disk, a hand edit) leaves a spec that is not JSON, and one that is JSON of the wrong shape.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "jobs.db").c_str(), &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 10000);
  const std::string sql = absl::StrCat("UPDATE jobs SET spec = '{not json' WHERE id = '", jobs[1].id,
                                       "'; UPDATE jobs SET spec = '{\"scheme\": 7}' WHERE id = '", jobs[2].id, "';");
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);
  auto stub = Stub();
  v1::ListJobsRequest req;
  v1::ListJobsResponse page;
  grpc::ClientContext ctx;
  grpc::Status s = stub->ListJobs(&ctx, req, &page);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(page.jobs_size(), 1);
  EXPECT_EQ(page.jobs(0).id(), jobs[0].id);
  EXPECT_TRUE(page.next_page_token().empty());
  // Paging past a skipped row: page size 1 still reaches the end.
  v1::ListJobsRequest small;
  small.set_page_size(1);
  v1::ListJobsResponse first;
  grpc::ClientContext sctx;
  ASSERT_TRUE(stub->ListJobs(&sctx, small, &first).ok());
  ASSERT_EQ(first.jobs_size(), 1);
  ASSERT_FALSE(first.next_page_token().empty());
  small.set_page_token(first.next_page_token());
  v1::ListJobsResponse second;
  grpc::ClientContext sctx2;
  ASSERT_TRUE(stub->ListJobs(&sctx2, small, &second).ok());
  EXPECT_EQ(second.jobs_size(), 0);
}

// One request thread per pool: a second submit waits in the queue behind the first.
class OneRequestThreadTest : public ServiceTest {
 protected:
  OneRequestThreadTest() { executor_options_ = {.threads = 1, .max_queued = 4}; }
};

TEST_F(OneRequestThreadTest, ARequestWhoseClientGaveUpWhileItWaitedIsNotRun) {
  // Another connection holds jobs.db's write lock: the first submit waits in SQLite's busy timeout on the
  // one request thread, and the second waits in the queue.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "jobs.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  auto stub = Stub();
  auto submit = [&](const std::string& scheme, std::chrono::milliseconds deadline) {
    v1::SubmitSchemeRequest req;
    req.mutable_spec()->set_scheme(scheme);
    req.mutable_spec()->set_coverage(0.5);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + deadline);
    v1::Job job;
    return stub->SubmitScheme(&ctx, req, &job);
  };
  auto first = std::async(std::launch::async, [&] { return submit("first", std::chrono::seconds(30)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  grpc::Status late = submit("late", std::chrono::milliseconds(500));
  EXPECT_EQ(late.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << late.error_message();
  {
    // GetServerInfo reads only memory, on the callback thread: it answers while the request thread waits.
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ServerInfo info;
    grpc::Status s = stub->GetServerInfo(&ctx, v1::GetServerInfoRequest(), &info);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
  ASSERT_EQ(sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  grpc::Status s = first.get();
  ASSERT_TRUE(s.ok()) << s.error_message();
  {
    grpc::ClientContext ctx;
    v1::ListJobsRequest req;
    v1::ListJobsResponse page;
    ASSERT_TRUE(stub->ListJobs(&ctx, req, &page).ok());
    ASSERT_EQ(page.jobs_size(), 1);
    EXPECT_EQ(page.jobs(0).spec().scheme(), "first");
  }
}

// Submits wait for the store's write lock, which another process holds, and take the writes pool's
// one thread and its queue; status, lists and log streams run on the reads pool and answer at once.
TEST_F(OneRequestThreadTest, ReadsAnswerWhileEveryWriteThreadWaitsForTheStore) {
  auto stub = Stub();
  v1::Job job;
  {
    v1::SubmitSchemeRequest req;
    req.mutable_spec()->set_scheme("before");
    req.mutable_spec()->set_coverage(0.5);
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->SubmitScheme(&ctx, req, &job).ok());
  }
  std::string error;
  ASSERT_EQ(Follow(stub.get(), job.id(), &error), v1::JOB_STATE_SUCCEEDED) << error;

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "jobs.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  std::vector<std::future<grpc::Status>> submits;
  for (int i = 0; i < 3; ++i) {  // one on the writes thread, two in its queue
    submits.push_back(std::async(std::launch::async, [&, i] {
      v1::SubmitSchemeRequest req;
      req.mutable_spec()->set_scheme(absl::StrCat("stalled-", i));
      req.mutable_spec()->set_coverage(0.5);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      v1::Job out;
      return stub->SubmitScheme(&ctx, req, &out);
    }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto quick = [](grpc::ClientContext* ctx) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  };
  {
    grpc::ClientContext ctx;
    quick(&ctx);
    v1::GetStatusRequest req;
    req.set_job_id(job.id());
    v1::Job got;
    grpc::Status s = stub->GetStatus(&ctx, req, &got);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(got.state(), v1::JOB_STATE_SUCCEEDED);
  }
  {
    grpc::ClientContext ctx;
    quick(&ctx);
    v1::ListJobsResponse page;
    grpc::Status s = stub->ListJobs(&ctx, v1::ListJobsRequest(), &page);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(page.jobs_size(), 1);
  }
  {
    grpc::ClientContext ctx;
    quick(&ctx);
    v1::StreamLogsRequest req;
    req.set_job_id(job.id());
    auto reader = stub->StreamLogs(&ctx, req);
    v1::LogLine line;
    int lines = 0;
    while (reader->Read(&line)) ++lines;
    grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_GT(lines, 0);
  }
  for (auto& f : submits) {
    EXPECT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::timeout) << "a submit did not wait";
  }
  ASSERT_EQ(sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  for (auto& f : submits) {
    grpc::Status s = f.get();
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
}

}  // namespace
}  // namespace autoquant

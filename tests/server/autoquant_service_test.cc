// The AutoQuant gRPC service in-process: the real service, job manager and
// SQLite store behind a loopback server, the engine replaced by a scripted
// runner. Many clients at once submit, follow logs, poll, list and cancel; the
// test command also runs this under ThreadSanitizer (build-tsan/), which is
// where races between RPC threads, log subscribers and the worker would show.
#include "server/autoquant_service.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/jobs/job_manager.h"
#include "core/jobs/job_store.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/registry.h"
#include "server/daemon_context.h"
#include "server/daemon_metrics.h"
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
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_ != nullptr && port_ > 0);
  }
  void TearDown() override {
    jobs_->Drain();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  std::unique_ptr<v1::AutoQuant::Stub> Stub() {
    return v1::AutoQuant::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials()));
  }

  std::filesystem::path dir_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<DaemonMetrics> metrics_;
  ScriptedRunner runner_;
  std::unique_ptr<JobManager> jobs_;
  TokenAuth auth_{""};
  DaemonContext ctx_;
  std::unique_ptr<AutoQuantService> service_;
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
  std::map<std::string, v1::JobState> followed;              // job -> last streamed state
  std::set<std::string> cancelled;                           // jobs whose cancel was answered
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
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  for (auto& f : followers) f.join();
  EXPECT_EQ(ended.load(), 16);
  auto stored = store_->Get(job.id());
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->state, JobState::kQueued);
  server_.reset();
}

}  // namespace
}  // namespace autoquant

#include "server/daemon.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "core/engine/engine.h"
#include "core/eval/evaluator.h"
#include "core/jobs/engine_job_runner.h"
#include "core/jobs/job_manager.h"
#include "core/jobs/job_store.h"
#include "core/jobs/postgres_job_store.h"
#include "core/util/crash_point.h"
#include "core/util/file_util.h"
#include "core/util/path_guard.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/autoquant_service.h"
#include "server/daemon_context.h"
#include "server/daemon_metrics.h"
#include "server/metrics_http.h"
#include "server/models_root_check.h"
#include "server/request_executor.h"
#include "server/stop_signals.h"
#include "server/token_auth.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace autoquant {
namespace {

constexpr const char* kServiceName = "autoquant.v1.AutoQuant";

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const DaemonOptions& o) {
  if (o.tls_cert.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(o.tls_client_ca.empty()
                                            ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  auto key = ReadFile(o.tls_key);
  if (!key.ok()) return absl::InvalidArgumentError(absl::StrCat("--tls-key: ", key.status().message()));
  auto cert = ReadFile(o.tls_cert);
  if (!cert.ok()) return absl::InvalidArgumentError(absl::StrCat("--tls-cert: ", cert.status().message()));
  pair.private_key = *key;
  pair.cert_chain = *cert;
  ssl.pem_key_cert_pairs.push_back(pair);
  if (!o.tls_client_ca.empty()) {
    auto ca = ReadFile(o.tls_client_ca);
    if (!ca.ok()) return absl::InvalidArgumentError(absl::StrCat("--tls-client-ca: ", ca.status().message()));
    ssl.pem_root_certs = *ca;
  }
  return grpc::SslServerCredentials(ssl);
}

void SetHealth(grpc::Server* server, bool serving) {
  auto* health = server->GetHealthCheckService();
  if (!health) return;
  health->SetServingStatus(serving);  // the overall status ("")
  health->SetServingStatus(kServiceName, serving);
}

int Fail(const absl::Status& s, const char* what) {
  spdlog::error("{}: {}", what, std::string(s.message()));
  std::cerr << "autoquantd: error: " << what << ": " << s.message() << "\n";
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

// The daemon's life as named steps, in the order RunDaemon takes them. Members are declared in the
// order they are made, so that they are destroyed in reverse: the service and its pools before the
// context they use, the job manager after the runner and engine it drives are stopped.
class Daemon {
 public:
  explicit Daemon(const DaemonOptions& o) : o_(o) {}

  // Each step returns 0 to go on, or the process's exit code.
  int Start();     // logging, signals, credentials, the metrics endpoint, the models root
  int OpenJobs();  // the job store, what a previous process left, the service and its pools
  int Listen();    // the gRPC server, health NOT_SERVING, the bound port on stdout
  void WatchStopSignals();
  void Load();   // the engine and the evaluator, then SERVING; a failure ends the process
  void Serve();  // health and device memory, every second, until a stop signal
  void Drain();

 private:
  void SampleOnce(bool* healthy);

  const DaemonOptions& o_;
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  std::string token_;
  std::unique_ptr<MetricsServer> metrics_server_;
  std::string metrics_address_;
  std::unique_ptr<TokenAuth> auth_;
  std::shared_ptr<grpc::ServerCredentials> creds_;
  std::string daemon_id_;
  std::unique_ptr<JobStore> store_;
  bool fleet_ = false;
  std::unique_ptr<DaemonMetrics> metrics_;
  std::unique_ptr<JobManager> jobs_;
  DaemonContext ctx_;
  std::unique_ptr<AutoQuantService> service_;
  // Two pools: submits and cancels, which wait for the store's writes, cannot take the threads that
  // status, lists and log streams (reads, which a stalled write does not hold up) need.
  std::unique_ptr<RequestExecutor> writes_, reads_;
  std::unique_ptr<grpc::Server> server_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::atomic<bool> serving_{false};
  std::thread signals_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Evaluator> evaluator_;
  EvalSetFacts eval_facts_;
  std::unique_ptr<EngineJobRunner> runner_;
  std::thread sampler_;
};

int Daemon::Start() {
  // Logs go to stderr: stdout's first line is the bound port, which scripts read.
  spdlog::set_default_logger(spdlog::stderr_color_mt("autoquantd"));
  spdlog::set_level(spdlog::level::from_str(o_.log_level == "warning" ? "warn" : o_.log_level));
  if (absl::Status s = InstallStopSignalHandlers(); !s.ok()) return Fail(s, "signal handlers");
  auto token = LoadToken(o_.token_file, "AUTOQUANT_TOKEN");
  if (!token.ok()) return Fail(token.status(), "auth");
  token_ = *token;
  if (token_.empty() && !o_.insecure && !IsLoopbackAddress(o_.listen)) {
    return Fail(absl::InvalidArgumentError(
                    absl::StrCat("--listen ", o_.listen,
                                 " is reachable off this machine but no token is configured: pass "
                                 "--token-file FILE (or set AUTOQUANT_TOKEN), or --insecure to run without one")),
                "refusing to start");
  }
  if (!o_.metrics.empty()) {
    auto started = MetricsServer::Start({.flag = o_.metrics, .token = token_, .insecure = o_.insecure}, registry_);
    if (!started.ok()) {
      return Fail(started.status(),
                  started.status().code() == absl::StatusCode::kInvalidArgument ? "refusing to start" : "metrics");
    }
    metrics_server_ = *std::move(started);
    metrics_address_ = metrics_server_->address();
  }
  auth_ = std::make_unique<TokenAuth>(token_);
  auto creds = Credentials(o_);
  if (!creds.ok()) return Fail(creds.status(), "tls");
  creds_ = *creds;

  // Before anything is created in it: the job store must not land inside the base model.
  if (absl::Status s = CheckNotInside(o_.models_root, "--models-root",
                                      {{o_.model, "the base model directory"},
                                       {o_.calib, "the calibration file"},
                                       {o_.eval_set, "the evaluation set"}});
      !s.ok()) {
    return Fail(s, "models root");
  }
  std::error_code ec;
  const std::filesystem::path root(o_.models_root);
  if (!root.parent_path().empty()) std::filesystem::create_directories(root.parent_path(), ec);
  // mkdir's own mode, not the umask's default: a root the daemon creates is never writable by others.
  for (const std::filesystem::path& dir : {root, root / ".autoquant"}) {
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return Fail(ErrnoStatus(errno, "cannot create", dir), "models root");
    }
    const char* what = dir == root ? "the models root (--models-root)" : "the daemon's directory";
    if (absl::Status s = CheckOnlyOwnerWrites(dir, what); !s.ok()) {
      if (!o_.insecure_models_root) return Fail(s, "refusing to start");
      spdlog::warn("--insecure-models-root: {}", std::string(s.message()));
    }
  }
  auto removed = RemoveStaleStaging(o_.models_root);
  if (!removed.ok()) return Fail(removed.status(), "cleaning stale staging directories");
  if (*removed > 0) {
    spdlog::info("removed {} leftovers (staging directories, temporary files) of dead processes", *removed);
  }
  return 0;
}

int Daemon::OpenJobs() {
  daemon_id_ = NewDaemonId();
  auto store = OpenJobStore(o_.store, {.owner = daemon_id_, .lease_seconds = o_.lease_seconds});
  if (!store.ok()) return Fail(store.status(), "job store");
  store_ = *std::move(store);
  fleet_ = store_->lease_seconds() > 0;
  if (fleet_) {
    spdlog::info("fleet mode: job store {}, daemon id {}, leases of {:.1f} s", RedactedStoreUrl(o_.store), daemon_id_,
                 o_.lease_seconds);
  }
  metrics_ = std::make_unique<DaemonMetrics>(registry_);
  jobs_ = std::make_unique<JobManager>(store_.get(), metrics_.get(),
                                       JobManagerOptions{.max_attempts = o_.max_attempts, .max_queued = o_.max_queued});
  auto recovered = jobs_->Recover();
  if (!recovered.ok()) return Fail(recovered.status(), "recovering jobs");
  for (const Job& j : *recovered) {
    spdlog::warn("job {} ({}) {}: now {}", j.id, j.spec.scheme,
                 fleet_ ? "was running on a daemon whose lease expired" : "was running when the daemon stopped",
                 std::string(JobStateName(j.state)));
  }
  auto counts = store_->CountByState();
  if (!counts.ok()) return Fail(counts.status(), "job store");
  metrics_->SetJobCounts(*counts);
  metrics_->OnQueueDepth((*counts)[JobState::kQueued]);

  ctx_.jobs = jobs_.get();
  ctx_.auth = auth_.get();
  ctx_.metrics = metrics_.get();
  ctx_.model_path = o_.model;
  ctx_.calib_path = o_.calib;
  ctx_.models_root = o_.models_root;
  ctx_.metrics_address = metrics_address_;
  ctx_.batch_size = o_.batch_size;
  ctx_.daemon_id = daemon_id_;
  ctx_.job_store = RedactedStoreUrl(o_.store);
  service_ = std::make_unique<AutoQuantService>(&ctx_);
  const RequestExecutorOptions pool{.threads = o_.request_threads, .max_queued = o_.request_queue};
  writes_ = std::make_unique<RequestExecutor>(pool, metrics_->RequestPool("writes"));
  reads_ = std::make_unique<RequestExecutor>(pool, metrics_->RequestPool("reads"));
  ctx_.writes = writes_.get();
  ctx_.reads = reads_.get();
  return 0;
}

int Daemon::Listen() {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(o_.listen, creds_, &port);
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(16 << 20);
  server_ = builder.BuildAndStart();
  if (!server_ || port == 0) {
    return Fail(absl::UnavailableError(
                    absl::StrCat("cannot listen on ", o_.listen, " (address in use or invalid; use HOST:PORT)")),
                "listen");
  }
  SetHealth(server_.get(), false);
  std::cout << port << std::endl;  // stdout's first line: the bound port
  spdlog::info("listening on {} (port {}), metrics {}, auth {}, tls {}", o_.listen, port,
               metrics_address_.empty() ? "off" : metrics_address_, auth_->enabled() ? "token" : "off",
               o_.tls_cert.empty() ? "off" : (o_.tls_client_ca.empty() ? "on" : "mutual"));
  return 0;
}

// While loading nothing runs (every job is safely stored), so a stop signal exits at once; once
// serving, it drains.
void Daemon::WatchStopSignals() {
  signals_ = std::thread([this] {
    const int sig = WaitForStopSignal();
    spdlog::info("signal {}: shutting down", sig);
    if (!serving_.load()) {
      SetHealth(server_.get(), false);
      std::_Exit(0);
    }
    std::lock_guard<std::mutex> lock(stop_mu_);
    stop_ = true;
    stop_cv_.notify_all();
  });
}

void Daemon::Load() {
  const auto t0 = std::chrono::steady_clock::now();
  // A failure while loading ends the process: the signal thread is parked on its pipe, nothing else holds state.
  auto fail_loading = [&](const absl::Status& s, const char* what) {
    int rc = Fail(s, what);
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    std::_Exit(rc);
  };
  auto engine = Engine::Create({.model_dir = o_.model,
                                .calib_path = o_.calib,
                                .baseline_cache = o_.baseline_cache,
                                .eval_set = o_.eval_set,
                                .device = o_.device,
                                .dtype = o_.dtype,
                                .batch_size = o_.batch_size,
                                .export_threads = o_.export_threads},
                               [](const ProgressEvent& e) {
                                 CrashPoint("load");
                                 if (!e.message.empty()) spdlog::info("[load] {}", e.message);
                               });
  absl::Status warm = engine.ok() ? (*engine)->WarmUp() : engine.status();
  if (!warm.ok()) fail_loading(warm, "loading the model");
  engine_ = *std::move(engine);
  // Loading CUDA and its libraries may have replaced the handlers.
  if (absl::Status s = InstallStopSignalHandlers(); !s.ok()) {
    spdlog::warn("re-installing signal handlers: {}", std::string(s.message()));
  }
  ctx_.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  metrics_->SetModelLoadSeconds(ctx_.load_seconds);
  if (!o_.eval_set.empty()) {
    auto created = Evaluator::Create(engine_.get(), {.eval_set = o_.eval_set,
                                                     .batch_size = o_.batch_size,
                                                     .generate_tokens = o_.eval_generate_tokens,
                                                     .generate_prompts = o_.eval_generate_prompts,
                                                     .fp8_matmul = o_.eval_fp8_matmul});
    if (!created.ok()) fail_loading(created.status(), "loading the evaluation set");
    evaluator_ = *std::move(created);
    spdlog::info("evaluation set {}: {} samples ({} with images)", o_.eval_set, evaluator_->samples(),
                 evaluator_->samples_with_images());
    eval_facts_ = {evaluator_->options().eval_set.string(), evaluator_->fingerprint(),
                   static_cast<int64_t>(evaluator_->samples())};
    ctx_.eval_set = &eval_facts_;
  }
  Engine* e = engine_.get();
  ctx_.engine = e;
  // --layout is checked by its flag's validator; the fallback never applies.
  // The job store also keeps the records of the blobs this daemon produced (blob_records.h).
  runner_ = std::make_unique<EngineJobRunner>(
      e, o_.models_root, evaluator_.get(), ParseExportLayout(o_.layout).value_or(ExportLayout::kShared), store_.get());
  jobs_->Start(runner_.get());
  serving_ = true;
  SetHealth(server_.get(), true);
  metrics_->SetServing(true);
  spdlog::info("serving: model {} on {} ({}), loaded and warmed up in {:.2f} s", o_.model, e->device(), e->dtype(),
               ctx_.load_seconds.load());
}

// NOT_SERVING while the job store cannot record jobs (a full disk), SERVING again once it can; the
// device's memory; in a fleet, the shared table's counts (other daemons change it too).
void Daemon::SampleOnce(bool* healthy) {
  if (const bool up = jobs_->serving(); up != *healthy) {
    *healthy = up;
    SetHealth(server_.get(), up);
    metrics_->SetServing(up);
  }
  DeviceMemory m = engine_->device_memory();
  metrics_->SetDeviceMemory(m.allocated, m.reserved, m.peak_reserved, m.total);
}

void Daemon::Serve() {
  sampler_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(stop_mu_);
    bool healthy = true;
    while (!stop_) {
      SampleOnce(&healthy);
      if (fleet_) {
        lock.unlock();
        if (auto counts = store_->CountByState(); counts.ok()) {
          metrics_->SetJobCounts(*counts);
          metrics_->OnQueueDepth((*counts)[JobState::kQueued]);
        }
        lock.lock();
      }
      stop_cv_.wait_for(lock, std::chrono::seconds(1));
    }
  });
  std::unique_lock<std::mutex> lock(stop_mu_);
  stop_cv_.wait(lock, [&] { return stop_; });
}

void Daemon::Drain() {
  SetHealth(server_.get(), false);
  metrics_->SetServing(false);
  jobs_->Drain();  // the running job stops at its next check and is re-queued
  // Queued RPCs answer UNAVAILABLE, running ones finish, later ones are refused at once; then gRPC's
  // Shutdown, which waits for every call to be finished, has no call left that only the executor would finish.
  writes_->Stop();
  reads_->Stop();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  sampler_.join();
  signals_.join();
  spdlog::info("stopped cleanly");
}

}  // namespace

int RunDaemon(const DaemonOptions& o) {
  Daemon d(o);
  for (int (Daemon::*step)() : {&Daemon::Start, &Daemon::OpenJobs, &Daemon::Listen}) {
    if (int rc = (d.*step)(); rc != 0) return rc;
  }
  d.WatchStopSignals();
  d.Load();
  d.Serve();
  d.Drain();
  return 0;
}

}  // namespace autoquant

#include "server/daemon.h"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <thread>

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
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

}  // namespace

int RunDaemon(const DaemonOptions& o) {
  // Logs go to stderr: stdout's first line is the bound port, which scripts read.
  spdlog::set_default_logger(spdlog::stderr_color_mt("autoquantd"));
  spdlog::set_level(spdlog::level::from_str(o.log_level == "warning" ? "warn" : o.log_level));
  if (absl::Status s = InstallStopSignalHandlers(); !s.ok()) return Fail(s, "signal handlers");
  auto registry = std::make_shared<prometheus::Registry>();
  auto token = LoadToken(o.token_file, "AUTOQUANT_TOKEN");
  if (!token.ok()) return Fail(token.status(), "auth");
  if (token->empty() && !o.insecure && !IsLoopbackAddress(o.listen)) {
    return Fail(absl::InvalidArgumentError(
                    absl::StrCat("--listen ", o.listen,
                                 " is reachable off this machine but no token is configured: pass "
                                 "--token-file FILE (or set AUTOQUANT_TOKEN), or --insecure to run without one")),
                "refusing to start");
  }
  std::unique_ptr<MetricsServer> metrics_server;
  std::string metrics_address;
  if (!o.metrics.empty()) {
    auto started = MetricsServer::Start({.flag = o.metrics, .token = *token, .insecure = o.insecure}, registry);
    if (!started.ok()) {
      return Fail(started.status(),
                  started.status().code() == absl::StatusCode::kInvalidArgument ? "refusing to start" : "metrics");
    }
    metrics_server = *std::move(started);
    metrics_address = metrics_server->address();
  }
  TokenAuth auth(*token);
  auto creds = Credentials(o);
  if (!creds.ok()) return Fail(creds.status(), "tls");

  // Before anything is created in it: the job store must not land inside the base model.
  if (absl::Status s = CheckNotInside(o.models_root, "--models-root",
                                      {{o.model, "the base model directory"},
                                       {o.calib, "the calibration file"},
                                       {o.eval_set, "the evaluation set"}});
      !s.ok()) {
    return Fail(s, "models root");
  }
  std::error_code ec;
  const std::filesystem::path root(o.models_root);
  if (!root.parent_path().empty()) std::filesystem::create_directories(root.parent_path(), ec);
  // mkdir's own mode, not the umask's default: a root the daemon creates is never writable by others.
  for (const std::filesystem::path& dir : {root, root / ".autoquant"}) {
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return Fail(ErrnoStatus(errno, "cannot create", dir), "models root");
    }
    const char* what = dir == root ? "the models root (--models-root)" : "the daemon's directory";
    if (absl::Status s = CheckOnlyOwnerWrites(dir, what); !s.ok()) {
      if (!o.insecure_models_root) return Fail(s, "refusing to start");
      spdlog::warn("--insecure-models-root: {}", std::string(s.message()));
    }
  }
  auto removed = RemoveStaleStaging(o.models_root);
  if (!removed.ok()) return Fail(removed.status(), "cleaning stale staging directories");
  if (*removed > 0)
    spdlog::info("removed {} leftovers (staging directories, temporary files) of dead processes", *removed);

  const std::string daemon_id = NewDaemonId();
  auto store =
      OpenJobStore(o.store, {.owner = daemon_id, .lease_seconds = o.lease_seconds, .max_attempts = o.max_attempts});
  if (!store.ok()) return Fail(store.status(), "job store");
  const bool fleet = (*store)->lease_seconds() > 0;
  if (fleet) {
    spdlog::info("fleet mode: job store {}, daemon id {}, leases of {:.1f} s", RedactedStoreUrl(o.store), daemon_id,
                 o.lease_seconds);
  }

  DaemonMetrics metrics(registry);
  JobManager jobs(store->get(), &metrics, {.max_attempts = o.max_attempts, .max_queued = o.max_queued});
  auto recovered = jobs.Recover();
  if (!recovered.ok()) return Fail(recovered.status(), "recovering jobs");
  for (const Job& j : *recovered) {
    spdlog::warn("job {} ({}) {}: now {}", j.id, j.spec.scheme,
                 fleet ? "was running on a daemon whose lease expired" : "was running when the daemon stopped",
                 std::string(JobStateName(j.state)));
  }
  auto counts = (*store)->CountByState();
  if (!counts.ok()) return Fail(counts.status(), "job store");
  metrics.SetJobCounts(*counts);
  metrics.OnQueueDepth((*counts)[JobState::kQueued]);

  DaemonContext ctx;
  ctx.jobs = &jobs;
  ctx.auth = &auth;
  ctx.metrics = &metrics;
  ctx.model_path = o.model;
  ctx.calib_path = o.calib;
  ctx.models_root = o.models_root;
  ctx.metrics_address = metrics_address;
  ctx.batch_size = o.batch_size;
  ctx.daemon_id = daemon_id;
  ctx.job_store = RedactedStoreUrl(o.store);
  AutoQuantService service(&ctx);
  // After the service and the context, so that they are destroyed (their threads joined) before them.
  // Two pools: submits and cancels, which wait for the store's writes, cannot take the threads that
  // status, lists and log streams (reads, which a stalled write does not hold up) need.
  RequestExecutor writes({.threads = o.request_threads, .max_queued = o.request_queue}, metrics.RequestPool("writes"));
  RequestExecutor reads({.threads = o.request_threads, .max_queued = o.request_queue}, metrics.RequestPool("reads"));
  ctx.writes = &writes;
  ctx.reads = &reads;

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(o.listen, *creds, &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(16 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    return Fail(absl::UnavailableError(
                    absl::StrCat("cannot listen on ", o.listen, " (address in use or invalid; use HOST:PORT)")),
                "listen");
  }
  SetHealth(server.get(), false);
  std::cout << port << std::endl;  // stdout's first line: the bound port
  spdlog::info("listening on {} (port {}), metrics {}, auth {}, tls {}", o.listen, port,
               metrics_address.empty() ? "off" : metrics_address, auth.enabled() ? "token" : "off",
               o.tls_cert.empty() ? "off" : (o.tls_client_ca.empty() ? "on" : "mutual"));

  // Stop signals: while loading nothing runs (every job is safely stored), so exit at once;
  // once serving, drain.
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stop = false;
  std::atomic<bool> serving{false};
  std::thread signals([&] {
    const int sig = WaitForStopSignal();
    spdlog::info("signal {}: shutting down", sig);
    if (!serving.load()) {
      SetHealth(server.get(), false);
      std::_Exit(0);
    }
    std::lock_guard<std::mutex> lock(stop_mu);
    stop = true;
    stop_cv.notify_all();
  });

  const auto t0 = std::chrono::steady_clock::now();
  EngineOptions eo;
  eo.model_dir = o.model;
  eo.calib_path = o.calib;
  eo.baseline_cache = o.baseline_cache;
  eo.eval_set = o.eval_set;
  eo.device = o.device;
  eo.dtype = o.dtype;
  eo.batch_size = o.batch_size;
  eo.export_threads = o.export_threads;
  auto engine = Engine::Create(eo, [](const ProgressEvent& e) {
    CrashPoint("load");
    if (!e.message.empty()) spdlog::info("[load] {}", e.message);
  });
  // A failure while loading ends the process: the signal thread is parked on its pipe, nothing else holds state.
  auto fail_loading = [&](const absl::Status& s, const char* what) {
    int rc = Fail(s, what);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    std::_Exit(rc);
  };
  absl::Status warm = engine.ok() ? (*engine)->WarmUp() : engine.status();
  if (!warm.ok()) fail_loading(warm, "loading the model");
  // Loading CUDA and its libraries may have replaced the handlers.
  if (absl::Status s = InstallStopSignalHandlers(); !s.ok())
    spdlog::warn("re-installing signal handlers: {}", std::string(s.message()));
  ctx.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  metrics.SetModelLoadSeconds(ctx.load_seconds);
  std::unique_ptr<Evaluator> evaluator;
  if (!o.eval_set.empty()) {
    EvalOptions ev;
    ev.eval_set = o.eval_set;
    ev.batch_size = o.batch_size;
    ev.generate_tokens = o.eval_generate_tokens;
    ev.generate_prompts = o.eval_generate_prompts;
    ev.fp8_matmul = o.eval_fp8_matmul;
    auto created = Evaluator::Create(engine->get(), ev);
    if (!created.ok()) fail_loading(created.status(), "loading the evaluation set");
    evaluator = *std::move(created);
    spdlog::info("evaluation set {}: {} samples ({} with images)", o.eval_set, evaluator->samples(),
                 evaluator->samples_with_images());
  }
  Engine* e = engine->get();
  EngineFacts facts{
      .model_fingerprint = e->model_fingerprint(),
      .calib_fingerprint = e->calib_fingerprint(),
      .device = e->device(),
      .dtype = e->dtype(),
      .calib_samples = static_cast<int64_t>(e->calib_samples()),
      .device_memory = [e] { return e->device_memory(); },
      .cached_baseline_keys = [e] { return e->cached_baseline_keys(); },
      .cached_baseline = [e](ScoreMethod m, int calib_steps, int score_steps,
                             bool vision) { return e->CachedBaseline(m, calib_steps, score_steps, vision); }};
  EvalSetFacts eval_facts;
  if (evaluator) {
    eval_facts = {evaluator->options().eval_set.string(), evaluator->fingerprint(),
                  static_cast<int64_t>(evaluator->samples())};
    ctx.eval_set = &eval_facts;
  }
  ctx.engine = &facts;
  // --layout is checked by its flag's validator; the fallback never applies.
  // The job store also keeps the records of the blobs this daemon produced (blob_records.h).
  EngineJobRunner runner(engine->get(), o.models_root, evaluator.get(),
                         ParseExportLayout(o.layout).value_or(ExportLayout::kShared), store->get());
  jobs.Start(&runner);
  serving = true;
  SetHealth(server.get(), true);
  metrics.SetServing(true);
  spdlog::info("serving: model {} on {} ({}), loaded and warmed up in {:.2f} s", o.model, (*engine)->device(),
               (*engine)->dtype(), ctx.load_seconds.load());

  std::thread sampler([&] {
    std::unique_lock<std::mutex> lock(stop_mu);
    bool healthy = true;
    while (!stop) {
      // NOT_SERVING while the job store cannot record jobs (a full disk), SERVING again once it can.
      if (const bool up = jobs.serving(); up != healthy) {
        healthy = up;
        SetHealth(server.get(), up);
        metrics.SetServing(up);
      }
      DeviceMemory m = (*engine)->device_memory();
      metrics.SetDeviceMemory(m.allocated, m.reserved, m.peak_reserved, m.total);
      if (fleet) {
        // Other daemons change the shared table too: follow it, not only this daemon's own changes.
        lock.unlock();
        if (auto counts = (*store)->CountByState(); counts.ok()) {
          metrics.SetJobCounts(*counts);
          metrics.OnQueueDepth((*counts)[JobState::kQueued]);
        }
        lock.lock();
      }
      stop_cv.wait_for(lock, std::chrono::seconds(1));
    }
  });

  {
    std::unique_lock<std::mutex> lock(stop_mu);
    stop_cv.wait(lock, [&] { return stop; });
  }
  SetHealth(server.get(), false);
  metrics.SetServing(false);
  jobs.Drain();  // the running job stops at its next check and is re-queued
  // Queued RPCs answer UNAVAILABLE, running ones finish, later ones are refused at once; then gRPC's
  // Shutdown, which waits for every call to be finished, has no call left that only the executor would finish.
  writes.Stop();
  reads.Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  sampler.join();
  signals.join();
  spdlog::info("stopped cleanly");
  return 0;
}

}  // namespace autoquant

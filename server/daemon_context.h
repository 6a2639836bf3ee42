// What autoquantd's RPC handlers share: the job manager, auth, metrics, the
// request pools their work runs on, and what they read of the engine and the evaluation set once loaded (null while
// loading). Owned by main.
//
// The handlers reach the engine only through EngineInfo (core/engine/engine_info.h,
// torch-free), so the service library neither links nor builds the engine: its
// tests, ThreadSanitizer's included, run it with a scripted runner and no model.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/engine/engine_info.h"
#include "core/jobs/job_manager.h"
#include "core/quant/baseline.h"
#include "server/daemon_metrics.h"
#include "server/request_executor.h"
#include "server/token_auth.h"

namespace autoquant {

struct EvalSetFacts {
  std::string path, fingerprint;
  int64_t samples = 0;
};

struct DaemonContext {
  JobManager* jobs = nullptr;
  const TokenAuth* auth = nullptr;
  DaemonMetrics* metrics = nullptr;
  // Run every handler's parse, store and file work off the gRPC callback threads (both required): `writes`
  // the RPCs that write the job store (submits, cancels), `reads` the others, so that writes stalled
  // in the store never hold the threads reads need. Stopped and joined before this context and the
  // service are destroyed.
  RequestExecutor* writes = nullptr;
  RequestExecutor* reads = nullptr;
  std::atomic<const EngineInfo*> engine{nullptr};      // null while loading
  std::atomic<const EvalSetFacts*> eval_set{nullptr};  // null: no --eval-set, or still loading
  std::atomic<double> load_seconds{0};
  int batch_size = 1;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::string model_path, calib_path, models_root, metrics_address;
  std::string daemon_id;  // this daemon's owner id in the job store (leases, logs)
  std::string job_store;  // --store, any password redacted
};

}  // namespace autoquant

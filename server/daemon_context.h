// What autoquantd's RPC handlers share: the job manager, auth, metrics, and
// the engine once it is loaded (null while loading). Owned by main.
#pragma once

#include <atomic>
#include <chrono>
#include <string>

#include "core/eval/evaluator.h"
#include "core/jobs/job_manager.h"
#include "core/quant/engine.h"
#include "server/daemon_metrics.h"
#include "server/token_auth.h"

namespace autoquant {

struct DaemonContext {
  JobManager* jobs = nullptr;
  const TokenAuth* auth = nullptr;
  DaemonMetrics* metrics = nullptr;
  std::atomic<Engine*> engine{nullptr};
  std::atomic<const Evaluator*> evaluator{nullptr};  // null: no --eval-set, or still loading
  std::atomic<double> load_seconds{0};
  int batch_size = 1;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::string model_path, calib_path, models_root, metrics_address;
};

}  // namespace autoquant

// autoquantd's command line (DESIGN.md's names): flags, a TOML/INI
// --config file with the same keys (CLI11), and the checks that must pass
// before anything starts.
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace autoquant {

struct DaemonOptions {
  std::string model;        // base checkpoint directory
  std::string calib;        // calibration set file
  std::string models_root;  // where schemes are written
  std::string listen = "127.0.0.1:50051";
  std::string metrics;         // HOST:PORT (or a bare PORT: loopback) for /metrics; empty = off (metrics_http.h)
  std::string store;           // sqlite:PATH (default under the models root) | postgresql://... (fleet mode)
  std::string baseline_cache;  // default under the models root
  std::string device = "auto";
  std::string dtype = "auto";
  int batch_size = 1;
  int export_threads = 0;         // standalone exports' writer threads; 0: the engine's rule (EngineOptions)
  std::string layout = "shared";  // scheme_spec.h's ExportLayout: the default for jobs that name none
  int64_t max_queued = 10000;
  // RPC work (parse, job store, scheme files) runs on two pools (writes, reads) of this many threads each,
  // never on gRPC's (request_executor.h); beyond request_queue waiting RPCs in a pool, new ones get
  // RESOURCE_EXHAUSTED.
  int request_threads = 8;
  int64_t request_queue = 256;
  int max_attempts = 2;       // a job cut off mid-run (crash, kill -9) is re-queued until started this often
  double lease_seconds = 30;  // fleet mode: a claimed job is this daemon's for this long without a heartbeat
  std::string token_file;     // or AUTOQUANT_TOKEN
  bool insecure = false;      // allow --listen and --metrics off loopback without a token
  // Start although the models root or its .autoquant/ may be written by other users (models_root_check.h).
  bool insecure_models_root = false;
  std::string tls_cert, tls_key, tls_client_ca;
  std::string log_level = "info";
  // Evaluation (docs/evaluation.md); empty eval_set: evaluation refused.
  std::string eval_set;
  int eval_generate_tokens = 16;
  int eval_generate_prompts = 2;
  std::string eval_fp8_matmul = "auto";
};

void AddDaemonOptions(CLI::App& app, DaemonOptions* o);

// Gives every long flag already on `app` (but --help, --version and --config) an environment
// variable, AUTOQUANTD_ plus the flag's name in upper case with '-' as '_' (--batch-size:
// AUTOQUANTD_BATCH_SIZE), shown in --help. Call it after the last flag is added. Precedence
// (CLI11): the command line, then the --config file, then the environment; an empty variable
// counts as unset.
void AddDaemonEnvNames(CLI::App& app);
std::string DaemonEnvName(const std::string& long_flag);

// Fills defaults that depend on other flags and checks combinations:
// InvalidArgument with a message naming the flag to fix.
absl::Status FinishDaemonOptions(DaemonOptions* o);

// True for "localhost" and address literals in 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104; host
// names are not resolved, so "127.example.com" is not loopback.
bool IsLoopbackHost(const std::string& host);
// IsLoopbackHost of HOST in HOST:PORT or [HOST]:PORT; true for unix sockets.
bool IsLoopbackAddress(const std::string& host_port);
// HOST of HOST:PORT or [HOST]:PORT (without the brackets).
std::string HostOf(const std::string& host_port);

}  // namespace autoquant

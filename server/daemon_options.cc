#include "server/daemon_options.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace autoquant {

void AddDaemonOptions(CLI::App& app, DaemonOptions* o) {
  app.set_config("--config", "", "TOML or INI file whose keys are these flags' long names (e.g. listen = \"...\")");
  app.add_option("--model", o->model, "base checkpoint directory (Hugging Face layout)")->required();
  app.add_option("--calib", o->calib, "calibration set (autoquant calib synth format)")->required();
  app.add_option("--models-root", o->models_root, "directory the schemes are written under")->required();
  app.add_option("--listen", o->listen,
                 "gRPC address HOST:PORT; port 0 picks a free port, printed as stdout's first line")
      ->capture_default_str();
  app.add_option("--metrics", o->metrics,
                 "Prometheus /metrics address HOST:PORT (port 0: any free port), or a bare PORT meaning "
                 "127.0.0.1:PORT; empty: off. Like --listen, off loopback it needs a token or --insecure; with a "
                 "token every scrape must send it (bearer, or basic auth with the token as password)")
      ->capture_default_str();
  app.add_option(
      "--store", o->store,
      "job store: sqlite:PATH (one daemon; default sqlite:<models-root>/.autoquant/jobs.db) or "
      "postgresql://USER[:PASSWORD]@HOST:PORT/DB (fleet mode: daemons sharing one job table, docs/fleet.md)");
  app.add_option("--baseline-cache", o->baseline_cache,
                 "sensitivity baseline cache directory (default <models-root>/.autoquant/baselines)");
  app.add_option("--device", o->device, "auto | cpu | cuda | cuda:N")->capture_default_str();
  app.add_option("--dtype", o->dtype, "auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float32")->capture_default_str();
  app.add_option("--batch-size", o->batch_size, "samples per calibration / scoring batch")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--export-threads", o->export_threads,
                 "threads that write a standalone export's tensors; 0: on a GPU half the logical CPUs less 2 "
                 "(from 2 to 8), on the CPU 8")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--layout", o->layout,
                 "how schemes store their weights unless a job says: shared (each group's BF16 and FP8 versions "
                 "written once under <models-root>/.autoquant/blobs and hard-linked into every scheme) | standalone")
      ->capture_default_str()
      ->check(CLI::IsMember({"shared", "standalone"}));
  app.add_option("--max-queued", o->max_queued, "submits beyond this many queued jobs get RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--request-threads", o->request_threads,
                 "threads, in each of two pools (writes: submits and cancels; reads: status, lists, logs, reports), "
                 "that run RPCs' work (parsing, the job store, scheme files) off gRPC's own threads, so that a slow "
                 "store or file never stops health, and stalled writes never stop reads, from answering")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--request-queue", o->request_queue,
                 "RPCs that may wait for a request thread, in each pool; beyond this, new RPCs get RESOURCE_EXHAUSTED "
                 "(the server is busy, retry)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-attempts", o->max_attempts,
                 "times a job is started before a crash mid-run fails it instead of re-queueing it")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--lease-seconds", o->lease_seconds,
                 "fleet mode: how long a claimed job stays this daemon's without a heartbeat (renewed every third of "
                 "it, at most every 2 s); a dead daemon's job is re-queued this long after its last heartbeat")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--token-file", o->token_file,
                 "file holding the bearer token every RPC must send (else $AUTOQUANT_TOKEN); "
                 "required when listening off loopback");
  app.add_flag("--insecure", o->insecure,
               "allow --listen and --metrics off loopback without a token (not recommended)");
  app.add_flag("--insecure-models-root", o->insecure_models_root,
               "start although the models root or its .autoquant/ is writable by group or others, or owned by "
               "another user (then another user can swap what the daemon writes or reads; docs/security.md)");
  app.add_option("--tls-cert", o->tls_cert, "PEM server certificate (enables TLS)");
  app.add_option("--tls-key", o->tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", o->tls_client_ca,
                 "PEM CA bundle; clients must present a certificate it signed (mTLS)");
  app.add_option("--eval-set", o->eval_set,
                 "held-out evaluation set (calibration format) for evaluate jobs; none: evaluation refused")
      ->check(CLI::ExistingFile);
  app.add_option("--eval-generate-tokens", o->eval_generate_tokens,
                 "greedy tokens per sanity-generation prompt (0: no generation)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--eval-generate-prompts", o->eval_generate_prompts,
                 "sanity-generation prompts of each kind (text-only, with images) from the evaluation set")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--eval-fp8-matmul", o->eval_fp8_matmul,
                 "how evaluation runs FP8 Linears: auto (_scaled_mm on compute capability >= 8.9, else emulated) | "
                 "scaled_mm | emulated")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "scaled_mm", "emulated"}));
  app.add_option("--log-level", o->log_level, "debug | info | warning | error")->capture_default_str();
}

void AddDaemonEnvNames(CLI::App& app) {
  // Containers configure through the environment (Dockerfile, docker-compose.yml, deploy/k8s), so every
  // flag gets one derived name instead of a hand-kept list that a new flag could miss. --config is left
  // out: CLI11 reads the config file before the environment, so an env name for it would be ignored.
  for (CLI::Option* opt : app.get_options()) {
    if (opt->get_lnames().empty()) continue;
    const std::string& name = opt->get_lnames().front();
    if (name == "help" || name == "version" || name == "config" || !opt->get_envname().empty()) continue;
    opt->envname(DaemonEnvName(name));
  }
}

std::string DaemonEnvName(const std::string& long_flag) {
  std::string env = "AUTOQUANTD_";
  for (char c : long_flag) env += c == '-' ? '_' : absl::ascii_toupper(static_cast<unsigned char>(c));
  return env;
}

bool IsLoopbackHost(const std::string& host) {
  if (absl::AsciiStrToLower(host) == "localhost") return true;
  // An address literal, parsed: a prefix test would pass "127.evil.example", a name anyone can point anywhere.
  in_addr v4;
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;  // ::ffff:127.x.y.z
  }
  return false;
}

std::string HostOf(const std::string& hp) {
  if (absl::StartsWith(hp, "[")) {
    const size_t close = hp.find(']');
    return close == std::string::npos ? "" : hp.substr(1, close - 1);
  }
  const size_t colon = hp.rfind(':');
  return colon == std::string::npos ? hp : hp.substr(0, colon);
}

bool IsLoopbackAddress(const std::string& hp) {
  if (absl::StartsWith(hp, "unix:") || absl::StartsWith(hp, "unix-abstract:")) return true;
  return IsLoopbackHost(HostOf(hp));
}

absl::Status FinishDaemonOptions(DaemonOptions* o) {
  namespace fs = std::filesystem;
  if (o->store.empty()) o->store = "sqlite:" + (fs::path(o->models_root) / ".autoquant" / "jobs.db").string();
  if (o->baseline_cache.empty()) o->baseline_cache = (fs::path(o->models_root) / ".autoquant" / "baselines").string();
  if (o->tls_cert.empty() != o->tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together; give both or neither");
  }
  if (!o->tls_client_ca.empty() && o->tls_cert.empty()) {
    return absl::InvalidArgumentError("--tls-client-ca (mTLS) needs --tls-cert and --tls-key");
  }
  if (o->listen.empty()) return absl::InvalidArgumentError("--listen needs HOST:PORT, e.g. 127.0.0.1:50051");
  return absl::OkStatus();
}

}  // namespace autoquant

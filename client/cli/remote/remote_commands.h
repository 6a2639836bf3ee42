// The `autoquant` commands that drive a running autoquantd over gRPC:
//
//   autoquant submit SCHEME --coverage top50 [--wait]
//   autoquant sweep --coverages 10,50,100 [--only top10] [--dry-run] [--wait]
//   autoquant sweep --coverage-manifests DIR [--suffix _v2]     (the seeds' layout, sweep_plan.h)
//   autoquant status JOB...   autoquant wait JOB...   autoquant logs JOB [-f] [--from SEQ]
//   autoquant eval SCHEME... [--wait]   (evaluate existing schemes; submit/sweep take --evaluate)
//   autoquant list [--state S]   autoquant cancel JOB...   autoquant sensitivity   autoquant server
//   info
//
// Every command takes --server/--token-file (else $AUTOQUANT_SERVER /
// $AUTOQUANT_TOKEN_FILE), --tls-ca/--tls-cert/--tls-key and --json. Waiting
// shows live progress on a terminal and plain lines otherwise (job_view.h).
// Exit codes: RemoteExitCodeFor (exit_codes.h): 1 when a waited-for job
// failed or was cancelled, 3 when the server is unreachable or refuses the
// token.
//
// This header is torch-free and gRPC-free, so main.cc (a torch translation
// unit) can include it; the implementation includes gRPC and no torch.
#pragma once

#include <string>
#include "CLI/CLI.hpp"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace autoquant::cli {

// Adds the commands to `app`. When one of them runs, it sets *ran to true and
// its outcome to *status.
void AddRemoteCommands(CLI::App& app, absl::Status* status, bool* ran);

// The output directory of a succeeded job, asked of the daemon at `server`
// (empty: $AUTOQUANT_SERVER, else the default; token and TLS from the
// environment as for the remote commands). FailedPrecondition for a job that
// has not succeeded; the daemon's codes otherwise. For `autoquant report JOB`:
// the directory is read locally, so it must be on a volume shared with the daemon.
absl::StatusOr<std::string> RemoteJobOutputDir(const std::string& server, const std::string& job_id);

}  // namespace autoquant::cli

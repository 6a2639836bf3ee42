// What the remote commands share: the options every one of them takes, how a
// list of jobs is printed, and waiting for jobs with progress.
// Includes gRPC: never include this from a translation unit that includes torch.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "client/cli/remote/connection.h"

namespace autoquant::cli {

struct CommonOptions {
  ConnectionOptions connection;
  bool json = false;
};

// The connection options and --json on `cmd`.
void AddCommonOptions(CLI::App* cmd, CommonOptions* o);

// {"jobs": [...]} with --json, else one JobLine per job.
void PrintJobs(const std::vector<v1::Job>& jobs, bool json, std::ostream& out);

// Polls the jobs until every one is terminal, showing progress on `out` (in
// place when `out` is a terminal; nothing when `quiet`). Returns their last
// states; the RPC's error if a poll fails.
absl::StatusOr<std::vector<v1::Job>> WaitForJobs(const Connection& c, const std::vector<std::string>& ids, bool quiet,
                                                 std::ostream& out);

// Aborted (exit code 1) naming each job that did not succeed; OK otherwise.
absl::Status AllSucceeded(const std::vector<v1::Job>& jobs);

// A CLI callback body's Status (and that a remote command ran).
struct CommandResult {
  absl::Status* status;
  bool* ran;
  void Set(absl::Status s) const {
    *ran = true;
    *status = std::move(s);
  }
};

void AddSubmitCommand(CLI::App& app, CommandResult result);
void AddSweepCommand(CLI::App& app, CommandResult result);
void AddEvalCommand(CLI::App& app, CommandResult result);

}  // namespace autoquant::cli

// `autoquant report SCHEME_DIR... --out DIR [--no-plot] [--allow-mixed-inputs] [--overwrite]`:
// the coverage trade-off of evaluated schemes (core/eval/report.h). Writes DIR/report.json and
// DIR/report.md atomically, then draws DIR/report.png with
// `python3 -m autoquant_client.report_plot report.json report.png` ($AUTOQUANT_PYTHON, else python3
// on PATH).
//
// Outputs follow path_guard.h: none may lie inside a scheme directory, and an existing report file
// is replaced only with --overwrite and only if an earlier `autoquant report` wrote it.
//
// Status: NotFound for a scheme without evaluation.json (the message says how to evaluate it),
// InvalidArgument for malformed inputs or mixed eval sets / base models, FailedPrecondition when
// drawing the plot failed (report.json and report.md are written by then), DataLoss when two
// schemes are identical (everything is written; the sweep's points are not distinct models).
#pragma once

#include <filesystem>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace autoquant::cli {

// Maps an argument that is not a directory (a job id) to its scheme directory.
using JobDirResolver = std::function<absl::StatusOr<std::filesystem::path>(const std::string& job_id)>;

struct ReportCommandOptions {
  std::vector<std::string> inputs;  // scheme directories (job ids once resolve_job is set)
  std::string out;
  bool no_plot = false;
  bool allow_mixed_inputs = false;
  bool overwrite = false;
  // The seam for job ids: unset, an argument that is not a directory is refused with a message
  // saying that job ids need a daemon; the daemon-backed commands set it to look the job's
  // output directory up.
  JobDirResolver resolve_job;
  std::string server;  // for job ids; empty: $AUTOQUANT_SERVER
  // The interpreter for the plot; empty: $AUTOQUANT_PYTHON, else python3 on PATH.
  std::string python;
};

// `out` gets the paths written, `log` the findings as warnings.
absl::Status RunReport(const ReportCommandOptions& options, std::ostream& out, std::ostream& log);
// *asked_daemon becomes true once a job id was looked up on a daemon, so that
// an unreachable one exits 3 as for the remote commands.
void AddReportCommand(CLI::App& app, absl::Status* status, bool* asked_daemon);

}  // namespace autoquant::cli

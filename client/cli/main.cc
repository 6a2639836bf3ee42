// The `autoquant` command line. Each subcommand lives in its own file and
// reports an absl::Status; this file only parses argv and maps the Status to
// a message on stderr and an exit code.
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "client/cli/calib_command.h"
#include "client/cli/diff_command.h"
#include "client/cli/inspect_command.h"
#include "client/cli/model_command.h"
#include "client/cli/quantize_command.h"

int main(int argc, char** argv) {
  CLI::App app{"autoquant: FP8 AutoQuant schemes for Qwen2.5-VL"};
  app.set_version_flag("--version", std::string("autoquant ") + AUTOQUANT_VERSION);
  app.require_subcommand(1);
  absl::Status status;
  autoquant::cli::AddInspectCommand(app, &status);
  autoquant::cli::AddModelCommand(app, &status);
  autoquant::cli::AddCalibCommand(app, &status);
  autoquant::cli::AddQuantizeCommand(app, &status);
  autoquant::cli::AddDiffCommand(app, &status);
  CLI11_PARSE(app, argc, argv);
  if (!status.ok()) {
    std::cerr << "autoquant: error: " << status.message() << "\n";
    switch (status.code()) {
      case absl::StatusCode::kInvalidArgument:
      case absl::StatusCode::kNotFound:
      case absl::StatusCode::kAlreadyExists:
      case absl::StatusCode::kOutOfRange:
        return 2;  // the request was wrong
      default:
        return 1;
    }
  }
  return 0;
}

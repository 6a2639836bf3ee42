// `autoquant inspect PATH [--json]`: lists the tensors of a .safetensors file
// or a checkpoint directory (name, dtype, shape, bytes) and their totals.
#pragma once

#include <ostream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace autoquant::cli {

struct InspectOptions {
  std::string path;
  bool json = false;
};

// Writes the listing to `out`. Errors (missing or malformed files) come back
// as the Status from core/io, which names the file and the problem.
absl::Status RunInspect(const InspectOptions& options, std::ostream& out);

// Registers the subcommand; `status` receives the result when it runs.
void AddInspectCommand(CLI::App& app, absl::Status* status);

}  // namespace autoquant::cli

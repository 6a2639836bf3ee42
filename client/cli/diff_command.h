// `autoquant diff DIR DIR... [--json]`: verifies each scheme's tensor digests
// against its manifest (core/scheme/integrity.h), then the weight-diversity
// check across scheme directories (core/scheme/scheme_diff.h). Exit code 1 when
// a tensor's bytes changed since export (the error names the tensor), two
// schemes are bit-identical, or a scheme disagrees with its own manifest.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace autoquant::cli {

struct DiffOptions {
  std::vector<std::string> dirs;
  bool json = false;
};

// FailedPrecondition when the check fails (the report is printed either way).
absl::Status RunDiff(const DiffOptions& options, std::ostream& out);
void AddDiffCommand(CLI::App& app, absl::Status* status);

}  // namespace autoquant::cli

// `autoquant gc --models-root DIR [--min-age-seconds N] [--dry-run] [--json]`:
// frees the shared-layout blobs (<models-root>/.autoquant/blobs) that no
// scheme links any more, e.g. after schemes were deleted. Blobs younger than
// --min-age-seconds (default one hour) are kept, so an export running now is
// never robbed of a blob it stored but has not linked yet.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace autoquant::cli {

struct GcOptions {
  std::string models_root;
  int64_t min_age_seconds = 3600;
  bool dry_run = false, json = false;
};

absl::Status RunGc(const GcOptions& options, std::ostream& out);
void AddGcCommand(CLI::App& app, absl::Status* status);

}  // namespace autoquant::cli

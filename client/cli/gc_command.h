// `autoquant gc --models-root DIR [--min-age-seconds N] [--dry-run] [--json]`:
// frees the shared-layout blobs (<models-root>/.autoquant/blobs) that no
// scheme links any more, e.g. after schemes were deleted, and the refs/ of
// earlier versions. It runs only while no export uses the store: each export
// (of autoquantd, or of `autoquant quantize --layout shared`) holds the
// store's use lock shared from before it looks a blob up until every blob is
// linked into its staging directory, and gc takes it exclusively without
// waiting, or refuses (UNAVAILABLE, naming the process holding it: retry
// when no job runs, or stop the daemon). Blobs younger than
// --min-age-seconds (default one hour) are kept as well, for exports of
// versions that took no lock.
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

// How a scheme's weights are stored on disk (export.h has the details):
// standalone shards of its own, or shared content-addressed blobs hard-linked
// into the scheme directory. Torch-free: the job runner and the CLI parse it.
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace autoquant {

enum class ExportLayout { kStandalone, kShared };

inline absl::string_view ExportLayoutName(ExportLayout layout) {
  return layout == ExportLayout::kShared ? "shared" : "standalone";
}

inline absl::StatusOr<ExportLayout> ParseExportLayout(absl::string_view name) {
  if (name == "standalone") return ExportLayout::kStandalone;
  if (name == "shared") return ExportLayout::kShared;
  return absl::InvalidArgumentError(absl::StrCat("unknown output layout '", name, "' (shared | standalone)"));
}

}  // namespace autoquant

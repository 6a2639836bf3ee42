// How the CLI recognises its own earlier outputs, the only things
// --overwrite may replace (path_guard.h). Each output kind carries a mark:
//   a scheme directory      its quant manifest names autoquant as producer (manifests.h)
//   a `model init` checkpoint  safetensors metadata "autoquant.format": "autoquant.random-checkpoint.v1"
//   a calibration set       safetensors metadata "autoquant.format": "autoquant.calib.v1"
//   `model forward` logits  safetensors metadata "autoquant.format": "autoquant.logits.v1"
#pragma once

#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace autoquant::cli {

inline constexpr char kLogitsFormat[] = "autoquant.logits.v1";

// OK if `path` is a safetensors file whose "autoquant.format" metadata is `format`.
absl::Status RecogniseSafetensors(const std::filesystem::path& path, absl::string_view format);

// OK if `dir` is a checkpoint whose first shard carries "autoquant.format" = `format`.
absl::Status RecogniseCheckpointDir(const std::filesystem::path& dir, absl::string_view format);

}  // namespace autoquant::cli

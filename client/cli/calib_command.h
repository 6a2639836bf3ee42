// `autoquant calib synth`: a synthetic calibration / evaluation set in the
// format of docs/calibration-format.md.
//   calib synth --model DIR --out FILE --samples N --seq-len L
//               [--images-per-sample K] [--image-size HxW] [--seed N] [--overwrite]
// The output follows path_guard.h (never over the model; --overwrite replaces
// only a calibration set we wrote) and is written atomically.
#pragma once

#include <cstdint>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace autoquant::cli {

struct CalibSynthOptions {
  std::string model, out, image_size = "224x224";
  int64_t samples = 0, seq_len = 0, images_per_sample = 1;
  uint64_t seed = 0;
  bool overwrite = false;
};

// Only the checkpoint's config.json is read (token ids, patch geometry).
absl::Status RunCalibSynth(const CalibSynthOptions& options);

void AddCalibCommand(CLI::App& app, absl::Status* status);

}  // namespace autoquant::cli

#include "client/cli/calib_command.h"

#include <iostream>
#include <memory>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/cli/leftovers.h"
#include "client/cli/output_recognisers.h"
#include "core/model/qwen2_5_vl/calib_set.h"
#include "core/model/qwen2_5_vl/config.h"
#include "core/util/file_util.h"
#include "core/util/path_guard.h"
#include "core/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace autoquant::cli {

absl::Status RunCalibSynth(const CalibSynthOptions& o) {
  RETURN_IF_ERROR(
      CheckOutputPath({.path = o.out,
                       .kind = OutputKind::kFile,
                       .overwrite = o.overwrite,
                       .what = "--out",
                       .is_ours = [](const std::filesystem::path& p) { return RecogniseSafetensors(p, kCalibFormat); }},
                      {{o.model, "the model directory"}}));
  const std::filesystem::path config_path = std::filesystem::path(o.model) / "config.json";
  ASSIGN_OR_RETURN(std::string text, ReadFile(config_path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(config_path.string(), ": not valid JSON"));
  ASSIGN_OR_RETURN(Qwen2_5_VLConfig config, ParseQwen2_5_VLConfig(j, config_path.string()));
  SynthOptions synth;
  synth.samples = o.samples;
  synth.seq_len = o.seq_len;
  synth.images_per_sample = o.images_per_sample;
  synth.seed = o.seed;
  std::vector<std::string> hw = absl::StrSplit(o.image_size, 'x');
  if (hw.size() != 2 || !absl::SimpleAtoi(hw[0], &synth.image_height) || !absl::SimpleAtoi(hw[1], &synth.image_width)) {
    return absl::InvalidArgumentError(absl::StrCat("--image-size must be HxW, got '", o.image_size, "'"));
  }
  ASSIGN_OR_RETURN(CalibSet set, SynthesizeCalibSet(config, synth));
  RemoveLeftoversBeside(o.out, std::cerr);
  return set.Save(o.out);
}

void AddCalibCommand(CLI::App& app, absl::Status* status) {
  CLI::App* calib = app.add_subcommand("calib", "Calibration / evaluation sets");
  calib->require_subcommand(1);
  auto opts = std::make_shared<CalibSynthOptions>();
  CLI::App* c = calib->add_subcommand("synth", "Write a synthetic set (random tokens and pixels)");
  c->add_option("--model", opts->model, "checkpoint directory (its config.json is read)")
      ->required()
      ->check(CLI::ExistingDirectory);
  c->add_option("--out", opts->out, "output .safetensors file (written atomically)")->required();
  c->add_flag("--overwrite", opts->overwrite, "replace an existing --out, if it is a calibration set we wrote");
  c->add_option("--samples", opts->samples, "number of samples")->required();
  c->add_option("--seq-len", opts->seq_len, "tokens per sample, images included")->required();
  c->add_option("--images-per-sample", opts->images_per_sample, "images per sample");
  c->add_option("--image-size", opts->image_size, "HxW pixels, multiples of 28");
  c->add_option("--seed", opts->seed, "random seed");
  c->callback([opts, status] { *status = RunCalibSynth(*opts); });
}

}  // namespace autoquant::cli

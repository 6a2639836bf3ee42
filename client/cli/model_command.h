// `autoquant model ...`: offline commands on a Qwen2.5-VL checkpoint.
//   model config   --preset NAME [--dtype bfloat16|float32]   (the preset's config.json on stdout)
//   model init     --preset tiny|qwen2.5-vl-3b|qwen2.5-vl-7b --out DIR [--seed N] [--dtype bfloat16|float32]
//   [--overwrite] model forward  --model DIR --input IN.safetensors --output OUT.safetensors [--overwrite]
//                  [--device cpu|cuda] [--dtype float32|bfloat16]
// Outputs follow path_guard.h: never over an input; --overwrite replaces only
// an earlier output of the same command (output_recognisers.h).
//   model generate --model DIR --inputs CALIB.safetensors --sample I [--max-new-tokens N]
//                  [--stop-token-ids eos|none|ID,...] [--device auto|cpu|cuda] [--dtype float32|bfloat16] [--json]
//                  (greedy generation from one sample, its padding stripped; prints the tokens)
//   model bench    --model DIR [--device cuda] [--dtype bfloat16] [--batch B] [--text-tokens T]
//                  [--image HxW] [--images K] [--iters N] [--warmup W]   (prints one JSON object)
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace autoquant::cli {

struct ModelInitOptions {
  std::string preset, out, dtype = "bfloat16";
  uint64_t seed = 0;
  bool overwrite = false;
};

struct ModelForwardOptions {
  std::string model, input, output, device = "cpu", dtype;  // dtype "": float32 on cpu, bfloat16 on cuda
  bool overwrite = false;
};

struct ModelGenerateOptions {
  std::string model, inputs, device = "auto", dtype;  // dtype "": float32 on cpu, bfloat16 on cuda
  std::string stop_token_ids = "eos";                 // eos | none | comma-separated ids
  int64_t sample = 0, max_new_tokens = 16;
  bool json = false;
};

struct ModelBenchOptions {
  std::string model, device = "cuda", dtype, image = "448x448";
  int64_t batch = 1, text_tokens = 512, images = 1, iters = 10, warmup = 2;
};

absl::Status RunModelInit(const ModelInitOptions& options);
// Reads input_ids [B,S] int64, optional attention_mask [B,S], pixel_values
// [patches, C*T*P*P] and image_grid_thw [images, 3]; writes logits [B,S,vocab] float32.
absl::Status RunModelForward(const ModelForwardOptions& options);
// Greedy generation (core/model/qwen2_5_vl/generate.h) from sample `sample`
// of a calibration-format file, on a base checkpoint or a scheme directory.
// Prints the tokens, whether every logit was finite, and timings; with json one
// object {"tokens", "finite", "prefill_seconds", "decode_seconds",
// "tokens_per_second"} (decode steps per second; 0 without decode steps).
// Stop ids "eos": generation_config.json's eos_token_id, else config.json's.
// Non-finite logits end generation but are not an error.
absl::Status RunModelGenerate(const ModelGenerateOptions& options, std::ostream& out);
absl::Status RunModelBench(const ModelBenchOptions& options, std::ostream& out);

void AddModelCommand(CLI::App& app, absl::Status* status);

}  // namespace autoquant::cli

// `autoquant model ...`: offline commands on a Qwen2.5-VL checkpoint.
//   model init     --preset tiny|qwen2.5-vl-3b --out DIR [--seed N] [--dtype bfloat16|float32] [--overwrite]
//   model forward  --model DIR --input IN.safetensors --output OUT.safetensors [--overwrite]
//                  [--device cpu|cuda] [--dtype float32|bfloat16]
// Outputs follow path_guard.h: never over an input; --overwrite replaces only
// an earlier output of the same command (output_recognisers.h).
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

struct ModelBenchOptions {
  std::string model, device = "cuda", dtype, image = "448x448";
  int64_t batch = 1, text_tokens = 512, images = 1, iters = 10, warmup = 2;
};

absl::Status RunModelInit(const ModelInitOptions& options);
// Reads input_ids [B,S] int64, optional attention_mask [B,S], pixel_values
// [patches, C*T*P*P] and image_grid_thw [images, 3]; writes logits [B,S,vocab] float32.
absl::Status RunModelForward(const ModelForwardOptions& options);
absl::Status RunModelBench(const ModelBenchOptions& options, std::ostream& out);

void AddModelCommand(CLI::App& app, absl::Status* status);

}  // namespace autoquant::cli

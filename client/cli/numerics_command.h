// `autoquant numerics --format F --in X.safetensors --out Y.safetensors
// [--device cpu|cuda]`: applies a quantization format's own numerics to every
// float tensor of a file, so that other tools (ModelOpt, vLLM, a plain torch
// restatement) can be compared with ours byte for byte without going through
// a model. For each tensor T (amax: the tensor "T.amax" when the file has
// one, else max |T|):
//
//   T.fake          the fake quantizer the scores use (ModelOpt's), T's dtype
//   FP8:   T.q (float8_e4m3fn), T.scale (amax / 448, float32)
//   NVFP4 and W4A16_NVFP4:
//          T.packed (uint8), T.block_scale (float8_e4m3fn), T.global_scale
//          (float32: the export's, ModelOpt's), T.dequant (float32),
//          T.vllm_input (vLLM's activation quantization with the static
//          global scale 1 / (amax / 2688), T's dtype)
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace autoquant::cli {

struct NumericsOptions {
  std::string format;
  std::string input, output;
  std::string device = "cpu";
};

absl::Status RunNumerics(const NumericsOptions& options);
void AddNumericsCommand(CLI::App& app, absl::Status* status);

}  // namespace autoquant::cli

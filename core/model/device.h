// Where and in which dtype a model runs: the one parser for --device and
// --dtype, shared by every command and by the engine.
//
//   ASSIGN_OR_RETURN(torch::Device device, ParseDevice(options.device));
//   ASSIGN_OR_RETURN(torch::ScalarType dtype, ParseDtype(options.dtype, device));
//
// Both are cheap and load nothing, so callers check them before any model
// is loaded. Thread-safe.
#pragma once

#include <torch/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace autoquant {

// "auto" (CUDA device 0 if one is visible, else the CPU), "cpu", "cuda" or
// "cuda:N". InvalidArgument for any other name, naming the accepted ones;
// FailedPrecondition for a CUDA device that is not visible.
absl::StatusOr<torch::Device> ParseDevice(const std::string& name);

// "auto" or "" (bfloat16 on CUDA, float32 on the CPU), "bfloat16" / "bf16",
// "float32" / "fp32". InvalidArgument for any other name.
absl::StatusOr<torch::ScalarType> ParseDtype(const std::string& name, const torch::Device& device);

}  // namespace autoquant

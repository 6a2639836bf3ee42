// Loads an FP8 scheme checkpoint (ours, or any per-tensor FP8 checkpoint in
// the ModelOpt / compressed-tensors layout: <m>.weight float8_e4m3fn +
// <m>.weight_scale + <m>.input_scale) as a model that computes what an FP8
// engine computes: quantized Linears get their weights dequantized
// (fp8 * weight_scale) and their inputs fake-quantized with input_scale
// (amax = input_scale * 448, ModelOpt's fake-quant formula). This is "our
// fake-quant forward", used by evaluation and by `autoquant model forward`
// on scheme directories. NVFP4 Linears (nvfp4_storage.h, either encoding)
// likewise: weights dequantized as ModelOpt does, W4A4 inputs through
// ModelOpt's NVFP4 fake quantizer (amax = input global scale * 2688). A
// checkpoint without quantized tensors loads as usual.
#pragma once

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/io/checkpoint.h"
#include "core/model/qwen2_5_vl/model.h"

namespace autoquant {

// True if any tensor of the checkpoint is float8_e4m3fn (FP8 weights, NVFP4 block scales).
bool HasQuantizedWeights(const Checkpoint& ckpt);

// Whether `key` is a quantized Linear's scale tensor, in any format and either encoding
// (weight_scale, input_scale; NVFP4's weight_scale_2, weight_global_scale, input_global_scale).
bool IsScaleTensor(absl::string_view key);

// A per-tensor scale (`key`: "<module>.weight_scale" / ".input_scale"):
// InvalidArgument when it is absent, not per tensor (0-d or [1]), negative
// or not finite.
absl::StatusOr<float> ReadPerTensorScale(const Checkpoint& ckpt, const std::string& key);

struct LoadedScheme {
  Qwen2_5_VLModel model{nullptr};
  size_t quantized_linears = 0;
};

// InvalidArgument when an FP8 weight lacks its weight_scale or input_scale,
// or a scale has the wrong shape (0-d or [1] per tensor only) or is negative
// or not finite; ResourceExhausted for OOM. Never throws.
absl::StatusOr<LoadedScheme> LoadScheme(const Checkpoint& ckpt, torch::Device device, torch::ScalarType dtype);

}  // namespace autoquant

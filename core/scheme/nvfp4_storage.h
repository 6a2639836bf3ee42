// How an exported scheme stores one NVFP4 Linear, per export format (the
// tensor names and dtypes vLLM's loaders read for each):
//
//   modelopt (ModelOpt's export_hf_checkpoint):
//     <m>.weight          uint8 [out, in/2]     E2M1 pairs, the even index in the low nibble
//     <m>.weight_scale    float8_e4m3fn [out, in/16]
//     <m>.weight_scale_2  0-d float32           weight amax / (6 * 448)
//     <m>.input_scale     0-d float32           input amax / (6 * 448); W4A4 only
//   compressed-tensors (nvfp4-pack-quantized):
//     <m>.weight_packed   uint8 [out, in/2]
//     <m>.weight_scale    float8_e4m3fn [out, in/16]
//     <m>.weight_global_scale  float32 [1]      the reciprocal: 6 * 448 / weight amax
//     <m>.input_global_scale   float32 [1]      6 * 448 / input amax; W4A4 only
//
// Packed values and block scales are ModelOpt's (QuantizeNvfp4, nvfp4.h) in
// both encodings: compressed-tensors' loaders take block scales relative to
// the reciprocal global scale, which is the same number up to its rounding.
// The amax values are the calibrated ones, the maximum over the shards of a
// fused GEMM (q/k/v, gate/up): engines run the shards as one GEMM with one
// global scale, and ModelOpt's export unifies them the same way. An amax of
// 0 (a Linear that never ran) or a non-finite one counts as 1.
#pragma once

#include <torch/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/io/checkpoint.h"
#include "core/io/dtype.h"
#include "core/quant/formats.h"
#include "core/scheme/hf_quant_config.h"
#include "core/scheme/stored_weight.h"

namespace autoquant {

// "weight" (modelopt) or "weight_packed" (compressed-tensors).
std::string Nvfp4WeightName(ExportFormat f);
// The global scales' names: weight_scale_2 / input_scale, or weight_global_scale / input_global_scale.
std::string Nvfp4GlobalScaleName(ExportFormat f, bool input);
std::vector<int64_t> Nvfp4GlobalScaleShape(ExportFormat f);

// w: the base weight [out, in] (in a multiple of 16) in its own dtype; weight_amax as above.
absl::StatusOr<StoredWeight> QuantizeNvfp4ForExport(const torch::Tensor& w, float weight_amax);
// A global scale as `f` stores it, from an amax.
absl::StatusOr<torch::Tensor> StoredNvfp4GlobalScale(float amax, ExportFormat f);

// An NVFP4 Linear as a checkpoint stores it (either encoding), read back.
struct StoredNvfp4Linear {
  ExportFormat encoding = ExportFormat::kModelOpt;
  std::string weight_key;             // "<m>.weight" or "<m>.weight_packed"
  std::string block_scale_key;        // "<m>.weight_scale"
  float weight_global = 0;            // amax / 2688 (ModelOpt's weight_scale_2)
  std::optional<float> input_global;  // amax / 2688 (ModelOpt's input_scale); none: weight-only
  // vLLM's weight_global_scale / input_global_scale: the reciprocals (compressed-tensors' stored values).
  float vllm_weight_global = 0;
  std::optional<float> vllm_input_global;
  Format format() const { return input_global ? Format::kNvfp4 : Format::kNvfp4W4A16; }
};

// Every NVFP4 Linear of a checkpoint by checkpoint module name: a uint8
// weight (or weight_packed) [out, in/2] beside a float8_e4m3fn weight_scale
// [out, in/16] and a global scale. InvalidArgument, naming the tensor, for a
// missing, misshapen, non-finite or non-positive scale.
absl::StatusOr<std::map<std::string, StoredNvfp4Linear>> ReadNvfp4Linears(const Checkpoint& ckpt);
// Whether the checkpoint names any tensor the NVFP4 encodings use for scales (headers only).
bool HasNvfp4Weights(const Checkpoint& ckpt);
// ModelOpt's dequantization: e2m1 * block scale * weight_global, float32 [out, in], on `device`.
absl::StatusOr<torch::Tensor> DequantizeStoredNvfp4(const Checkpoint& ckpt, const StoredNvfp4Linear& l,
                                                    const torch::Device& device);

}  // namespace autoquant

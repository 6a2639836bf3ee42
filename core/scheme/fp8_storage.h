// How an exported scheme stores one FP8 Linear, per format:
//
//   compressed-tensors (llm-compressor's static per-tensor FP8, as its own
//   compressor writes it):
//     <m>.weight        float8_e4m3fn [out, in]
//     <m>.weight_scale  [1], in the base weight's dtype (bf16 for a bf16 checkpoint)
//     <m>.input_scale   [1], in the base weight's dtype
//   modelopt (ModelOpt's export):
//     <m>.weight_scale, <m>.input_scale  0-d float32
//
// The scale is amax / 448 rounded once to its stored dtype, and the FP8
// bytes are quantized with exactly that stored value (in float32:
// saturate(W / s) then cast), so that dequantizing fp8 * stored scale is the
// weight the scheme means. Scales in the checkpoint's dtype matter: a loader
// (transformers 5.17 with compressed-tensors) that dequantizes in the scale's
// dtype would otherwise feed float32 weights into a bf16 model.
//
// Every function returns a Status instead of throwing (torch calls run
// through TorchCall).
#pragma once

#include <torch/types.h>

#include <vector>

#include "absl/status/statusor.h"
#include "core/io/dtype.h"
#include "core/scheme/hf_quant_config.h"
#include "core/scheme/stored_weight.h"

namespace autoquant {

// The dtype and shape a format stores scales in, for a base weight of `base`.
DType ScaleDType(ExportFormat f, DType base);
std::vector<int64_t> ScaleShape(ExportFormat f);

// w: the base weight [out, in] in its own dtype.
absl::StatusOr<StoredWeight> QuantizeForExport(const torch::Tensor& w, ExportFormat f);

// input_amax / 448 as stored for a Linear whose base weight has dtype `base`.
absl::StatusOr<torch::Tensor> StoredInputScale(float input_amax, DType base, ExportFormat f);

}  // namespace autoquant

// A scheme checkpoint laid over the resident base model, so that the base
// computes what the scheme computes when an FP8 engine (vLLM) deploys it,
// without loading a second model: each of the scheme's FP8 Linears gets an
// Fp8LinearHook (fp8_linear.h) holding the scheme's own FP8 weight and
// scales, each NVFP4 Linear (either encoding) an Nvfp4LinearHook
// (nvfp4_linear.h) computing vLLM's NVFP4 emulation; everything the scheme keeps in 16 bits must be the base's, byte
// for byte after conversion to the model dtype, which is checked.
//
// vLLM's loading rules are applied: fused shards (q/k/v, gate/up) must share
// one format ("Mixed quant_algo within fused layer"); NVFP4 shards must share
// their global scales (refused otherwise: engines run one GEMM); when FP8 weight
// scales differ, each shard is re-quantized to the largest (dequantize with
// its own, quantize with the max), and all use the largest input scale.
//
//   ASSIGN_OR_RETURN(SchemeOverlay o, BuildSchemeOverlay(scheme_ckpt, model, Fp8Matmul::kAuto));
//   { OverlayGuard g(o);  ... model->Forward(...) ... }   // hooks removed at scope end
#pragma once

#include <torch/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/io/checkpoint.h"
#include "core/model/qwen2_5_vl/model.h"
#include "core/quant/fp8_linear.h"

namespace autoquant {

struct SchemeOverlay {
  // Fp8LinearHook (fp8_linear.h) or Nvfp4LinearHook (nvfp4_linear.h) per quantized Linear.
  std::vector<std::pair<Linear, std::shared_ptr<LinearHook>>> hooks;
  size_t nvfp4_linears = 0;                 // hooks that are NVFP4 (vLLM's emulation)
  Fp8Matmul matmul = Fp8Matmul::kEmulated;  // resolved
  size_t scaled_mm_linears = 0;             // hooks that use _scaled_mm (the rest emulate)
  size_t requantized_shards = 0;            // fused shards re-quantized to the shard-max scale
  size_t tensors_checked = 0;               // 16-bit tensors found equal to the base's
};

// InvalidArgument for an FP8 weight that is no Linear of `model` (or of the
// wrong shape), bad scales, mixed fused shards, a tensor the base lacks or a
// base tensor the scheme lacks; FailedPrecondition when a 16-bit tensor
// differs from the base's (the scheme was made from another model) or
// kScaledMm is asked for on a device without FP8 matmul; ResourceExhausted
// for device OOM. Never throws; installs nothing.
absl::StatusOr<SchemeOverlay> BuildSchemeOverlay(const Checkpoint& scheme, Qwen2_5_VLModel& model, Fp8Matmul matmul);

// Installs an overlay's hooks for its lifetime; the Linears' previous hooks
// come back when it ends.
class OverlayGuard {
 public:
  explicit OverlayGuard(const SchemeOverlay& overlay);
  ~OverlayGuard();
  OverlayGuard(const OverlayGuard&) = delete;
  OverlayGuard& operator=(const OverlayGuard&) = delete;

 private:
  std::vector<std::pair<Linear, std::shared_ptr<LinearHook>>> previous_;
};

}  // namespace autoquant

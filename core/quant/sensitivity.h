// Calibration and sensitivity scoring on a loaded model: the two expensive
// passes of a baseline.
//
// Calibrate: max calibration with quantization off (ModelOpt "max"): input
// amax per Linear over `PassOptions::steps` batches; weight amax = max |W|.
//
// ScoreGroups with ScoreMethod::kGradient (ModelOpt's gradient method): for
// every group and format, Σ over score batches and output elements of
// (dL/dY · ΔY)² (clamped to ±1e10 before squaring, accumulated in float64),
// where Y is each member Linear's output, ΔY = Y with that Linear quantized
// (input and weight, the format's fake quantizers: format_numerics.h) minus Y unquantized, both from the
// unquantized network's inputs, and L is the token-mean next-token
// cross-entropy (labels = input_ids, padding ignored). Memory is bounded by
// per-layer recompute: a no-grad pass keeps only the hidden state at each
// decoder-layer boundary, then layers are recomputed with gradients from the
// top down, one at a time, so only one layer's activations and ΔY are alive
// at once; the last PassOptions::graph_layers layers instead keep the graph
// of the single forward (below). With vision groups the vision tower is run
// again with gradients.
//
// ScoreGroups with ScoreMethod::kKlDiv (ModelOpt's kl_div method): for every
// group and format, the network with only that group quantized; Σ over tokens
// of KL(p_ref || p_q), in float64. Decoder layers below the group are not
// recomputed (a vision group reruns from the vision tower).
//
// Scores are then made non-increasing in bits (ModelOpt's min with the more
// aggressive format) and NONE is 0.
//
// Cancellation is checked between batches (and between groups for kl_div).
#pragma once

#include <atomic>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/qwen2_5_vl/calib_set.h"
#include "core/model/qwen2_5_vl/model.h"
#include "core/quant/baseline.h"

namespace autoquant {

struct PassOptions {
  int steps = 0;  // batches; 0 = all
  int batch_size = 1;
  const std::atomic<bool>* cancel = nullptr;
  std::function<void(double)> progress;  // fraction of this pass
  // Gradient scoring runs each batch forward without a graph, then layer by
  // layer from the top again with one (per-layer recompute), so that only one
  // layer's activations live at a time. The last `graph_layers` decoder layers
  // instead keep the graph of a single forward, which saves their second
  // forward: >= 0 that many; < 0 as many as fit in `graph_bytes` of device
  // memory (the bytes one layer's graph takes are measured on the first batch;
  // capped by what the device has available; none on the CPU). The scores do
  // not depend on it.
  int graph_layers = -1;
  int64_t graph_bytes = 0;
};

struct CalibrationResult {
  std::vector<float> input_amax;   // per Linear, model order
  std::vector<float> weight_amax;  // per Linear
};

absl::StatusOr<CalibrationResult> Calibrate(Qwen2_5_VLModel& model, const CalibSet& calib, const PassOptions& options);

// Returns [group][format] scores for `formats` (NONE last, scored 0) by
// `method` (above); amax from Calibrate, one value per model->Linears() entry.
// InvalidArgument when `formats` does not end with NONE, when amax does not
// have one value per Linear or a group names a Linear the model lacks
// (groups must fit every format: CheckFormatsFit); Internal /
// ResourceExhausted for torch errors; Cancelled.
absl::StatusOr<std::vector<std::vector<double>>> ScoreGroups(Qwen2_5_VLModel& model, const CalibSet& calib,
                                                             ScoreMethod method, const std::vector<QuantGroup>& groups,
                                                             const std::vector<Format>& formats,
                                                             const CalibrationResult& amax, const PassOptions& options);

// The token-mean next-token cross-entropy used for gradient scores (and
// perplexity): logits [B,S,V] float32, input_ids [B,S], attention_mask [B,S] or
// undefined -> 0-d float32 (differentiable). Internal when the shapes do not
// fit together (ResourceExhausted for OOM); never throws.
absl::StatusOr<torch::Tensor> NextTokenLoss(const torch::Tensor& logits, const torch::Tensor& input_ids,
                                            const torch::Tensor& attention_mask);

}  // namespace autoquant

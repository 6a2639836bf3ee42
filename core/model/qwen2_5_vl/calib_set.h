// A calibration / evaluation set: samples of model inputs stored in one
// safetensors file (format: docs/calibration-format.md).
//
//   ASSIGN_OR_RETURN(CalibSet set, CalibSet::Load("calib.safetensors"));
//   RETURN_IF_ERROR(set.To(torch::kCUDA));          // once; batches are then views
//   for (auto [begin, end] : set.BatchRanges(8)) {
//     ASSIGN_OR_RETURN(Qwen2_5_VLInputs in, set.Batch(begin, end));
//     ...
//   }
//
// All samples share one padded length (seq_len); attention_mask marks the
// tokens. Images are stored concatenated over samples, with per-sample
// offsets kept on the host, so a batch of consecutive samples is a slice of
// every tensor. Not thread-safe to mutate (To); const methods are.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/qwen2_5_vl/config.h"
#include "core/model/qwen2_5_vl/model.h"

namespace autoquant {

inline constexpr char kCalibFormat[] = "autoquant.calib.v1";

class CalibSet {
 public:
  // Validates names, dtypes, shapes and offsets (InvalidArgument naming the
  // problem). The tensors are copied into memory; the file is not kept open.
  static absl::StatusOr<CalibSet> Load(const std::filesystem::path& path);
  // From tensors in the file's layout (offsets as int64 [N + 1] tensors).
  static absl::StatusOr<CalibSet> FromTensors(torch::Tensor input_ids, torch::Tensor attention_mask,
                                              torch::Tensor pixel_values, torch::Tensor image_grid_thw,
                                              torch::Tensor sample_image_offsets, torch::Tensor sample_patch_offsets);

  // Writes the set atomically, with format metadata.
  absl::Status Save(const std::filesystem::path& path) const;

  int64_t num_samples() const { return input_ids_.size(0); }
  int64_t seq_len() const { return input_ids_.size(1); }
  int64_t num_images() const { return image_offsets_.back(); }
  bool has_images() const { return num_images() > 0; }

  // Moves every tensor to `device` (Internal / ResourceExhausted on failure).
  absl::Status To(torch::Device device);

  // Samples [begin, end) as one model input (views where possible; images of
  // those samples only; pixel_values / image_grid_thw undefined when the
  // samples have none). OutOfRange for a bad range.
  absl::StatusOr<Qwen2_5_VLInputs> Batch(int64_t begin, int64_t end) const;
  absl::StatusOr<Qwen2_5_VLInputs> Sample(int64_t i) const { return Batch(i, i + 1); }
  // [begin, end) ranges covering all samples in order, batch_size each (the last may be shorter).
  std::vector<std::pair<int64_t, int64_t>> BatchRanges(int64_t batch_size) const;

  // The whole set as one batch (same as Batch(0, num_samples())).
  const torch::Tensor& input_ids() const { return input_ids_; }
  const torch::Tensor& attention_mask() const { return attention_mask_; }

 private:
  torch::Tensor input_ids_, attention_mask_, pixel_values_, image_grid_thw_;
  std::vector<int64_t> image_offsets_, patch_offsets_;  // [N + 1], host
};

struct SynthOptions {
  int64_t samples = 8;
  int64_t seq_len = 256;
  int64_t images_per_sample = 1;
  int64_t image_height = 224, image_width = 224;  // pixels, multiples of patch_size * spatial_merge_size
  uint64_t seed = 0;
};

// Random token ids (below the smallest special token id of the config) with
// images laid out as <vision_start> <image_pad> x n <vision_end> between text
// segments, random normal pixel_values of the right patch count. Every sample
// fills seq_len exactly (attention_mask all ones). InvalidArgument when the
// images do not fit into seq_len or the image size is not a multiple of
// patch_size * spatial_merge_size.
absl::StatusOr<CalibSet> SynthesizeCalibSet(const Qwen2_5_VLConfig& config, const SynthOptions& options);

}  // namespace autoquant

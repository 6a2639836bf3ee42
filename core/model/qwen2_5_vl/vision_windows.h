// Host-side bookkeeping of the Qwen2.5-VL vision tower, computed once per
// request from the image grids (integer loops, no device work):
//   - the (row, col) patch coordinates the 2D rotary embedding uses,
//   - the window permutation of merged tokens and the window boundaries,
//   - the per-frame boundaries of the full-attention blocks.
// Torch-free so it is cheap to test against the reference's worked examples.
#pragma once

#include <cstdint>
#include <vector>

namespace autoquant {

// One image (or video) in patch units: t frames (after temporal patching),
// h x w patches.
struct GridThw {
  int64_t t = 1, h = 0, w = 0;
  int64_t patches() const { return t * h * w; }
};

// Row-major [patches][2] (row, col) coordinates in the processor's patch order
// (t, block_row, block_col, dy, dx), as transformers' vision position ids.
std::vector<int64_t> VisionPatchPositions(const std::vector<GridThw>& grids, int64_t merge);

struct VisionWindows {
  // Permutation of merged-token ids (window order), size = patches / merge^2.
  std::vector<int64_t> window_index;
  // Window boundaries in patch units, empty windows removed (int32, as
  // transformers' unique_consecutive(cu_window_seqlens)).
  std::vector<int32_t> cu_window_seqlens;
};

// transformers' get_window_index. window_size is in pixels.
VisionWindows ComputeVisionWindows(const std::vector<GridThw>& grids, int64_t window_size, int64_t merge,
                                   int64_t patch_size);

// Per-frame boundaries in patch units: [0, h*w, 2*h*w, ...] over all frames
// of all images (the full-attention blocks attend within a frame).
std::vector<int32_t> FrameCuSeqlens(const std::vector<GridThw>& grids);

}  // namespace autoquant

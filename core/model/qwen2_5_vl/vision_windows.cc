#include "core/model/qwen2_5_vl/vision_windows.h"

#include <algorithm>

namespace autoquant {

std::vector<int64_t> VisionPatchPositions(const std::vector<GridThw>& grids, int64_t merge) {
  std::vector<int64_t> out;
  for (const GridThw& g : grids) {
    out.reserve(out.size() + 2 * g.patches());
    for (int64_t t = 0; t < g.t; ++t) {
      for (int64_t by = 0; by < g.h / merge; ++by) {
        for (int64_t bx = 0; bx < g.w / merge; ++bx) {
          for (int64_t dy = 0; dy < merge; ++dy) {
            for (int64_t dx = 0; dx < merge; ++dx) {
              out.push_back(by * merge + dy);
              out.push_back(bx * merge + dx);
            }
          }
        }
      }
    }
  }
  return out;
}

VisionWindows ComputeVisionWindows(const std::vector<GridThw>& grids, int64_t window_size, int64_t merge,
                                   int64_t patch_size) {
  VisionWindows out;
  const int64_t ws = window_size / merge / patch_size;  // merged tokens per window side
  const int64_t unit = merge * merge;
  std::vector<int32_t> cu = {0};
  int64_t base = 0;
  for (const GridThw& g : grids) {
    const int64_t gh = g.h / merge, gw = g.w / merge;
    // transformers pads a whole extra window even when gh % ws == 0; those
    // windows are empty and vanish below, so padding to a multiple is equivalent.
    const int64_t nwh = (gh + ws - gh % ws) / ws, nww = (gw + ws - gw % ws) / ws;
    for (int64_t t = 0; t < g.t; ++t) {
      for (int64_t wy = 0; wy < nwh; ++wy) {
        for (int64_t wx = 0; wx < nww; ++wx) {
          int64_t count = 0;
          for (int64_t y = wy * ws; y < std::min((wy + 1) * ws, gh); ++y) {
            for (int64_t x = wx * ws; x < std::min((wx + 1) * ws, gw); ++x) {
              out.window_index.push_back(base + (t * gh + y) * gw + x);
              ++count;
            }
          }
          if (count > 0) cu.push_back(static_cast<int32_t>(cu.back() + count * unit));
        }
      }
    }
    base += g.t * gh * gw;
  }
  out.cu_window_seqlens = std::move(cu);
  return out;
}

std::vector<int32_t> FrameCuSeqlens(const std::vector<GridThw>& grids) {
  std::vector<int32_t> cu = {0};
  for (const GridThw& g : grids) {
    for (int64_t t = 0; t < g.t; ++t) cu.push_back(static_cast<int32_t>(cu.back() + g.h * g.w));
  }
  return cu;
}

}  // namespace autoquant

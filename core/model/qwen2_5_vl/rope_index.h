// 3D (temporal, height, width) M-RoPE position ids of the text decoder, as
// transformers' Qwen2_5_VLModel.get_rope_index computes them for images
// (v4 semantics, identical to transformers >= 5.5.4 given mm_token_type_ids).
//
// Per batch row, over the tokens with attention_mask != 0: text tokens get
// consecutive positions on all three rows; a run of image tokens starting at
// position p with merged grid gh x gw (t frames) gets (p + ti, p + y, p + x)
// and the next token continues at p + max(gh, gw). Padded tokens get 0.
// Images are consumed from `grids` in order across the whole batch.
// rope_delta = max position + 1 - number of valid tokens.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/qwen2_5_vl/vision_windows.h"

namespace autoquant {

struct RopeIndex {
  int64_t batch = 0, seq_len = 0;
  std::vector<int64_t> positions;  // [3][batch][seq_len], row-major
  std::vector<int64_t> deltas;     // [batch]
};

// input_ids, attention_mask: row-major [batch][seq_len]; attention_mask may
// be empty (all tokens valid). InvalidArgument when a run of image tokens does
// not match the next grid's merged token count or grids are left over.
absl::StatusOr<RopeIndex> ComputeRopeIndex(const std::vector<int64_t>& input_ids,
                                           const std::vector<int64_t>& attention_mask, int64_t batch, int64_t seq_len,
                                           const std::vector<GridThw>& grids, int64_t image_token_id, int64_t merge);

}  // namespace autoquant

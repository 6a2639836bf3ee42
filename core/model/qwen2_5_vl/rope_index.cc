#include "core/model/qwen2_5_vl/rope_index.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace autoquant {

absl::StatusOr<RopeIndex> ComputeRopeIndex(const std::vector<int64_t>& input_ids,
                                           const std::vector<int64_t>& attention_mask, int64_t batch, int64_t seq_len,
                                           const std::vector<GridThw>& grids, int64_t image_token_id, int64_t merge) {
  RopeIndex r;
  r.batch = batch;
  r.seq_len = seq_len;
  r.positions.assign(3 * batch * seq_len, 0);
  r.deltas.assign(batch, 0);
  size_t next_grid = 0;
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<int64_t> idx;  // valid token indices of this row
    for (int64_t s = 0; s < seq_len; ++s) {
      if (attention_mask.empty() || attention_mask[b * seq_len + s] != 0) idx.push_back(s);
    }
    auto set = [&](size_t i, int64_t t, int64_t h, int64_t w) {
      const int64_t s = idx[i];
      r.positions[(0 * batch + b) * seq_len + s] = t;
      r.positions[(1 * batch + b) * seq_len + s] = h;
      r.positions[(2 * batch + b) * seq_len + s] = w;
    };
    int64_t pos = 0, max_pos = -1;
    size_t i = 0;
    while (i < idx.size()) {
      if (input_ids[b * seq_len + idx[i]] != image_token_id) {
        set(i, pos, pos, pos);
        max_pos = std::max(max_pos, pos);
        ++pos;
        ++i;
        continue;
      }
      if (next_grid >= grids.size()) {
        return absl::InvalidArgumentError(absl::StrCat("batch row ", b, ": image tokens at position ", idx[i],
                                                       " but only ", grids.size(), " image grid(s) given"));
      }
      const GridThw& g = grids[next_grid++];
      const int64_t gh = g.h / merge, gw = g.w / merge, n = g.t * gh * gw;
      size_t run = i;
      while (run < idx.size() && input_ids[b * seq_len + idx[run]] == image_token_id) ++run;
      if (static_cast<int64_t>(run - i) < n) {
        return absl::InvalidArgumentError(absl::StrCat("batch row ", b, ": a run of ", run - i,
                                                       " image tokens at position ", idx[i], " is shorter than image ",
                                                       next_grid - 1, "'s ", n, " merged tokens"));
      }
      for (int64_t ti = 0; ti < g.t; ++ti) {
        for (int64_t y = 0; y < gh; ++y) {
          for (int64_t x = 0; x < gw; ++x) {
            set(i++, pos + ti, pos + y, pos + x);
          }
        }
      }
      max_pos = std::max({max_pos, pos + g.t - 1, pos + gh - 1, pos + gw - 1});
      pos += std::max(gh, gw);
    }
    r.deltas[b] = max_pos + 1 - static_cast<int64_t>(idx.size());
  }
  if (next_grid != grids.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(grids.size(), " image grid(s) given but the image tokens cover ", next_grid));
  }
  return r;
}

}  // namespace autoquant

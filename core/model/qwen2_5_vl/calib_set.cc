#include "core/model/qwen2_5_vl/calib_set.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/io/safetensors_file.h"
#include "core/io/safetensors_writer.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace {

absl::Status Bad(absl::string_view what) { return absl::InvalidArgumentError(absl::StrCat("calibration set: ", what)); }

std::vector<int64_t> Offsets(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kCPU, torch::kInt64).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

}  // namespace

absl::StatusOr<CalibSet> CalibSet::FromTensors(torch::Tensor input_ids, torch::Tensor attention_mask,
                                               torch::Tensor pixel_values, torch::Tensor image_grid_thw,
                                               torch::Tensor sample_image_offsets, torch::Tensor sample_patch_offsets) {
  return TorchCall(
      [&]() -> absl::StatusOr<CalibSet> {
        if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.scalar_type() != torch::kInt64) {
          return Bad("input_ids must be an int64 [samples, seq_len] tensor");
        }
        const int64_t n = input_ids.size(0);
        if (!attention_mask.defined()) attention_mask = torch::ones_like(input_ids);
        if (!attention_mask.sizes().equals(input_ids.sizes()) || attention_mask.scalar_type() != torch::kInt64) {
          return Bad("attention_mask must be int64 with the shape of input_ids");
        }
        CalibSet s;
        s.input_ids_ = input_ids;
        s.attention_mask_ = attention_mask;
        if (!sample_image_offsets.defined()) sample_image_offsets = torch::zeros({n + 1}, torch::kInt64);
        if (!sample_patch_offsets.defined()) sample_patch_offsets = torch::zeros({n + 1}, torch::kInt64);
        if (sample_image_offsets.numel() != n + 1 || sample_patch_offsets.numel() != n + 1) {
          return Bad(absl::StrCat("sample_image_offsets and sample_patch_offsets must have samples + 1 = ", n + 1,
                                  " entries"));
        }
        s.image_offsets_ = Offsets(sample_image_offsets);
        s.patch_offsets_ = Offsets(sample_patch_offsets);
        for (int64_t i = 0; i < n; ++i) {
          if (s.image_offsets_[i] > s.image_offsets_[i + 1] || s.patch_offsets_[i] > s.patch_offsets_[i + 1]) {
            return Bad("offsets must be non-decreasing");
          }
        }
        if (s.image_offsets_[0] != 0 || s.patch_offsets_[0] != 0) return Bad("offsets must start at 0");
        const int64_t images = s.image_offsets_.back(), patches = s.patch_offsets_.back();
        if (images > 0) {
          if (!pixel_values.defined() || !image_grid_thw.defined()) return Bad("images listed but no pixel_values");
          if (pixel_values.dim() != 2 || pixel_values.size(0) != patches) {
            return Bad(absl::StrCat("pixel_values must have ", patches, " rows"));
          }
          if (image_grid_thw.dim() != 2 || image_grid_thw.size(0) != images || image_grid_thw.size(1) != 3) {
            return Bad(absl::StrCat("image_grid_thw must be [", images, ", 3]"));
          }
          std::vector<int64_t> g = Offsets(image_grid_thw);
          // Every grid entry is at least 1 and at most the patch count, and products and sums are
          // checked, so a corrupt grid is an error instead of an overflow.
          for (size_t k = 0; k < g.size(); ++k) {
            if (g[k] < 1 || g[k] > patches) {
              return Bad(absl::StrCat("image_grid_thw[", k / 3, "] = ", g[k], " is outside 1..", patches,
                                      " (the patch count)"));
            }
          }
          for (int64_t i = 0; i < n; ++i) {
            int64_t p = 0;
            for (int64_t k = s.image_offsets_[i]; k < s.image_offsets_[i + 1]; ++k) {
              int64_t thw = 0;
              if (__builtin_mul_overflow(g[3 * k], g[3 * k + 1], &thw) ||
                  __builtin_mul_overflow(thw, g[3 * k + 2], &thw) || __builtin_add_overflow(p, thw, &p)) {
                return Bad(absl::StrCat("sample ", i, ": its image grids describe more patches than fit in 64 bits"));
              }
            }
            if (p != s.patch_offsets_[i + 1] - s.patch_offsets_[i]) {
              return Bad(absl::StrCat("sample ", i, ": its grids describe ", p, " patches, its offsets ",
                                      s.patch_offsets_[i + 1] - s.patch_offsets_[i]));
            }
          }
          s.pixel_values_ = pixel_values;
          s.image_grid_thw_ = image_grid_thw.to(torch::kInt64);
        }
        return s;
      },
      "building the calibration set");
}

absl::StatusOr<CalibSet> CalibSet::Load(const std::filesystem::path& path) {
  return TorchCall(
      [&]() -> absl::StatusOr<CalibSet> {
        ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
        auto get = [&](const char* name) -> torch::Tensor {
          if (file->Find(name) == nullptr) return {};
          return file->Get(*file->Find(name)).clone();  // own the memory; the mapping goes with `file`
        };
        ASSIGN_OR_RETURN(auto tensors, TorchCall([&] {
                           return std::vector<torch::Tensor>{
                               get("input_ids"),      get("attention_mask"),       get("pixel_values"),
                               get("image_grid_thw"), get("sample_image_offsets"), get("sample_patch_offsets")};
                         }));
        auto s = FromTensors(tensors[0], tensors[1], tensors[2], tensors[3], tensors[4], tensors[5]);
        if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", s.status().message()));
        return s;
      },
      "loading the calibration set");
}

absl::Status CalibSet::Save(const std::filesystem::path& path) const {
  return TorchCall(
      [&]() -> absl::Status {
        const int64_t n = num_samples();
        std::vector<std::pair<std::string, torch::Tensor>> items = {{"input_ids", input_ids_},
                                                                    {"attention_mask", attention_mask_}};
        if (has_images()) {
          items.push_back({"pixel_values", pixel_values_});
          items.push_back({"image_grid_thw", image_grid_thw_});
        }
        items.push_back({"sample_image_offsets", torch::tensor(image_offsets_, torch::kInt64).view({n + 1})});
        items.push_back({"sample_patch_offsets", torch::tensor(patch_offsets_, torch::kInt64).view({n + 1})});
        std::vector<TensorSpec> specs;
        for (const auto& [name, t] : items) {
          ASSIGN_OR_RETURN(TensorSpec spec, SpecOf(name, t));
          specs.push_back(std::move(spec));
        }
        ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(path, specs,
                                                                {{"format", "pt"},
                                                                 {"autoquant.format", kCalibFormat},
                                                                 {"samples", std::to_string(n)},
                                                                 {"seq_len", std::to_string(seq_len())}}));
        for (const auto& item : items) RETURN_IF_ERROR(writer.Write(item.second));
        return writer.Finish();
      },
      "saving the calibration set");
}

absl::Status CalibSet::To(torch::Device device) {
  return TorchCall(
      [&] {
        input_ids_ = input_ids_.to(device);
        attention_mask_ = attention_mask_.to(device);
        if (pixel_values_.defined()) pixel_values_ = pixel_values_.to(device);
        if (image_grid_thw_.defined()) image_grid_thw_ = image_grid_thw_.to(device);
      },
      "calibration set to device");
}

absl::StatusOr<Qwen2_5_VLInputs> CalibSet::Batch(int64_t begin, int64_t end) const {
  return TorchCall(
      [&]() -> absl::StatusOr<Qwen2_5_VLInputs> {
        if (begin < 0 || end > num_samples() || begin >= end) {
          return absl::OutOfRangeError(absl::StrCat("batch [", begin, ", ", end, ") outside the ", num_samples(),
                                                    " samples of the calibration set"));
        }
        Qwen2_5_VLInputs in;
        in.input_ids = input_ids_.narrow(0, begin, end - begin);
        in.attention_mask = attention_mask_.narrow(0, begin, end - begin);
        const int64_t i0 = image_offsets_[begin], i1 = image_offsets_[end];
        if (i1 > i0) {
          in.image_grid_thw = image_grid_thw_.narrow(0, i0, i1 - i0);
          in.pixel_values = pixel_values_.narrow(0, patch_offsets_[begin], patch_offsets_[end] - patch_offsets_[begin]);
        }
        return in;
      },
      "taking a calibration batch");
}

std::vector<std::pair<int64_t, int64_t>> CalibSet::BatchRanges(int64_t batch_size) const {
  std::vector<std::pair<int64_t, int64_t>> out;
  batch_size = std::max<int64_t>(batch_size, 1);
  for (int64_t b = 0; b < num_samples(); b += batch_size) out.emplace_back(b, std::min(b + batch_size, num_samples()));
  return out;
}

absl::StatusOr<CalibSet> SynthesizeCalibSet(const Qwen2_5_VLConfig& config, const SynthOptions& o) {
  const auto& v = config.vision;
  const int64_t factor = v.patch_size * v.spatial_merge_size;
  if (o.samples <= 0 || o.seq_len <= 0 || o.images_per_sample < 0) {
    return absl::InvalidArgumentError("samples and seq_len must be positive, images_per_sample non-negative");
  }
  if (o.images_per_sample > 0 &&
      (o.image_height <= 0 || o.image_width <= 0 || o.image_height % factor != 0 || o.image_width % factor != 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("image size ", o.image_height, "x", o.image_width,
                     " must be positive multiples of patch_size * spatial_merge_size = ", factor));
  }
  const GridThw grid{1, o.image_height / v.patch_size, o.image_width / v.patch_size};
  const int64_t tokens_per_image = grid.patches() / (v.spatial_merge_size * v.spatial_merge_size);
  const int64_t image_span = o.images_per_sample * (tokens_per_image + 2);
  if (image_span + 1 > o.seq_len) {
    return absl::InvalidArgumentError(absl::StrCat(o.images_per_sample, " image(s) of ", tokens_per_image,
                                                   " tokens (+2 markers each) need seq_len > ", image_span, ", got ",
                                                   o.seq_len));
  }
  const int64_t text_max = std::min({config.image_token_id, config.video_token_id, config.vision_start_token_id,
                                     config.vision_end_token_id, config.text.vocab_size});
  if (text_max < 2) return absl::InvalidArgumentError("no room for text token ids below the special ids");
  ASSIGN_OR_RETURN(
      absl::StatusOr<CalibSet> set, TorchCall([&]() -> absl::StatusOr<CalibSet> {
        at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
        torch::Tensor ids = torch::randint(0, text_max, {o.samples, o.seq_len}, gen, torch::kInt64);
        auto acc = ids.accessor<int64_t, 2>();
        const int64_t text_total = o.seq_len - image_span, segments = o.images_per_sample + 1;
        for (int64_t i = 0; i < o.samples; ++i) {
          int64_t p = 0;
          for (int64_t k = 0; k < o.images_per_sample; ++k) {
            p += text_total / segments;
            acc[i][p++] = config.vision_start_token_id;
            for (int64_t t = 0; t < tokens_per_image; ++t) acc[i][p++] = config.image_token_id;
            acc[i][p++] = config.vision_end_token_id;
          }
        }
        const int64_t images = o.samples * o.images_per_sample;
        const int64_t patch_dim = v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size;
        torch::Tensor pixels, grids;
        if (images > 0) {
          pixels = torch::empty({images * grid.patches(), patch_dim}, torch::kFloat32).normal_(0.0, 1.0, gen);
          grids = torch::tensor({grid.t, grid.h, grid.w}, torch::kInt64).repeat({images, 1});
        }
        torch::Tensor image_offsets = torch::arange(0, o.samples + 1, torch::kInt64) * o.images_per_sample;
        torch::Tensor patch_offsets = image_offsets * grid.patches();
        return CalibSet::FromTensors(ids, torch::ones_like(ids), pixels, grids, image_offsets, patch_offsets);
      }));
  return set;
}

}  // namespace autoquant

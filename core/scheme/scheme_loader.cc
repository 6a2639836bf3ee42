#include "core/scheme/scheme_loader.h"

#include <torch/torch.h>

#include <cmath>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/model/qwen2_5_vl/architecture.h"
#include "core/model/qwen2_5_vl/weights.h"
#include "core/quant/fp8.h"
#include "core/quant/linear_hooks.h"
#include "core/quant/nvfp4.h"
#include "core/scheme/nvfp4_storage.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {

bool HasQuantizedWeights(const Checkpoint& ckpt) {
  for (const auto& f : ckpt.files()) {
    for (const auto& t : f->tensors()) {
      if (t.dtype == DType::kF8E4M3) return true;
    }
  }
  return false;
}

bool IsScaleTensor(absl::string_view key) {
  for (absl::string_view suffix :
       {".weight_scale", ".input_scale", ".weight_scale_2", ".weight_global_scale", ".input_global_scale"}) {
    if (absl::EndsWith(key, suffix)) return true;
  }
  return false;
}

absl::StatusOr<float> ReadPerTensorScale(const Checkpoint& ckpt, const std::string& key) {
  const TensorInfo* info = ckpt.Find(key);
  if (info == nullptr) return absl::InvalidArgumentError(absl::StrCat("the quantized checkpoint lacks '", key, "'"));
  if (info->numel() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", key, "' is not a per-tensor scale (shape has ", info->numel(), " elements)"));
  }
  ASSIGN_OR_RETURN(torch::Tensor t, ckpt.Get(key));
  ASSIGN_OR_RETURN(float v, TorchCall([&] { return t.to(torch::kFloat32).reshape({}).item<float>(); }, key));
  // A NaN, infinite or negative scale would load as a model of garbage that runs without error.
  if (!std::isfinite(v) || v < 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", key, "' = ", v, " is not a finite non-negative scale"));
  }
  return v;
}

absl::StatusOr<LoadedScheme> LoadScheme(const Checkpoint& ckpt, torch::Device device, torch::ScalarType dtype) {
  ASSIGN_OR_RETURN(const auto nvfp4, ReadNvfp4Linears(ckpt));
  std::map<std::string, const StoredNvfp4Linear*> nvfp4_by_key;  // weight key -> its Linear
  std::set<std::string> block_scales;
  for (const auto& [m, l] : nvfp4) {
    nvfp4_by_key[l.weight_key] = &l;
    block_scales.insert(l.block_scale_key);
  }
  // Checkpoint module name -> (weight scale, input scale) for every FP8 weight.
  std::map<std::string, std::pair<float, float>> scales;
  for (const auto& name : ckpt.TensorNames()) {
    const TensorInfo* info = ckpt.Find(name);
    if (info->dtype != DType::kF8E4M3 || block_scales.count(name)) continue;
    if (!absl::EndsWith(name, ".weight")) {
      return absl::InvalidArgumentError(absl::StrCat("FP8 tensor '", name, "' is not a Linear weight"));
    }
    std::string m = name.substr(0, name.size() - 7);
    ASSIGN_OR_RETURN(float ws, ReadPerTensorScale(ckpt, m + ".weight_scale"));
    ASSIGN_OR_RETURN(float is, ReadPerTensorScale(ckpt, m + ".input_scale"));
    scales[m] = {ws, is};
  }
  LoadHooks hooks;
  hooks.skip_key = [](const std::string& key) { return IsScaleTensor(key); };

  hooks.stands_for = [&](const std::string& key) -> std::optional<std::pair<std::string, std::vector<int64_t>>> {
    auto it = nvfp4_by_key.find(key);
    if (it == nvfp4_by_key.end()) return std::nullopt;
    std::vector<int64_t> shape = ckpt.Find(key)->shape;
    shape.back() *= 2;
    return std::make_pair(key.substr(0, key.rfind('.')) + ".weight", shape);
  };
  hooks.transform = [&](const std::string& key, const torch::Tensor& src) -> absl::StatusOr<torch::Tensor> {
    if (auto it = nvfp4_by_key.find(key); it != nvfp4_by_key.end()) {
      return DequantizeStoredNvfp4(ckpt, *it->second, torch::kCPU);
    }
    if (src.scalar_type() != torch::kFloat8_e4m3fn) return src;
    // Every FP8 tensor was checked above to be a "<m>.weight" with scales; find, not at(), all the same.
    auto it = scales.find(key.substr(0, key.size() - 7));
    if (it == scales.end()) return absl::InternalError(absl::StrCat("no scales recorded for FP8 tensor '", key, "'"));
    const float ws = it->second.first;
    return TorchCall([&] { return DequantizeFp8(src, torch::tensor(ws)); }, key);
  };
  LoadedScheme out;
  ASSIGN_OR_RETURN(out.model, LoadQwen2_5_VL(ckpt, device, dtype, hooks));
  size_t nvfp4_hooked = 0;
  for (auto& [name, lin] : out.model->Linears()) {
    // Model names are transformers 5.x; the checkpoint may use the legacy ones.
    auto n = nvfp4.find(name);
    if (n == nvfp4.end()) n = nvfp4.find(qwen2_5_vl::CheckpointKey(name, qwen2_5_vl::KeyLayout::kLegacy));
    if (n != nvfp4.end()) {
      ++nvfp4_hooked;
      ++out.quantized_linears;
      if (!n->second.input_global) continue;  // weight-only: inputs stay in the model's dtype
      const float input_amax = *n->second.input_global * kE2M1Max * kFp8E4M3Max;
      ASSIGN_OR_RETURN(torch::Tensor amax, TorchCall([&] { return torch::tensor(input_amax).to(device); }, name));
      lin->set_hook(std::make_shared<InputQuantHook>(Format::kNvfp4, std::move(amax)));
      continue;
    }
    auto it = scales.find(name);
    if (it == scales.end()) it = scales.find(qwen2_5_vl::CheckpointKey(name, qwen2_5_vl::KeyLayout::kLegacy));
    if (it == scales.end()) continue;
    const float input_amax = it->second.second * kFp8E4M3Max;
    // A device allocation: out of memory here is as real as in the weights.
    ASSIGN_OR_RETURN(torch::Tensor amax, TorchCall([&] { return torch::tensor(input_amax).to(device); }, name));
    lin->set_hook(std::make_shared<InputQuantHook>(Format::kFp8, std::move(amax)));
    ++out.quantized_linears;
  }
  if (out.quantized_linears != scales.size() + nvfp4.size() || nvfp4_hooked != nvfp4.size()) {
    return absl::InvalidArgumentError(absl::StrCat(scales.size() + nvfp4.size() - out.quantized_linears,
                                                   " quantized weights do not belong to a Linear of the model"));
  }
  return out;
}

}  // namespace autoquant

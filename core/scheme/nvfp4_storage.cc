#include "core/scheme/nvfp4_storage.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#include "core/quant/nvfp4.h"
#include "core/scheme/scheme_loader.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace {

float UsableAmax(float amax) { return std::isfinite(amax) && amax > 0 ? amax : 1.0f; }

}  // namespace

std::string Nvfp4WeightName(ExportFormat f) {
  return f == ExportFormat::kCompressedTensors ? "weight_packed" : "weight";
}

std::string Nvfp4GlobalScaleName(ExportFormat f, bool input) {
  if (f == ExportFormat::kCompressedTensors) return input ? "input_global_scale" : "weight_global_scale";
  return input ? "input_scale" : "weight_scale_2";
}

std::vector<int64_t> Nvfp4GlobalScaleShape(ExportFormat f) {
  return f == ExportFormat::kCompressedTensors ? std::vector<int64_t>{1} : std::vector<int64_t>{};
}

absl::StatusOr<StoredWeight> QuantizeNvfp4ForExport(const torch::Tensor& w, float weight_amax) {
  return TorchCall(
      [&]() -> absl::StatusOr<StoredWeight> {
        Nvfp4Tensor q = QuantizeNvfp4(w, torch::tensor(UsableAmax(weight_amax)).to(w.device()));
        return StoredWeight{q.packed, q.block_scale, ""};
      },
      "NVFP4 export of a weight");
}

absl::StatusOr<torch::Tensor> StoredNvfp4GlobalScale(float amax, ExportFormat f) {
  return TorchCall(
      [&] {
        torch::Tensor g = Nvfp4GlobalScaleFromAmax(torch::tensor(UsableAmax(amax)));
        // compressed-tensors stores the reciprocal, computed as it computes it: 6 * 448 / amax in Python,
        // which torch evaluates as reciprocal(amax) * 2688 (not a division: they differ in the last bit).
        if (f == ExportFormat::kCompressedTensors) g = torch::reciprocal(torch::tensor(UsableAmax(amax))) * 2688.0f;
        return g.reshape(Nvfp4GlobalScaleShape(f));
      },
      "NVFP4 global scale");
}

namespace {

// A global scale: a per-tensor scale (ReadPerTensorScale's checks) that is also positive.
absl::StatusOr<float> ReadGlobalScale(const Checkpoint& ckpt, const std::string& key) {
  ASSIGN_OR_RETURN(float v, ReadPerTensorScale(ckpt, key));
  if (v <= 0) return absl::InvalidArgumentError(absl::StrCat("'", key, "' = ", v, " is not a positive global scale"));
  return v;
}

}  // namespace

bool HasNvfp4Weights(const Checkpoint& ckpt) {
  for (const auto& name : ckpt.TensorNames()) {
    if (absl::EndsWith(name, ".weight_scale_2") || absl::EndsWith(name, ".weight_global_scale")) return true;
  }
  return false;
}

absl::StatusOr<std::map<std::string, StoredNvfp4Linear>> ReadNvfp4Linears(const Checkpoint& ckpt) {
  std::map<std::string, StoredNvfp4Linear> out;
  for (const auto& name : ckpt.TensorNames()) {
    const TensorInfo* info = ckpt.Find(name);
    if (info->dtype != DType::kU8) continue;
    ExportFormat enc;
    std::string m;
    if (absl::EndsWith(name, ".weight_packed")) {
      enc = ExportFormat::kCompressedTensors;
      m = name.substr(0, name.size() - std::string(".weight_packed").size());
    } else if (absl::EndsWith(name, ".weight")) {
      enc = ExportFormat::kModelOpt;
      m = name.substr(0, name.size() - std::string(".weight").size());
    } else {
      continue;
    }
    StoredNvfp4Linear l;
    l.encoding = enc;
    l.weight_key = name;
    l.block_scale_key = m + ".weight_scale";
    const TensorInfo* bs = ckpt.Find(l.block_scale_key);
    if (info->shape.size() != 2 || bs == nullptr || bs->dtype != DType::kF8E4M3 || bs->shape.size() != 2 ||
        bs->shape[0] != info->shape[0] || bs->shape[1] * kNvfp4Block != info->shape[1] * 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("uint8 weight '", name, "' is not NVFP4: it needs a 2-d shape [out, in/2] and a float8_e4m3fn '",
                       l.block_scale_key, "' of shape [out, in/16]"));
    }
    const bool ct = enc == ExportFormat::kCompressedTensors;
    ASSIGN_OR_RETURN(float wg, ReadGlobalScale(ckpt, m + "." + Nvfp4GlobalScaleName(enc, false)));
    l.weight_global = ct ? 1.0f / wg : wg;
    l.vllm_weight_global = ct ? wg : 1.0f / wg;
    const std::string input_key = m + "." + Nvfp4GlobalScaleName(enc, true);
    if (ckpt.Find(input_key) != nullptr) {
      ASSIGN_OR_RETURN(float ig, ReadGlobalScale(ckpt, input_key));
      l.input_global = ct ? 1.0f / ig : ig;
      l.vllm_input_global = ct ? ig : 1.0f / ig;
    }
    out.emplace(m, std::move(l));
  }
  return out;
}

absl::StatusOr<torch::Tensor> DequantizeStoredNvfp4(const Checkpoint& ckpt, const StoredNvfp4Linear& l,
                                                    const torch::Device& device) {
  ASSIGN_OR_RETURN(torch::Tensor packed, ckpt.Get(l.weight_key));
  ASSIGN_OR_RETURN(torch::Tensor block, ckpt.Get(l.block_scale_key));
  return TorchCall(
      [&] {
        return DequantizeNvfp4({packed.to(device), block.to(device), torch::tensor(l.weight_global).to(device)});
      },
      l.weight_key);
}

}  // namespace autoquant

#include "core/scheme/scheme_overlay.h"

#include <torch/torch.h>

#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/model/qwen2_5_vl/architecture.h"
#include "core/model/qwen2_5_vl/weights.h"
#include "core/quant/fp8.h"
#include "core/quant/groups.h"
#include "core/quant/nvfp4.h"
#include "core/quant/nvfp4_linear.h"
#include "core/scheme/nvfp4_storage.h"
#include "core/scheme/scheme_loader.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace {

constexpr absl::string_view kWeight = ".weight";

struct Fp8Weight {
  std::string key;  // checkpoint key of the weight
  float weight_scale = 1, input_scale = 1;
};

using Linears = std::map<std::string, Linear>;                  // model (transformers 5.x) name -> Linear
using Fp8Weights = std::map<std::string, Fp8Weight>;            // model module name -> its FP8 weight in the scheme
using Scales = std::map<std::string, std::pair<float, float>>;  // module -> (weight, input) scale used
using Nvfp4Weights = std::map<std::string, StoredNvfp4Linear>;  // model module name -> its NVFP4 weight

// The scheme's NVFP4 Linears by model module name; each must be a Linear of the base model.
absl::StatusOr<Nvfp4Weights> ReadNvfp4Weights(const Checkpoint& scheme, const Linears& linears) {
  ASSIGN_OR_RETURN(auto stored, ReadNvfp4Linears(scheme));
  Nvfp4Weights out;
  for (auto& [m, l] : stored) {
    const std::string module = qwen2_5_vl::ModelName(m + std::string(kWeight));
    const std::string name = module.substr(0, module.size() - kWeight.size());
    if (!linears.count(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("NVFP4 weight '", l.weight_key, "' belongs to no Linear of the base model"));
    }
    out.emplace(name, std::move(l));
  }
  return out;
}

// The block-scale keys of NVFP4 weights: float8_e4m3fn, but no FP8 weight.
std::set<std::string> BlockScaleKeys(const Nvfp4Weights& nvfp4) {
  std::set<std::string> keys;
  for (const auto& [m, l] : nvfp4) keys.insert(l.block_scale_key);
  return keys;
}

// The scheme's FP8 weights and their per-tensor scales; each must be a Linear's weight of the base model.
absl::StatusOr<Fp8Weights> ReadFp8Weights(const Checkpoint& scheme, const Linears& linears,
                                          const std::set<std::string>& block_scales) {
  Fp8Weights fp8;
  for (const auto& key : scheme.TensorNames()) {
    if (scheme.Find(key)->dtype != DType::kF8E4M3 || block_scales.count(key)) continue;
    const std::string canonical = qwen2_5_vl::ModelName(key);
    if (!absl::EndsWith(canonical, kWeight)) {
      return absl::InvalidArgumentError(absl::StrCat("FP8 tensor '", key, "' is not a Linear weight"));
    }
    const std::string module = canonical.substr(0, canonical.size() - kWeight.size());
    if (!linears.count(module)) {
      return absl::InvalidArgumentError(absl::StrCat("FP8 weight '", key, "' belongs to no Linear of the base model"));
    }
    const std::string m = key.substr(0, key.size() - kWeight.size());
    Fp8Weight w{key};
    ASSIGN_OR_RETURN(w.weight_scale, ReadPerTensorScale(scheme, m + ".weight_scale"));
    ASSIGN_OR_RETURN(w.input_scale, ReadPerTensorScale(scheme, m + ".input_scale"));
    fp8.emplace(module, std::move(w));
  }
  return fp8;
}

// The scales vLLM runs each FP8 Linear with: a fused GEMM's shards are all FP8 or none, and share the
// largest of their scales.
absl::StatusOr<Scales> FusedScales(const Fp8Weights& fp8, const Nvfp4Weights& nvfp4, const Linears& linears) {
  std::map<std::string, std::vector<std::string>> fused;  // fused GEMM -> its shards, model order
  for (const auto& [name, lin] : linears) {
    const std::string g = qwen2_5_vl::FusedGemmOf(name);
    if (!g.empty()) fused[g].push_back(name);
  }
  auto format_of = [&](const std::string& m) {
    if (fp8.count(m)) return Format::kFp8;
    auto it = nvfp4.find(m);
    return it == nvfp4.end() ? Format::kNone : it->second.format();
  };
  Scales scales;
  for (const auto& [module, w] : fp8) scales[module] = {w.weight_scale, w.input_scale};
  for (const auto& [gemm, shards] : fused) {
    const Format first = format_of(shards.front());
    for (const auto& s : shards) {
      if (format_of(s) != first) {
        return absl::InvalidArgumentError(
            absl::StrCat("mixed quantization within the fused layer ", gemm, ": ", shards.front(), " is ",
                         FormatName(first), " and ", s, " is ", FormatName(format_of(s)),
                         " (vLLM refuses such a checkpoint: \"Mixed quant_algo within fused layer\")"));
      }
    }
    if (first == Format::kNone) continue;
    if (first != Format::kFp8) {
      // NVFP4: engines run the shards as one GEMM with one global scale per operand, and read the
      // block scales against it: shards exported with different global scales cannot be run as stored.
      const StoredNvfp4Linear& a = nvfp4.at(shards.front());
      for (const auto& s : shards) {
        const StoredNvfp4Linear& b = nvfp4.at(s);
        if (b.weight_global != a.weight_global || b.input_global != a.input_global) {
          return absl::InvalidArgumentError(absl::StrCat(
              "the shards of the fused layer ", gemm, " have different NVFP4 global scales (", shards.front(), ", ", s,
              "); engines run them as one GEMM with one global scale, so re-export them with a shared one"));
        }
      }
      continue;
    }
    float ws = 0, is = 0;
    for (const auto& s : shards) {
      ws = std::max(ws, fp8.at(s).weight_scale);
      is = std::max(is, fp8.at(s).input_scale);
    }
    for (const auto& s : shards) scales[s] = {ws, is};
  }
  return scales;
}

// A hook per FP8 weight, on the device, re-quantized to its shared scale where that differs.
absl::Status HookFp8Weights(const Checkpoint& scheme, const Fp8Weights& fp8, const Scales& scales,
                            const Linears& linears, torch::Device device, SchemeOverlay* out) {
  for (const auto& [module, w] : fp8) {
    Linear lin = linears.at(module);
    ASSIGN_OR_RETURN(torch::Tensor q, scheme.Get(w.key));
    if (q.sizes() != lin->weight.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("FP8 weight '", w.key, "' has shape ", c10::str(q.sizes()),
                                                     "; the base model's Linear has ", c10::str(lin->weight.sizes())));
    }
    const auto [ws, is] = scales.at(module);
    const bool requantize = ws != w.weight_scale;
    ASSIGN_OR_RETURN(auto hook, TorchCall(
                                    [&] {
                                      torch::Tensor wq = q.to(device);
                                      const auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(device);
                                      torch::Tensor ws_t = torch::tensor(ws, f32).reshape({});
                                      if (requantize)
                                        wq = QuantizeFp8(DequantizeFp8(wq, torch::tensor(w.weight_scale, f32)), ws_t);
                                      return std::make_shared<Fp8LinearHook>(
                                          wq, ws_t, torch::tensor(is, f32).reshape({}), out->matmul);
                                    },
                                    w.key));
    out->requantized_shards += requantize;
    out->scaled_mm_linears += hook->uses_scaled_mm();
    out->hooks.emplace_back(lin, std::move(hook));
  }
  return absl::OkStatus();
}

// A hook per NVFP4 weight: the weight dequantized as vLLM's emulation does, in the model dtype.
absl::Status HookNvfp4Weights(const Checkpoint& scheme, const Nvfp4Weights& nvfp4, const Linears& linears,
                              torch::Device device, torch::ScalarType dtype, SchemeOverlay* out) {
  for (const auto& [module, l] : nvfp4) {
    Linear lin = linears.at(module);
    ASSIGN_OR_RETURN(torch::Tensor packed, scheme.Get(l.weight_key));
    ASSIGN_OR_RETURN(torch::Tensor block, scheme.Get(l.block_scale_key));
    if (packed.size(0) != lin->weight.size(0) || packed.size(1) * 2 != lin->weight.size(1)) {
      return absl::InvalidArgumentError(absl::StrCat("NVFP4 weight '", l.weight_key, "' has shape ",
                                                     c10::str(packed.sizes()), "; the base model's Linear has ",
                                                     c10::str(lin->weight.sizes())));
    }
    ASSIGN_OR_RETURN(auto hook, TorchCall(
                                    [&] {
                                      const auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(device);
                                      torch::Tensor w =
                                          DequantizeNvfp4AsVllm(packed.to(device), block.to(device),
                                                                torch::tensor(l.vllm_weight_global, f32), dtype);
                                      torch::Tensor ig;
                                      if (l.vllm_input_global) ig = torch::tensor(*l.vllm_input_global, f32);
                                      return std::make_shared<Nvfp4LinearHook>(w, ig);
                                    },
                                    l.weight_key));
    out->hooks.emplace_back(lin, std::move(hook));
    ++out->nvfp4_linears;
  }
  return absl::OkStatus();
}

// Every other tensor must be the base's. Parameters by model name; a tied lm_head shares embed_tokens'
// storage and may be absent from the scheme.
absl::Status CheckTheRestIsTheBase(const Checkpoint& scheme, const Fp8Weights& fp8, const Nvfp4Weights& nvfp4,
                                   Qwen2_5_VLModel& model, SchemeOverlay* out) {
  const torch::Device device = model->device();
  const torch::ScalarType dtype = model->dtype();
  std::map<std::string, torch::Tensor> params;
  for (const auto& item : model->named_parameters(/*recurse=*/true)) params.emplace(item.key(), item.value());
  std::set<std::string> replaced;
  for (const auto& [module, w] : fp8) replaced.insert(module + std::string(kWeight));
  std::set<std::string> nvfp4_keys;
  for (const auto& [module, l] : nvfp4) {
    replaced.insert(module + std::string(kWeight));
    nvfp4_keys.insert(l.weight_key);
  }
  std::set<std::string> seen;
  for (const auto& key : scheme.TensorNames()) {
    const TensorInfo* info = scheme.Find(key);
    if (info->dtype == DType::kF8E4M3 || IsScaleTensor(key) || nvfp4_keys.count(key)) continue;
    const std::string name = qwen2_5_vl::ModelName(key);
    if (absl::EndsWith(name, ".inv_freq")) continue;  // non-persistent rotary buffers of old checkpoints
    auto it = params.find(name);
    if (it == params.end()) {
      return absl::InvalidArgumentError(absl::StrCat("scheme tensor '", key, "' is no parameter of the base model"));
    }
    seen.insert(name);
    ASSIGN_OR_RETURN(torch::Tensor t, scheme.Get(key));
    ASSIGN_OR_RETURN(bool equal, TorchCall(
                                     [&] {
                                       torch::Tensor s = t.to(device, dtype);
                                       return s.sizes() == it->second.sizes() && torch::equal(s, it->second.detach());
                                     },
                                     key));
    if (!equal) {
      return absl::FailedPreconditionError(absl::StrCat(
          "scheme tensor '", key, "' differs from the base model's: the scheme was not made from the model this ",
          "daemon holds, so it cannot be evaluated against it"));
    }
    ++out->tensors_checked;
  }
  const bool tied = model->config().tie_word_embeddings;
  for (const auto& [name, p] : params) {
    if (seen.count(name) || replaced.count(name) || (tied && qwen2_5_vl::SiteOf(name).part == qwen2_5_vl::Part::kHead))
      continue;
    return absl::InvalidArgumentError(absl::StrCat("the scheme lacks tensor '", name, "' of the base model"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SchemeOverlay> BuildSchemeOverlay(const Checkpoint& scheme, Qwen2_5_VLModel& model, Fp8Matmul matmul) {
  SchemeOverlay out;
  ASSIGN_OR_RETURN(out.matmul, ResolveFp8Matmul(matmul, model->device()));
  Linears linears;
  for (auto& [name, lin] : model->Linears()) linears.emplace(name, lin);
  ASSIGN_OR_RETURN(Nvfp4Weights nvfp4, ReadNvfp4Weights(scheme, linears));
  ASSIGN_OR_RETURN(Fp8Weights fp8, ReadFp8Weights(scheme, linears, BlockScaleKeys(nvfp4)));
  ASSIGN_OR_RETURN(Scales scales, FusedScales(fp8, nvfp4, linears));
  RETURN_IF_ERROR(HookFp8Weights(scheme, fp8, scales, linears, model->device(), &out));
  RETURN_IF_ERROR(HookNvfp4Weights(scheme, nvfp4, linears, model->device(), model->dtype(), &out));
  RETURN_IF_ERROR(CheckTheRestIsTheBase(scheme, fp8, nvfp4, model, &out));
  return out;
}

OverlayGuard::OverlayGuard(const SchemeOverlay& overlay) {
  for (const auto& [layer, hook] : overlay.hooks) {
    Linear lin = layer;  // a holder copy: the same module, not const
    previous_.emplace_back(lin, lin->hook());
    lin->set_hook(hook);
  }
}

OverlayGuard::~OverlayGuard() {
  for (auto& [lin, hook] : previous_) lin->set_hook(hook);
}

}  // namespace autoquant

#include "core/scheme/hf_quant_config.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"

namespace autoquant {
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

constexpr int kNvfp4GroupSize = 16;

json Fp8Args(bool compressed_tensors) {
  if (!compressed_tensors) return {{"dynamic", false}, {"num_bits", 8}, {"type", "float"}};
  return {{"actorder", nullptr},
          {"block_structure", nullptr},
          {"dynamic", false},
          {"group_size", nullptr},
          {"num_bits", 8},
          {"observer", "minmax"},
          {"observer_kwargs", json::object()},
          {"strategy", "tensor"},
          {"symmetric", true},
          {"type", "float"}};
}

// compressed-tensors' NVFP4 preset: weights static per tensor group; activations with a static global
// scale and per-block scales computed at run time ("local").
json Nvfp4Args(bool compressed_tensors, bool input) {
  if (!compressed_tensors) {
    return {{"dynamic", false}, {"num_bits", 4}, {"type", "float"}, {"group_size", kNvfp4GroupSize}};
  }
  return {{"actorder", nullptr},
          {"block_structure", nullptr},
          {"dynamic", input ? json("local") : json(false)},
          {"group_size", kNvfp4GroupSize},
          {"num_bits", 4},
          {"observer", input ? "static_minmax" : "minmax"},
          {"observer_kwargs", json::object()},
          // Without it compressed-tensors does not round run-time block scales to E4M3 (measured: its
          // activation quantization then differs from ModelOpt's and vLLM's).
          {"scale_dtype", "torch.float8_e4m3fn"},
          {"strategy", "tensor_group"},
          {"symmetric", true},
          {"type", "float"}};
}

// A config group's quantization arguments for format f (no targets).
json GroupArgs(Format f, bool compressed_tensors) {
  json g;
  if (IsNvfp4(f)) {
    g["weights"] = Nvfp4Args(compressed_tensors, false);
    if (SpecOf(f).quantizes_input) g["input_activations"] = Nvfp4Args(compressed_tensors, true);
    if (compressed_tensors) {
      if (!SpecOf(f).quantizes_input) g["input_activations"] = nullptr;
      g["format"] = "nvfp4-pack-quantized";
    }
  } else {
    g["weights"] = Fp8Args(compressed_tensors);
    g["input_activations"] = Fp8Args(compressed_tensors);
    if (compressed_tensors) g["format"] = "float-quantized";
  }
  if (compressed_tensors) g["output_activations"] = nullptr;
  return g;
}

// ModelOpt's per-layer entry of quantized_layers.
json LayerEntry(Format f) {
  json e = {{"quant_algo", FormatName(f)}};
  if (IsNvfp4(f)) e["group_size"] = kNvfp4GroupSize;
  return e;
}

// The quantized formats, most aggressive first (as a search space lists them), with their modules.
using ModulesByFormat = std::map<Format, std::vector<std::string>, decltype(&MoreAggressive)>;

// One config group per format, group_0 the most aggressive. With one format it targets every Linear
// ("Linear", the ignored ones excepted); with several, each lists its modules.
json CompressedTensorsConfig(const ModulesByFormat& modules, const std::vector<std::string>& excluded) {
  const bool mixed = modules.size() > 1;
  json groups = json::object();
  int i = 0;
  std::string top_format;
  for (const auto& [f, names] : modules) {
    json g = GroupArgs(f, true);
    g["targets"] = mixed ? json(names) : json::array({"Linear"});
    top_format = g["format"].get<std::string>();
    groups[absl::StrCat("group_", i++)] = std::move(g);
  }
  return {{"config_groups", groups},
          {"format", mixed ? "mixed-precision" : top_format},
          {"global_compression_ratio", nullptr},
          {"ignore", excluded},
          {"kv_cache_scheme", nullptr},
          {"quant_method", "compressed-tensors"},
          {"quantization_status", "compressed"},
          {"sparsity_config", json::object()},
          {"transform_config", json::object()},
          {"version", "0.12.2"}};
}

QuantConfigs ModelOptConfigs(const ModulesByFormat& modules, const std::vector<std::string>& excluded,
                             const json& producer) {
  json quantization = {{"kv_cache_quant_algo", nullptr}};
  json qcfg = {{"producer", producer}, {"quant_method", "modelopt"}, {"kv_cache_scheme", nullptr}};
  if (modules.size() == 1) {
    const Format f = modules.begin()->first;
    quantization["quant_algo"] = FormatName(f);
    if (IsNvfp4(f)) quantization["group_size"] = kNvfp4GroupSize;
    quantization["exclude_modules"] = excluded;
    qcfg["quant_algo"] = FormatName(f);
    qcfg["ignore"] = excluded;
    json g = GroupArgs(f, false);
    g["targets"] = {"Linear"};
    qcfg["config_groups"] = {{"group_0", g}};
  } else {
    // ModelOpt's layout: quantized_layers per layer, and a config group per distinct layer entry
    // targeting its layers by name (sorted).
    json per_layer = json::object();
    json groups = json::object();
    int i = 0;
    for (const auto& [f, names] : modules) {
      for (const auto& n : names) per_layer[n] = LayerEntry(f);
      json g = GroupArgs(f, false);
      std::vector<std::string> sorted_names = names;
      std::sort(sorted_names.begin(), sorted_names.end());
      g["targets"] = sorted_names;
      groups[absl::StrCat("group_", i++)] = std::move(g);
    }
    quantization["quant_algo"] = "MIXED_PRECISION";
    quantization["quantized_layers"] = per_layer;
    qcfg["quant_algo"] = "MIXED_PRECISION";
    qcfg["ignore"] = json::array();
    qcfg["config_groups"] = groups;
    qcfg["quantized_layers"] = per_layer;
  }
  return {qcfg, {{"producer", producer}, {"quantization", quantization}}};
}

}  // namespace

absl::StatusOr<QuantConfigs> MakeQuantConfigs(ExportFormat format, const std::vector<LayerQuant>& layers,
                                              const std::string& producer_version) {
  ModulesByFormat modules(&MoreAggressive);
  std::vector<std::string> excluded;
  for (const auto& l : layers) {
    if (!IsQuantized(l.format)) {
      excluded.push_back(l.module);
    } else {
      modules[l.format].push_back(l.module);
    }
  }
  if (modules.empty()) return absl::InvalidArgumentError("the plan quantizes no layer: nothing to export");
  if (format == ExportFormat::kCompressedTensors)
    return QuantConfigs{CompressedTensorsConfig(modules, excluded), nullptr};
  return ModelOptConfigs(modules, excluded, {{"name", "autoquant"}, {"version", producer_version}});
}

}  // namespace autoquant

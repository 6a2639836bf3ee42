#include "core/scheme/hf_quant_config.h"

#include <set>

#include "absl/strings/str_cat.h"

namespace autoquant {
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

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

}  // namespace

absl::StatusOr<QuantConfigs> MakeQuantConfigs(ExportFormat format, const std::vector<LayerQuant>& layers,
                                              const std::string& producer_version) {
  std::set<std::string> algos;  // the quant_algo names, sorted
  std::vector<std::string> excluded;
  for (const auto& l : layers) {
    if (!IsQuantized(l.format)) {
      excluded.push_back(l.module);
    } else {
      algos.insert(std::string(FormatName(l.format)));
    }
  }
  if (algos.empty()) return absl::InvalidArgumentError("the plan quantizes no layer: nothing to export as FP8");
  json producer = {{"name", "autoquant"}, {"version", producer_version}};
  QuantConfigs out;
  if (format == ExportFormat::kCompressedTensors) {
    out.quantization_config = {{"config_groups",
                                {{"group_0",
                                  {{"format", "float-quantized"},
                                   {"input_activations", Fp8Args(true)},
                                   {"output_activations", nullptr},
                                   {"targets", {"Linear"}},
                                   {"weights", Fp8Args(true)}}}}},
                               {"format", "float-quantized"},
                               {"global_compression_ratio", nullptr},
                               {"ignore", excluded},
                               {"kv_cache_scheme", nullptr},
                               {"quant_method", "compressed-tensors"},
                               {"quantization_status", "compressed"},
                               {"sparsity_config", json::object()},
                               {"transform_config", json::object()},
                               {"version", "0.12.2"}};
    out.hf_quant_config = nullptr;
    return out;
  }
  const bool mixed = algos.size() > 1;
  json quantization = {{"kv_cache_quant_algo", nullptr}};
  json qcfg = {{"producer", producer}, {"quant_method", "modelopt"}, {"kv_cache_scheme", nullptr}};
  if (!mixed) {
    quantization["quant_algo"] = *algos.begin();
    quantization["exclude_modules"] = excluded;
    qcfg["quant_algo"] = *algos.begin();
    qcfg["ignore"] = excluded;
    qcfg["config_groups"] = {
        {"group_0", {{"input_activations", Fp8Args(false)}, {"weights", Fp8Args(false)}, {"targets", {"Linear"}}}}};
  } else {
    json per_layer = json::object();
    for (const auto& l : layers) {
      if (IsQuantized(l.format)) per_layer[l.module] = {{"quant_algo", FormatName(l.format)}};
    }
    quantization["quant_algo"] = "MIXED_PRECISION";
    quantization["quantized_layers"] = per_layer;
    qcfg["quant_algo"] = "MIXED_PRECISION";
    qcfg["ignore"] = json::array();
    qcfg["quantized_layers"] = per_layer;
  }
  out.hf_quant_config = {{"producer", producer}, {"quantization", quantization}};
  out.quantization_config = qcfg;
  return out;
}

}  // namespace autoquant

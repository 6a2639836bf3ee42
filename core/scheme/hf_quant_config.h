// The quantization metadata a scheme's checkpoint carries, in the formats
// real engines read:
//
//   modelopt (ModelOpt >= 0.42, vLLM "modelopt" / "modelopt_mixed"):
//     hf_quant_config.json {"producer", "quantization": {"quant_algo", "kv_cache_quant_algo",
//                           "exclude_modules" | "quantized_layers"}}
//     config.json quantization_config {"config_groups", "ignore", "quant_algo",
//                           "producer", "quant_method": "modelopt"[, "quantized_layers"]}
//     One quantized format -> its quant_algo ("FP8", "NVFP4" with group_size 16, "W4A16_NVFP4")
//     with the unquantized Linears in exclude_modules/ignore; several -> "MIXED_PRECISION" with
//     quantized_layers ({"quant_algo": "NVFP4", "group_size": 16} or {"quant_algo": "FP8"} per
//     layer) and a config group per format targeting its layers by name.
//   compressed-tensors (llm-compressor's schemes): config.json quantization_config with one config
//     group per format, group_0 the most aggressive: FP8 "float-quantized" (static per tensor),
//     NVFP4 "nvfp4-pack-quantized" (tensor_group 16, activations dynamic "local", W4A16 none);
//     targets ["Linear"] with one format, the modules by name with several (top-level format
//     "mixed-precision"); "ignore": [every unquantized Linear], "quant_method": "compressed-tensors",
//     "quantization_status": "compressed", ...
//
// Module names: modelopt configs use the checkpoint's names (the base's key
// layout, e.g. "model.layers.0.mlp.down_proj"); compressed-tensors' ignore
// uses transformers 5.x module names ("model.language_model.layers.0...."),
// which is what transformers matches it against on load.
//
// Torch-free.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant/formats.h"
#include "core/quant/scheme_spec.h"
#include "nlohmann/json.hpp"

namespace autoquant {

struct LayerQuant {
  std::string module;  // checkpoint module name
  Format format;       // Format::kNone for unquantized Linears; written as its quant_algo name
};

struct QuantConfigs {
  nlohmann::json quantization_config;  // goes into config.json
  nlohmann::json hf_quant_config;      // hf_quant_config.json (modelopt only; null otherwise)
};

// InvalidArgument if no layer is quantized.
absl::StatusOr<QuantConfigs> MakeQuantConfigs(ExportFormat format, const std::vector<LayerQuant>& layers,
                                              const std::string& producer_version);

}  // namespace autoquant

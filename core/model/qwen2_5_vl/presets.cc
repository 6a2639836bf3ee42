#include "core/model/qwen2_5_vl/presets.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/io/checkpoint_writer.h"
#include "core/io/torch_dtype.h"
#include "core/model/layers/rms_norm.h"
#include "core/model/qwen2_5_vl/architecture.h"
#include "core/model/qwen2_5_vl/config.h"
#include "core/model/qwen2_5_vl/model.h"
#include "core/model/qwen2_5_vl/processor_files.h"
#include "core/model/qwen2_5_vl/weights.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace {
using ojson = nlohmann::ordered_json;

ojson Qwen3BConfig() {
  // Verbatim from Qwen/Qwen2.5-VL-3B-Instruct (reference section 1.1).
  return ojson::parse(R"({
  "architectures": ["Qwen2_5_VLForConditionalGeneration"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "vision_start_token_id": 151652,
  "vision_end_token_id": 151653,
  "vision_token_id": 151654,
  "image_token_id": 151655,
  "video_token_id": 151656,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 11008,
  "max_position_embeddings": 128000,
  "max_window_layers": 70,
  "model_type": "qwen2_5_vl",
  "num_attention_heads": 16,
  "num_hidden_layers": 36,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.41.2",
  "use_cache": true,
  "use_sliding_window": false,
  "vision_config": {
    "depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
    "in_chans": 3, "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14,
    "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "temporal_patch_size": 2
  },
  "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
  "vocab_size": 151936
})");
}

ojson Qwen7BConfig() {
  // Qwen/Qwen2.5-VL-7B-Instruct's config.json: the 3B's layout with hidden 3584, 28 layers of 28 heads
  // (4 KV heads), MLP 18944, an untied lm_head and vocab 152064; the same vision tower, projecting to 3584.
  ojson c = Qwen3BConfig();
  c["hidden_size"] = 3584;
  c["intermediate_size"] = 18944;
  c["max_window_layers"] = 28;
  c["num_attention_heads"] = 28;
  c["num_hidden_layers"] = 28;
  c["num_key_value_heads"] = 4;
  c["tie_word_embeddings"] = false;
  c["vision_config"]["out_hidden_size"] = 3584;
  c["vocab_size"] = 152064;
  return c;
}

ojson TinyConfig() {
  return ojson::parse(R"({
  "architectures": ["Qwen2_5_VLForConditionalGeneration"],
  "attention_dropout": 0.0,
  "bos_token_id": 491,
  "eos_token_id": 493,
  "vision_start_token_id": 500,
  "vision_end_token_id": 501,
  "vision_token_id": 502,
  "image_token_id": 503,
  "video_token_id": 504,
  "hidden_act": "silu",
  "hidden_size": 64,
  "initializer_range": 0.02,
  "intermediate_size": 128,
  "max_position_embeddings": 4096,
  "max_window_layers": 3,
  "model_type": "qwen2_5_vl",
  "num_attention_heads": 4,
  "num_hidden_layers": 3,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 4096,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "use_sliding_window": false,
  "vision_config": {
    "depth": 3, "hidden_act": "silu", "hidden_size": 32, "intermediate_size": 48, "num_heads": 2,
    "in_channels": 3, "out_hidden_size": 64, "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14,
    "window_size": 56, "fullatt_block_indexes": [1], "tokens_per_second": 2, "temporal_patch_size": 2
  },
  "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
  "vocab_size": 512
})");
}

}  // namespace

const std::vector<std::string>& PresetNames() {
  static const std::vector<std::string> names = {"tiny", "qwen2.5-vl-3b", "qwen2.5-vl-7b"};
  return names;
}

absl::StatusOr<ojson> PresetConfig(absl::string_view name, c10::ScalarType dtype) {
  ojson c;
  if (name == "tiny") {
    c = TinyConfig();
  } else if (name == "qwen2.5-vl-3b") {
    c = Qwen3BConfig();
  } else if (name == "qwen2.5-vl-7b") {
    c = Qwen7BConfig();
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown preset '", name, "' (known: ", absl::StrJoin(PresetNames(), ", "), ")"));
  }
  if (dtype != c10::ScalarType::BFloat16 && dtype != c10::ScalarType::Float) {
    return absl::InvalidArgumentError("preset dtype must be bfloat16 or float32");
  }
  c["torch_dtype"] = dtype == c10::ScalarType::BFloat16 ? "bfloat16" : "float32";
  return c;
}

ojson PresetGenerationConfig(absl::string_view name) {
  // The tiny preset's special tokens start at 491, where the 3B's start at 151643.
  if (name == "tiny") return ojson{{"bos_token_id", 491}, {"eos_token_id", {493, 491}}, {"pad_token_id", 491}};
  // Qwen2.5-VL-3B-Instruct's sampling defaults (7B-Instruct's are the same).
  return ojson::parse(R"({"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": true,
    "eos_token_id": [151645, 151643], "repetition_penalty": 1.05, "temperature": 0.1, "top_p": 0.001, "top_k": 1})");
}

absl::Status InitRandomCheckpoint(const InitCheckpointOptions& options) {
  ASSIGN_OR_RETURN(ojson config_json, PresetConfig(options.preset, options.dtype));
  ASSIGN_OR_RETURN(Qwen2_5_VLConfig config, ParseQwen2_5_VLConfig(nlohmann::json::parse(config_json.dump()),
                                                                  absl::StrCat("preset ", options.preset)));
  ASSIGN_OR_RETURN(DType dtype, FromTorch(options.dtype));
  // Only names and shapes are needed: parameters are allocated but never touched.
  ASSIGN_OR_RETURN(Qwen2_5_VLModel model, TorchCall([&] { return Qwen2_5_VLModel(config); }, "build model"));
  std::set<std::string> norm_weights;
  for (const auto& m : model->named_modules()) {
    if (std::dynamic_pointer_cast<RMSNormImpl>(m.value())) norm_weights.insert(m.key() + ".weight");
  }
  std::vector<PlannedTensor> plan;
  uint64_t index = 0;
  for (const auto& p : model->named_parameters()) {
    if (config.tie_word_embeddings && p.key() == "lm_head.weight") continue;
    PlannedTensor t;
    t.spec.name = qwen2_5_vl::CheckpointKey(p.key(), qwen2_5_vl::KeyLayout::kLegacy);
    t.spec.dtype = dtype;
    t.spec.shape.assign(p.value().sizes().begin(), p.value().sizes().end());
    const bool is_norm = norm_weights.count(p.key()) > 0;
    const bool is_bias = p.key().size() > 5 && p.key().substr(p.key().size() - 5) == ".bias";
    const uint64_t stream = options.seed * 1000003ull + index++;
    const std::vector<int64_t> shape = t.spec.shape;
    const c10::ScalarType out_dtype = options.dtype;
    t.produce = [=]() -> absl::StatusOr<torch::Tensor> {
      return TorchCall([&] {
        if (is_norm) return torch::ones(shape, torch::dtype(out_dtype));
        if (is_bias) return torch::zeros(shape, torch::dtype(out_dtype));
        at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(stream);
        return torch::empty(shape, torch::dtype(torch::kFloat32)).normal_(0.0, 0.02, gen).to(out_dtype);
      });
    };
    plan.push_back(std::move(t));
  }
  model = nullptr;  // release the (untouched) allocations before writing

  if (!options.overwrite && std::filesystem::exists(options.out)) {
    return absl::AlreadyExistsError(absl::StrCat(options.out.string(), " exists (pass --overwrite to replace it)"));
  }
  ASSIGN_OR_RETURN(StagedDir staged, StagedDir::Create(options.out, options.overwrite));
  RETURN_IF_ERROR(WriteFileAtomic(staged.path() / "config.json", config_json.dump(2) + "\n"));
  RETURN_IF_ERROR(
      WriteFileAtomic(staged.path() / "generation_config.json", PresetGenerationConfig(options.preset).dump(2) + "\n"));
  ASSIGN_OR_RETURN(auto processor_files, Qwen2_5_VLProcessorFiles(config_json));
  for (const auto& [name, text] : processor_files) {
    RETURN_IF_ERROR(WriteFileAtomic(staged.path() / name, text));
  }
  ShardingOptions sharding;
  sharding.max_shard_bytes = options.max_shard_bytes;
  sharding.metadata["autoquant.format"] = kRandomCheckpointFormat;
  RETURN_IF_ERROR(WriteShardedSafetensors(staged.path(), plan, sharding).status());
  return staged.Commit();
}

}  // namespace autoquant

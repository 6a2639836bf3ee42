// Named model configurations and random-weight checkpoints for tests and
// benchmarks (`autoquant model init`).
//
// Presets:
//   "qwen2.5-vl-3b"  the published Qwen/Qwen2.5-VL-3B-Instruct config.json
//                    (tied embeddings: no lm_head.weight is written).
//   "qwen2.5-vl-7b"  Qwen/Qwen2.5-VL-7B-Instruct's config.json: hidden 3584,
//                    28 layers, 28 heads / 4 KV heads, MLP 18944, vocab
//                    152064, untied lm_head; the same vision tower (8.3 B
//                    parameters, 16.6 GB in bf16).
//   "tiny"           every feature at toy size: text hidden 64, 3 layers, 4
//                    heads / 2 KV heads (head_dim 16, mrope_section [2,3,3]),
//                    vocab 512, untied lm_head; vision hidden 32, 2 heads,
//                    depth 3 with block 1 full attention, patch 14, merge 2,
//                    window_size 56 (2x2 merged tokens per window), so a
//                    112x112 image already has several windows.
//                    Token ids: Qwen2.5-VL's special tokens from 491
//                    (bos <|endoftext|> 491, eos <|im_end|> 493,
//                    vision_start 500, vision_end 501, vision_pad 502,
//                    image 503, video 504); text ids are < 491.
//
// Weights are initialised like transformers (normal(0, 0.02) for Linear,
// Embedding and Conv weights, zeros for biases, ones for RMSNorm weights)
// from a seeded CPU generator, one stream per tensor, so a seed always gives
// the same checkpoint. They are produced tensor by tensor while the shards are
// written into a staged directory: the model never sits in memory, and a
// crash leaves no half-written checkpoint under the target name.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace autoquant {

// The preset names, for help texts.
const std::vector<std::string>& PresetNames();

// config.json of a preset (flat transformers 4.x layout, as published).
// InvalidArgument for an unknown name.
absl::StatusOr<nlohmann::ordered_json> PresetConfig(absl::string_view name, c10::ScalarType dtype);

// generation_config.json of a preset.
nlohmann::ordered_json PresetGenerationConfig(absl::string_view name);

struct InitCheckpointOptions {
  std::string preset;
  std::filesystem::path out;
  uint64_t seed = 0;
  c10::ScalarType dtype = c10::ScalarType::BFloat16;
  bool overwrite = false;
  uint64_t max_shard_bytes = 5ull << 30;
};

// The "autoquant.format" metadata of every shard InitRandomCheckpoint writes:
// how `model init --overwrite` recognises a checkpoint it may replace.
inline constexpr char kRandomCheckpointFormat[] = "autoquant.random-checkpoint.v1";

// Writes config.json, generation_config.json, the tokenizer and processor
// files (processor_files.h) and the weights (legacy Hub key layout) to
// options.out. AlreadyExists when out exists without overwrite.
absl::Status InitRandomCheckpoint(const InitCheckpointOptions& options);

}  // namespace autoquant

// The tokenizer and processor files of a Qwen2.5-VL checkpoint, made offline
// and deterministically from its config.json, so that a generated checkpoint
// loads where a published one does: transformers' AutoProcessor and
// AutoTokenizer, vLLM, `autoquant-calib`.
//
// What is written, per file:
//   tokenizer.json            a byte-level BPE in Qwen2's shape (its pre-tokenizer
//                             regex, NFC, byte-level decoder); ids 0-255 are the
//                             256 byte symbols, then merges fill the vocabulary
//                             up to the first special token; the merges are a
//                             fixed breadth-first walk over common characters
//                             (not learned from text: the weights are random).
//   tokenizer_config.json     Qwen2Tokenizer, eos <|im_end|>, pad <|endoftext|>.
//   chat_template.jinja       Qwen2.5-VL-Instruct's chat template.
//   preprocessor_config.json  Qwen2VLImageProcessor with the config's patch,
//                             merge and temporal patch sizes and Qwen's pixel
//                             bounds and CLIP normalisation.
//
// Special tokens sit where Qwen2.5-VL puts them: 22 consecutive ids starting
// at vision_start_token_id - 9 (<|endoftext|>, <|im_start|>, <|im_end|>, the
// six object/box/quad tokens, <|vision_start|> ... <|video_pad|>, tool and FIM
// tokens); those at or past vocab_size are left out (the tiny preset keeps 21).
// The config's bos/eos and vision token ids must agree with that layout.
//
// Usage:
//   ASSIGN_OR_RETURN(auto files, Qwen2_5_VLProcessorFiles(config_json));
//   for (const auto& [name, text] : files) RETURN_IF_ERROR(WriteFileAtomic(dir / name, text));
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace autoquant {

// (file name, content) for every file above, from a Qwen2.5-VL config.json
// (flat layout: token ids at the top level, vision_config nested).
// InvalidArgument, naming the key, when the config's token ids do not follow
// Qwen2.5-VL's special-token layout or leave no room for the 256 byte symbols.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Qwen2_5_VLProcessorFiles(
    const nlohmann::ordered_json& config);

}  // namespace autoquant

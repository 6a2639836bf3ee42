// Greedy generation with a KV cache: the sanity check that a base model or a
// scheme still writes sensible continuations of a prompt.
//
//   GenerateOptions o;
//   o.max_new_tokens = 32;
//   o.stop_token_ids = {eos};
//   ASSIGN_OR_RETURN(GenerateResult r, GreedyGenerate(model, prompt, o));
//   // r.tokens: the generated ids, the stop token included when one ended it
//
// The prefill runs the prompt through Qwen2_5_VLModelImpl::Prepare (vision
// tower included) and the decoder layers, filling a KvCache; each decode step
// feeds the last token alone. Generated tokens get the M-RoPE position
// transformers gives them, index + rope_deltas in all three sections (the
// prompt's largest position + 1 for the first one). Every projection goes
// through LinearImpl::forward, so quantization hooks apply as in a full
// forward. The next token is the argmax of the last position's logits (the
// lowest id on ties, like torch.argmax): transformers' generate(do_sample=False)
// without logits processors (repetition_penalty etc. are not applied).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/qwen2_5_vl/model.h"

namespace autoquant {

struct GenerateOptions {
  int64_t max_new_tokens = 16;          // >= 1
  std::vector<int64_t> stop_token_ids;  // e.g. eos: generation stops after emitting one
  bool keep_logits = false;             // fill GenerateResult::logits (debugging, tests)
};

struct GenerateResult {
  std::vector<int64_t> tokens;  // generated ids (not the prompt)
  // Every logit of every step was finite. Decoding stops at the first step
  // with a non-finite logit, and that step's token is not emitted.
  bool finite = true;
  // Wall time, CUDA synchronized before each clock reading. The prefill is
  // the prompt's forward up to the first token; decode the steps after it.
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t decode_steps = 0;  // one-token forwards run after the prefill
  // With keep_logits: each step's last-position logits, [vocab] float32 on
  // the model's device, the prefill's first (also a non-finite step's).
  std::vector<torch::Tensor> logits;
};

// prompt: one sample (input_ids [1, S]), optionally with images. An
// attention_mask's padding (zeros before and/or after the tokens) is
// stripped; zeros between tokens are refused. Runs under InferenceMode on the
// model's device and dtype. Never throws. Codes:
//   InvalidArgument  what ValidateInputs refuses, a batch other than 1, a
//                    mask with no tokens or with holes, max_new_tokens < 1,
//                    a stop token id outside the vocabulary;
//   Unimplemented    video tokens (as ValidateInputs);
//   ResourceExhausted out of device or host memory;
//   Internal         other torch errors.
// Not thread-safe (the model is not); the model is not modified.
absl::StatusOr<GenerateResult> GreedyGenerate(Qwen2_5_VLModel& model, const Qwen2_5_VLInputs& prompt,
                                              const GenerateOptions& options);

}  // namespace autoquant

#include "core/model/qwen2_5_vl/generate.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/model/layers/kv_cache.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace {

using Clock = std::chrono::steady_clock;

// The prompt without its padding: input_ids [1, S'] and no attention_mask.
absl::StatusOr<Qwen2_5_VLInputs> StripPadding(const Qwen2_5_VLInputs& prompt) {
  return TorchCall(
      [&]() -> absl::StatusOr<Qwen2_5_VLInputs> {
        if (prompt.input_ids.size(0) != 1) {
          return absl::InvalidArgumentError(
              absl::StrCat("generation takes one sample (batch 1), got input_ids of batch ", prompt.input_ids.size(0)));
        }
        Qwen2_5_VLInputs in = prompt;
        if (!prompt.attention_mask.defined()) return in;
        auto read_mask = [&] {
          torch::Tensor m = prompt.attention_mask.to(torch::kCPU).ne(0).to(torch::kInt64).contiguous();
          return std::vector<int64_t>(m.data_ptr<int64_t>(), m.data_ptr<int64_t>() + m.numel());
        };
        ASSIGN_OR_RETURN(std::vector<int64_t> mask, TorchCall(read_mask, "reading attention_mask"));
        const auto first = std::find(mask.begin(), mask.end(), 1);
        if (first == mask.end()) {
          return absl::InvalidArgumentError("attention_mask marks no token of the sample");
        }
        const auto last = std::find(mask.rbegin(), mask.rend(), 1).base();  // one past the last token
        if (std::find(first, last, 0) != last) {
          return absl::InvalidArgumentError(
              "attention_mask has padding between tokens; only leading or trailing padding is stripped");
        }
        const int64_t begin = first - mask.begin(), length = last - first;
        in.attention_mask = torch::Tensor();
        return TorchCall([&] {
          in.input_ids = prompt.input_ids.narrow(1, begin, length);
          return in;
        });
      },
      "preparing the prompts");
}

// The next token from one step's logits [vocab] float32, and whether they were all finite.
struct Pick {
  int64_t token;
  bool finite;
};

Pick PickGreedy(const torch::Tensor& logits) {
  // One device-to-host copy for both answers.
  torch::Tensor both = torch::stack({logits.argmax(), logits.isfinite().all().to(torch::kInt64)}).cpu();
  return {both[0].item<int64_t>(), both[1].item<int64_t>() != 0};
}

}  // namespace

absl::StatusOr<GenerateResult> GreedyGenerate(Qwen2_5_VLModel& model, const Qwen2_5_VLInputs& prompt,
                                              const GenerateOptions& options) {
  return TorchCall(
      [&]() -> absl::StatusOr<GenerateResult> {
        if (options.max_new_tokens < 1) {
          return absl::InvalidArgumentError(
              absl::StrCat("max_new_tokens must be at least 1, got ", options.max_new_tokens));
        }
        const int64_t vocab = model->config().text.vocab_size;
        for (int64_t id : options.stop_token_ids) {
          if (id < 0 || id >= vocab) {
            return absl::InvalidArgumentError(
                absl::StrCat("stop token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
          }
        }
        RETURN_IF_ERROR(model->ValidateInputs(prompt));
        ASSIGN_OR_RETURN(Qwen2_5_VLInputs in, StripPadding(prompt));
        c10::InferenceMode guard;

        const torch::Device device = model->device();
        auto now = [&] {
          if (device.is_cuda()) torch::cuda::synchronize(device.index());
          return Clock::now();
        };
        auto seconds = [](Clock::time_point a, Clock::time_point b) {
          return std::chrono::duration<double>(b - a).count();
        };
        auto is_stop = [&](int64_t token) {
          return std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(), token) !=
                 options.stop_token_ids.end();
        };

        GenerateResult result;
        std::vector<DecoderLayer>& layers = model->layers();
        const int64_t prompt_len = in.input_ids.size(1);
        KvCache cache(static_cast<int64_t>(layers.size()), prompt_len + options.max_new_tokens);
        // Appends a step's token unless its logits were not finite; false when decoding ends.
        auto emit = [&](const torch::Tensor& logits) {
          if (options.keep_logits) result.logits.push_back(logits);
          const Pick pick = PickGreedy(logits);
          if (!pick.finite) {
            result.finite = false;
            return false;
          }
          result.tokens.push_back(pick.token);
          return !is_stop(pick.token) && static_cast<int64_t>(result.tokens.size()) < options.max_new_tokens;
        };

        ASSIGN_OR_RETURN(Clock::time_point start, TorchCall(now, "generation prefill"));
        ASSIGN_OR_RETURN(DecoderInputs prefill, model->Prepare(in));
        auto run_prefill = [&] {
          torch::Tensor h = prefill.hidden;
          for (size_t i = 0; i < layers.size(); ++i) h = layers[i]->forward(h, prefill, &cache.layer(i));
          // hidden [1, S, hidden] -> the last position's logits [vocab]
          return emit(model->Head(h.narrow(1, prompt_len - 1, 1)).view({-1}));
        };
        ASSIGN_OR_RETURN(bool more, TorchCall(run_prefill, "generation prefill"));
        ASSIGN_OR_RETURN(Clock::time_point prefilled, TorchCall(now, "generation prefill"));
        result.prefill_seconds = seconds(start, prefilled);

        RETURN_IF_ERROR(TorchCall(
            [&] {
              // The token at sequence index t sits at M-RoPE position t + rope_deltas in every section.
              const int64_t delta = prefill.rope_deltas[0].item<int64_t>();
              const auto ids = torch::dtype(torch::kInt64).device(device);
              while (more) {
                DecoderInputs step;
                step.hidden =
                    model->model->language_model->embed_tokens->forward(torch::full({1, 1}, result.tokens.back(), ids));
                step.position_ids = torch::full({3, 1, 1}, cache.length() + delta, ids);
                std::tie(step.cos, step.sin) =
                    model->model->language_model->RotaryCosSin(step.position_ids, step.hidden.scalar_type());
                step.rope_deltas = prefill.rope_deltas;
                torch::Tensor h = step.hidden;
                for (size_t i = 0; i < layers.size(); ++i) {
                  h = layers[i]->forward(h, step, &cache.layer(i));
                }
                ++result.decode_steps;
                more = emit(model->Head(h).view({-1}));
              }
            },
            "generation decode"));
        ASSIGN_OR_RETURN(Clock::time_point decoded, TorchCall(now, "generation decode"));
        result.decode_seconds = seconds(prefilled, decoded);
        return result;
      },
      "greedy generation");
}

}  // namespace autoquant

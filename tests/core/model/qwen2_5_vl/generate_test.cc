// Greedy generation with a KV cache against the same model without one: on a
// tiny random float32 checkpoint, every step's token and logits equal those of
// a full forward over prompt + generated tokens; padding is stripped, stop
// tokens and non-finite logits end decoding, Linear hooks see every step, and
// bad prompts are statuses.
#include "core/model/qwen2_5_vl/generate.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <memory>

#include "core/io/checkpoint.h"
#include "core/model/layers/kv_cache.h"
#include "core/model/qwen2_5_vl/calib_set.h"
#include "core/model/qwen2_5_vl/model.h"
#include "core/model/qwen2_5_vl/presets.h"
#include "core/model/qwen2_5_vl/weights.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kNewTokens = 8;
constexpr double kLogitsTol = 1e-4;

class GenerateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                     ("aq_generate_test." + std::to_string(::getpid())));
    std::filesystem::remove_all(*dir_);
    InitCheckpointOptions o;
    o.preset = "tiny";
    o.out = *dir_;
    o.seed = 5;
    o.dtype = torch::kFloat32;
    ASSERT_TRUE(InitRandomCheckpoint(o).ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(Checkpoint ckpt, Checkpoint::Open(*dir_));
    ASSERT_OK_AND_ASSIGN(model_, LoadQwen2_5_VL(ckpt, torch::kCPU, torch::kFloat32));
  }

  // One sample of seq_len tokens, with one 112x112 image (16 merged tokens) or none.
  Qwen2_5_VLInputs Prompt(bool image, int64_t seq_len = 24) {
    SynthOptions s;
    s.samples = 1;
    s.seq_len = seq_len;
    s.images_per_sample = image ? 1 : 0;
    s.image_height = s.image_width = 112;
    s.seed = image ? 11 : 12;
    auto set = SynthesizeCalibSet(model_->config(), s);
    EXPECT_TRUE(set.ok()) << set.status();
    auto in = set->Sample(0);
    EXPECT_TRUE(in.ok()) << in.status();
    in->attention_mask = torch::Tensor();
    return *in;
  }

  // The reference: no cache, a full forward over prompt + generated tokens per
  // step, argmax of the last position. Fills each step's logits [vocab].
  std::vector<int64_t> NoCacheGreedy(const Qwen2_5_VLInputs& prompt, int64_t n, std::vector<torch::Tensor>* logits) {
    torch::InferenceMode guard;
    std::vector<int64_t> tokens;
    Qwen2_5_VLInputs in = prompt;
    for (int64_t i = 0; i < n; ++i) {
      auto out = model_->Forward(in);
      EXPECT_TRUE(out.ok()) << out.status();
      if (!out.ok()) break;
      torch::Tensor last = (*out)[0][-1];
      logits->push_back(last);
      tokens.push_back(last.argmax().item<int64_t>());
      in.input_ids = torch::cat({in.input_ids, torch::full({1, 1}, tokens.back(), torch::kInt64)}, 1);
    }
    return tokens;
  }

  void ExpectMatchesNoCache(const Qwen2_5_VLInputs& prompt) {
    GenerateOptions o;
    o.max_new_tokens = kNewTokens;
    o.keep_logits = true;
    ASSERT_OK_AND_ASSIGN(GenerateResult r, GreedyGenerate(model_, prompt, o));
    std::vector<torch::Tensor> ref_logits;
    std::vector<int64_t> ref = NoCacheGreedy(prompt, kNewTokens, &ref_logits);
    EXPECT_EQ(r.tokens, ref);
    EXPECT_TRUE(r.finite);
    EXPECT_EQ(r.decode_steps, kNewTokens - 1);
    EXPECT_GT(r.prefill_seconds, 0);
    EXPECT_GT(r.decode_seconds, 0);
    ASSERT_EQ(r.logits.size(), ref_logits.size());
    for (size_t i = 0; i < ref_logits.size(); ++i) {
      const double diff = (r.logits[i] - ref_logits[i]).abs().max().item<double>();
      EXPECT_LE(diff, kLogitsTol) << "step " << i;
    }
  }

  static std::filesystem::path* dir_;
  Qwen2_5_VLModel model_{nullptr};
};
std::filesystem::path* GenerateTest::dir_ = nullptr;

TEST_F(GenerateTest, TextPromptMatchesFullForwardWithoutCache) { ExpectMatchesNoCache(Prompt(/*image=*/false)); }

TEST_F(GenerateTest, ImagePromptMatchesFullForwardWithoutCache) {
  Qwen2_5_VLInputs prompt = Prompt(/*image=*/true);
  ASSERT_TRUE(prompt.pixel_values.defined());
  ExpectMatchesNoCache(prompt);
}

TEST_F(GenerateTest, LeftAndRightPaddingAreStripped) {
  const Qwen2_5_VLInputs prompt = Prompt(/*image=*/true);
  GenerateOptions o;
  o.max_new_tokens = 4;
  ASSERT_OK_AND_ASSIGN(GenerateResult plain, GreedyGenerate(model_, prompt, o));
  const int64_t s = prompt.input_ids.size(1);
  auto zeros = torch::zeros({1, 3}, torch::kInt64);
  for (bool left : {true, false}) {
    Qwen2_5_VLInputs padded = prompt;
    padded.input_ids = left ? torch::cat({zeros, prompt.input_ids}, 1) : torch::cat({prompt.input_ids, zeros}, 1);
    auto ones = torch::ones({1, s}, torch::kInt64);
    padded.attention_mask = left ? torch::cat({zeros, ones}, 1) : torch::cat({ones, zeros}, 1);
    ASSERT_OK_AND_ASSIGN(GenerateResult r, GreedyGenerate(model_, padded, o));
    EXPECT_EQ(r.tokens, plain.tokens) << (left ? "left" : "right");
  }
}

TEST_F(GenerateTest, StopTokenEndsGenerationAfterItIsEmitted) {
  const Qwen2_5_VLInputs prompt = Prompt(/*image=*/false);
  GenerateOptions o;
  o.max_new_tokens = kNewTokens;
  ASSERT_OK_AND_ASSIGN(GenerateResult all, GreedyGenerate(model_, prompt, o));
  ASSERT_EQ(all.tokens.size(), static_cast<size_t>(kNewTokens));
  const int64_t stop = all.tokens[2];
  const size_t first = std::find(all.tokens.begin(), all.tokens.end(), stop) - all.tokens.begin();
  int64_t unused = 0;  // a second stop id that never comes
  while (std::find(all.tokens.begin(), all.tokens.end(), unused) != all.tokens.end()) ++unused;
  o.stop_token_ids = {unused, stop};
  ASSERT_OK_AND_ASSIGN(GenerateResult r, GreedyGenerate(model_, prompt, o));
  EXPECT_EQ(r.tokens, std::vector<int64_t>(all.tokens.begin(), all.tokens.begin() + first + 1));
  EXPECT_EQ(r.decode_steps, static_cast<int64_t>(first));
}

// Counts a Linear's calls and, from call `nan_from` on, returns NaN: the hook
// path is what runs FP8 schemes, so generation must go through it.
class CountingHook : public LinearHook {
 public:
  explicit CountingHook(int nan_from = -1) : nan_from_(nan_from) {}
  torch::Tensor Forward(LinearImpl& layer, const torch::Tensor& x) override {
    torch::Tensor y = layer.Dense(x);
    if (nan_from_ >= 0 && calls_ >= nan_from_) y = y.fill_(std::numeric_limits<float>::quiet_NaN());
    ++calls_;
    return y;
  }
  int calls() const { return calls_; }

 private:
  int nan_from_;
  int calls_ = 0;
};

TEST_F(GenerateTest, EveryStepGoesThroughLinearHooks) {
  auto q = std::make_shared<CountingHook>();
  model_->layers()[1]->self_attn->q_proj->set_hook(q);
  GenerateOptions o;
  o.max_new_tokens = 5;
  ASSERT_OK_AND_ASSIGN(GenerateResult r, GreedyGenerate(model_, Prompt(/*image=*/true), o));
  EXPECT_EQ(r.tokens.size(), 5u);
  EXPECT_EQ(q->calls(), 1 + r.decode_steps);
}

TEST_F(GenerateTest, NonFiniteLogitsStopDecodingWithoutEmitting) {
  model_->lm_head->set_hook(std::make_shared<CountingHook>(/*nan_from=*/3));  // prefill + 2 steps are finite
  GenerateOptions o;
  o.max_new_tokens = kNewTokens;
  o.keep_logits = true;
  ASSERT_OK_AND_ASSIGN(GenerateResult r, GreedyGenerate(model_, Prompt(/*image=*/false), o));
  EXPECT_FALSE(r.finite);
  EXPECT_EQ(r.tokens.size(), 3u);
  EXPECT_EQ(r.decode_steps, 3);
  ASSERT_EQ(r.logits.size(), 4u);
  EXPECT_TRUE(r.logits.back().isnan().all().item<bool>());
}

TEST_F(GenerateTest, BadPromptsAndOptionsAreInvalidArgument) {
  const Qwen2_5_VLInputs good = Prompt(/*image=*/false);
  GenerateOptions o;
  auto expect = [&](const Qwen2_5_VLInputs& in, const GenerateOptions& opts, absl::string_view needle) {
    absl::StatusOr<GenerateResult> r = absl::UnknownError("not run");
    EXPECT_NO_THROW(r = GreedyGenerate(model_, in, opts));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(std::string(needle)));
  };
  Qwen2_5_VLInputs in = good;
  in.input_ids = torch::cat({good.input_ids, good.input_ids});
  expect(in, o, "batch 1");
  in = good;
  in.input_ids = torch::Tensor();
  expect(in, o, "input_ids is missing");
  in = good;
  in.attention_mask = torch::ones_like(good.input_ids);
  in.attention_mask.index_put_({0, 5}, 0);
  expect(in, o, "padding between tokens");
  in.attention_mask = torch::zeros_like(good.input_ids);
  expect(in, o, "no token");
  GenerateOptions bad = o;
  bad.max_new_tokens = 0;
  expect(good, bad, "max_new_tokens");
  bad = o;
  bad.stop_token_ids = {512};
  expect(good, bad, "stop token id 512");
}

TEST_F(GenerateTest, FullForwardIsUnchangedAfterGeneration) {
  const Qwen2_5_VLInputs prompt = Prompt(/*image=*/true);
  torch::InferenceMode guard;
  ASSERT_OK_AND_ASSIGN(torch::Tensor before, model_->Forward(prompt));
  ASSERT_OK(GreedyGenerate(model_, prompt, GenerateOptions{}).status());
  ASSERT_OK_AND_ASSIGN(torch::Tensor after, model_->Forward(prompt));
  EXPECT_TRUE(torch::equal(before, after));
}

TEST_F(GenerateTest, CacheHoldingTokensRefusesAPromptChunk) {
  const Qwen2_5_VLInputs prompt = Prompt(/*image=*/false);
  torch::InferenceMode guard;
  ASSERT_OK_AND_ASSIGN(DecoderInputs d, model_->Prepare(prompt));
  LayerKvCache cache(64);
  DecoderLayer layer = model_->layers()[0];
  layer->forward(d.hidden, d, &cache);
  EXPECT_EQ(cache.length(), prompt.input_ids.size(1));
  EXPECT_THROW(layer->forward(d.hidden, d, &cache), c10::Error);
}

}  // namespace
}  // namespace autoquant

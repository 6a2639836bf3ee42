#include "core/quant/sensitivity.h"

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "core/io/checkpoint.h"
#include "core/model/qwen2_5_vl/presets.h"
#include "core/model/qwen2_5_vl/weights.h"
#include "gmock/gmock.h"
#include "tests/alloc_fault.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;

// A tiny random model, its groups and one calibration batch with an image.
class SensitivityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir();
    ASSERT_OK(InitRandomCheckpoint({.preset = "tiny", .out = dir_ / "base", .seed = 3, .dtype = torch::kFloat32}));
    ASSERT_OK_AND_ASSIGN(Checkpoint ckpt, Checkpoint::Open(dir_ / "base"));
    ASSERT_OK_AND_ASSIGN(model_, LoadQwen2_5_VL(ckpt, torch::kCPU, torch::kFloat32));
    ASSERT_OK_AND_ASSIGN(
        calib_,
        SynthesizeCalibSet(
            model_->config(),
            {.samples = 1, .seq_len = 32, .images_per_sample = 1, .image_height = 56, .image_width = 56, .seed = 1}));
    std::vector<LinearDesc> linears;
    for (const auto& [name, lin] : model_->Linears()) {
      linears.push_back({name, lin->weight.numel(), lin->out_features(), lin->in_features()});
    }
    ASSERT_OK_AND_ASSIGN(groups_, BuildGroups(linears, {}));
  }
  std::filesystem::path dir_;
  Qwen2_5_VLModel model_{nullptr};
  CalibSet calib_;
  std::vector<QuantGroup> groups_;
  const std::vector<Format> formats_ = {Format::kFp8, Format::kNone};
};

TEST(NextTokenLossTest, IsTheMeanCrossEntropyOfTheNextToken) {
  torch::manual_seed(0);
  torch::Tensor logits = torch::randn({1, 4, 7});
  torch::Tensor ids = torch::tensor({{1, 2, 3, 4}}, torch::kLong);
  ASSERT_OK_AND_ASSIGN(torch::Tensor loss, NextTokenLoss(logits, ids, torch::Tensor()));
  torch::Tensor logp = torch::log_softmax(logits[0], -1);
  double want = -(logp[0][2].item<double>() + logp[1][3].item<double>() + logp[2][4].item<double>()) / 3;
  EXPECT_NEAR(loss.item<double>(), want, 1e-6);
}

// A batch whose logits and input_ids disagree in length fails inside
// cross_entropy; that must come back as a Status.
TEST(NextTokenLossTest, InconsistentShapesAreAStatusNotAnException) {
  torch::Tensor logits = torch::randn({1, 5, 7});
  torch::Tensor ids = torch::tensor({{1, 2, 3, 4}}, torch::kLong);
  absl::StatusOr<torch::Tensor> loss = absl::UnknownError("not run");
  EXPECT_NO_THROW(loss = NextTokenLoss(logits, ids, torch::Tensor()));
  EXPECT_EQ(loss.status().code(), absl::StatusCode::kInternal) << loss.status();
  EXPECT_THAT(loss.status().message(), HasSubstr("next-token loss"));
}

TEST_F(SensitivityTest, AmaxThatDoesNotCoverEveryLinearIsRejected) {
  ASSERT_OK_AND_ASSIGN(CalibrationResult amax, Calibrate(model_, calib_, {.steps = 1}));
  amax.input_amax.pop_back();
  for (ScoreMethod m : {ScoreMethod::kGradient, ScoreMethod::kKlDiv}) {
    auto scores = ScoreGroups(model_, calib_, m, groups_, formats_, amax, {.steps = 1});
    EXPECT_EQ(scores.status().code(), absl::StatusCode::kInvalidArgument) << scores.status();
    EXPECT_THAT(scores.status().message(), HasSubstr("amax values for"));
  }
}

TEST_F(SensitivityTest, GroupNamingAMissingLinearIsRejected) {
  ASSERT_OK_AND_ASSIGN(CalibrationResult amax, Calibrate(model_, calib_, {.steps = 1}));
  groups_.back().linear_index.push_back(amax.input_amax.size());
  auto scores = ScoreGroups(model_, calib_, ScoreMethod::kGradient, groups_, formats_, amax, {.steps = 1});
  EXPECT_EQ(scores.status().code(), absl::StatusCode::kInvalidArgument) << scores.status();
  EXPECT_THAT(scores.status().message(), HasSubstr("names Linear"));
}

// Keeping the last layers' autograd graph instead of recomputing them is a
// matter of memory and time only: none, one, all and more than all of the
// tiny model's 3 layers give the per-layer recompute's scores, vision groups
// (their gradient crosses every kept layer) included.
TEST_F(SensitivityTest, KeepingLayerGraphsGivesTheRecomputedScores) {
  ASSERT_OK_AND_ASSIGN(CalibrationResult amax, Calibrate(model_, calib_, {.steps = 1}));
  const int layers = static_cast<int>(model_->layers().size());
  ASSERT_GE(layers, 2);
  std::vector<LinearDesc> linears;
  for (const auto& [name, lin] : model_->Linears()) {
    linears.push_back({name, lin->weight.numel(), lin->out_features(), lin->in_features()});
  }
  ASSERT_OK_AND_ASSIGN(groups_, QuantizableGroups(linears, /*include_vision=*/true, false));
  bool vision = false;
  for (const auto& g : groups_) vision = vision || absl::StrContains(g.key, "visual");
  ASSERT_TRUE(vision) << "the groups should include the vision tower's";
  ASSERT_OK_AND_ASSIGN(auto recomputed, ScoreGroups(model_, calib_, ScoreMethod::kGradient, groups_, formats_, amax,
                                                    {.steps = 1, .graph_layers = 0}));
  double total = 0;
  for (const auto& g : recomputed) total += g[0];
  ASSERT_GT(total, 0);
  for (int keep : {1, layers, layers + 4}) {
    ASSERT_OK_AND_ASSIGN(auto kept, ScoreGroups(model_, calib_, ScoreMethod::kGradient, groups_, formats_, amax,
                                                {.steps = 1, .graph_layers = keep}));
    ASSERT_EQ(kept.size(), recomputed.size());
    for (size_t g = 0; g < kept.size(); ++g) {
      EXPECT_NEAR(kept[g][0], recomputed[g][0], 1e-9 * std::abs(recomputed[g][0]) + 1e-30)
          << "keep " << keep << " group " << groups_[g].key;
    }
  }
}

// A batch whose samples leave no token to predict has no gradient: it adds
// nothing to any score (and is no error), so two batches score as the other alone.
TEST_F(SensitivityTest, ABatchWithNothingToPredictAddsNothing) {
  torch::Tensor ids = torch::randint(3, 400, {2, 16}, torch::kInt64);  // below the tiny vocabulary's special tokens
  torch::Tensor mask = torch::ones({2, 16}, torch::kInt64);
  mask[1].narrow(0, 1, 15).zero_();  // sample 1: one token, so no next token to predict
  ASSERT_OK_AND_ASSIGN(CalibSet both, CalibSet::FromTensors(ids, mask, {}, {}, {}, {}));
  ASSERT_OK_AND_ASSIGN(CalibSet first,
                       CalibSet::FromTensors(ids.narrow(0, 0, 1), mask.narrow(0, 0, 1), {}, {}, {}, {}));
  ASSERT_OK_AND_ASSIGN(CalibrationResult amax, Calibrate(model_, first, {.steps = 1}));
  for (int keep : {0, 2}) {
    ASSERT_OK_AND_ASSIGN(auto two, ScoreGroups(model_, both, ScoreMethod::kGradient, groups_, formats_, amax,
                                               {.steps = 2, .batch_size = 1, .graph_layers = keep}));
    ASSERT_OK_AND_ASSIGN(auto one, ScoreGroups(model_, first, ScoreMethod::kGradient, groups_, formats_, amax,
                                               {.steps = 1, .batch_size = 1, .graph_layers = keep}));
    for (size_t g = 0; g < one.size(); ++g) EXPECT_EQ(two[g][0], one[g][0]) << "keep " << keep << " " << groups_[g].key;
  }
}

// Out of memory at any allocation of a pass (the score hooks' set-up before
// the first batch included) is ResourceExhausted, never an exception. The
// first 200 allocations cover the set-up; every 60th after that samples the
// forward and backward passes.
TEST_F(SensitivityTest, OutOfMemoryAnywhereInAPassIsResourceExhausted) {
  ASSERT_OK_AND_ASSIGN(CalibrationResult amax, Calibrate(model_, calib_, {.steps = 1}));
  auto ks = [](int64_t total) {
    std::vector<int64_t> out;
    for (int64_t k = 1; k <= total; k += k < 200 ? 1 : 60) out.push_back(k);
    return out;
  };
  EXPECT_GT(testing::ExpectOomIsAStatusAt([&] { return Calibrate(model_, calib_, {.steps = 1}).status(); }, ks), 0);
  for (ScoreMethod m : {ScoreMethod::kGradient, ScoreMethod::kKlDiv}) {
    SCOPED_TRACE(std::string(ScoreMethodName(m)));
    int fired = testing::ExpectOomIsAStatusAt(
        [&] { return ScoreGroups(model_, calib_, m, groups_, formats_, amax, {.steps = 1}).status(); }, ks);
    EXPECT_GT(fired, 0);
  }
}

}  // namespace
}  // namespace autoquant

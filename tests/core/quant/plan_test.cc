#include "core/quant/plan.h"

#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Four groups (layers 0..3, one Linear each, 100 weights) with FP8 scores
// 4, 1, 3, 2: ranking (least sensitive first) is 1, 3, 2, 0.
Baseline FourGroups() {
  Baseline b;
  b.formats = {Fp8Format(), NoneFormat()};
  const double fp8[] = {4, 1, 3, 2};
  for (int i = 0; i < 4; ++i) {
    std::string name = "model.language_model.layers." + std::to_string(i) + ".mlp.down_proj";
    b.linears.push_back({name, 100, 10, 10});
    QuantGroup g;
    g.key = RelativeModuleName(name) + ".quant_recipe";
    g.modules = {name};
    g.linear_index = {size_t(i)};
    g.weight_numel = 100;
    b.groups.push_back(g);
    b.scores.push_back({fp8[i], 0});
    b.costs.push_back({50, 100});
  }
  b.total_weight_numel = 400;
  b.ComputeRanking();
  return b;
}

std::vector<std::string> Selected(const Plan& p, const Baseline& b) { return CoverageOf(p, b).selected_layers; }

TEST(MakePlanTest, CoverageQuantizesTheLeastSensitiveGroups) {
  Baseline b = FourGroups();
  EXPECT_THAT(b.ranking, ElementsAre(1, 3, 2, 0));
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, {.coverage = 0.5}));
  EXPECT_THAT(Selected(p, b), ElementsAre("language_model.layers.1.mlp.down_proj.quant_recipe",
                                          "language_model.layers.3.mlp.down_proj.quant_recipe"));
  EXPECT_DOUBLE_EQ(p.effective_bits, 12.0);
  // floor(0.1 * 4 + 0.5) = 0 groups; floor(0.125 * 4 + 0.5) = 1 group (halves round up).
  EXPECT_EQ(MakePlan(b, {.coverage = 0.1})->num_quantized(b), 0u);
  EXPECT_EQ(MakePlan(b, {.coverage = 0.125})->num_quantized(b), 1u);
  EXPECT_EQ(MakePlan(b, {.coverage = 1.0})->num_quantized(b), 4u);
}

TEST(MakePlanTest, DisabledGroupsLeaveTheCoverageBase) {
  Baseline b = FourGroups();
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, {.coverage = 0.5, .disabled_layers = {"*layers.1.*"}}));
  // Enabled: 3 groups -> floor(1.5 + 0.5) = 2: groups 3 and 2.
  EXPECT_THAT(Selected(p, b), ElementsAre("language_model.layers.3.mlp.down_proj.quant_recipe",
                                          "language_model.layers.2.mlp.down_proj.quant_recipe"));
  EXPECT_TRUE(p.disabled[1]);
}

TEST(MakePlanTest, EffectiveBitsPicksTheBestGroupsExactly) {
  Baseline b = FourGroups();
  // 14 bits = budget 350 = one group in FP8: the cheapest score is group 1.
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, {.effective_bits = 14}));
  EXPECT_THAT(Selected(p, b), ElementsAre("language_model.layers.1.mlp.down_proj.quant_recipe"));
  EXPECT_DOUBLE_EQ(p.effective_bits, 14.0);
  EXPECT_DOUBLE_EQ(p.total_score, 1.0);
}

TEST(MakePlanTest, InfeasibleBitsStateTheMinimum) {
  Baseline b = FourGroups();
  auto p = MakePlan(b, {.coverage = 0.5, .effective_bits = 10});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(p.status().message(), HasSubstr("minimum achievable is 12.0000 bits"));
}

TEST(MakePlanTest, ManifestMustPartitionTheKeys) {
  Baseline b = FourGroups();
  CoverageManifest m{{"language_model.layers.0.mlp.down_proj.quant_recipe", "bogus.quant_recipe"},
                     {"language_model.layers.1.mlp.down_proj.quant_recipe",
                      "language_model.layers.1.mlp.down_proj.quant_recipe"}};
  auto p = MakePlan(b, {.coverage_manifest = m});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("missing 2 [language_model.layers.2.mlp.down_proj.quant_recipe, "
                                              "language_model.layers.3.mlp.down_proj.quant_recipe]"));
  EXPECT_THAT(p.status().message(), HasSubstr("extra 1 [bogus.quant_recipe]"));
  EXPECT_THAT(p.status().message(), HasSubstr("duplicated 1 [language_model.layers.1.mlp.down_proj.quant_recipe]"));
}

TEST(MakePlanTest, ManifestSelectsItsGroupsMinusDisabled) {
  Baseline b = FourGroups();
  CoverageManifest m{{"language_model.layers.0.mlp.down_proj.quant_recipe",
                      "language_model.layers.2.mlp.down_proj.quant_recipe"},
                     {"language_model.layers.1.mlp.down_proj.quant_recipe",
                      "language_model.layers.3.mlp.down_proj.quant_recipe"}};
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, {.coverage_manifest = m, .disabled_layers = {"*layers.0.*"}}));
  EXPECT_THAT(Selected(p, b), ElementsAre("language_model.layers.2.mlp.down_proj.quant_recipe"));
}

TEST(ParseCoverageTest, AcceptsTheUsualSpellings) {
  EXPECT_DOUBLE_EQ(*ParseCoverage("top10"), 0.1);
  EXPECT_DOUBLE_EQ(*ParseCoverage("50%"), 0.5);
  EXPECT_DOUBLE_EQ(*ParseCoverage("0.3"), 0.3);
  EXPECT_DOUBLE_EQ(*ParseCoverage("100"), 1.0);
  EXPECT_FALSE(ParseCoverage("top").ok());
  EXPECT_FALSE(ParseCoverage("150%").ok());
}

}  // namespace
}  // namespace autoquant

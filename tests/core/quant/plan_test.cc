#include "core/quant/plan.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/model/qwen2_5_vl/architecture.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// Four groups (layers 0..3, one Linear each, 100 weights) with FP8 scores
// 4, 1, 3, 2: ranking (least sensitive first) is 1, 3, 2, 0.
Baseline FourGroups() {
  Baseline b;
  b.formats = {Format::kFp8, Format::kNone};
  const double fp8[] = {4, 1, 3, 2};
  for (int i = 0; i < 4; ++i) {
    std::string name = "model.language_model.layers." + std::to_string(i) + ".mlp.down_proj";
    b.linears.push_back({name, 100, 10, 10});
    QuantGroup g;
    g.key = qwen2_5_vl::InnerName(name) + ".quant_recipe";
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

// FourGroups with NVFP4 before FP8: NVFP4 scores 40, 10, 30, 20 (more damage than FP8's), cost 28.125.
Baseline FourGroupsTwoFormats() {
  Baseline b = FourGroups();
  b.formats = {Format::kNvfp4, Format::kFp8, Format::kNone};
  for (size_t g = 0; g < 4; ++g) {
    b.scores[g] = {b.scores[g][0] * 10, b.scores[g][0], 0};
    b.costs[g] = {100 * 4.5 / 16, 50, 100};
  }
  b.ComputeRanking();
  return b;
}

// Against every assignment of the three formats to the four groups: the plan is the cheapest-score one
// within the budget (ties as SolveExact breaks them), and PlanFormatCounts says what it chose.
TEST(MakePlanTest, EffectiveBitsPicksAFormatPerGroupExactlyAmongSeveral) {
  const Baseline b = FourGroupsTwoFormats();
  for (double bits : {4.5, 5.0, 6.0, 7.0, 8.0, 10.0, 15.9}) {
    SchemeSelection s;
    s.effective_bits = bits;
    ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, s));
    double best = 1e300;
    for (int code = 0; code < 81; ++code) {
      double cost = 0, score = 0;
      for (int g = 0, c = code; g < 4; ++g, c /= 3) {
        cost += b.costs[g][c % 3];
        score += b.scores[g][c % 3];
      }
      if (cost <= 400 * bits / 16 + 1e-9) best = std::min(best, score);
    }
    EXPECT_DOUBLE_EQ(p.total_score, best) << bits;
    EXPECT_LE(p.effective_bits, bits + 1e-9);
  }
  SchemeSelection s;
  s.effective_bits = 6.0;
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, s));
  size_t nvfp4 = 0, fp8 = 0;
  for (size_t g = 0; g < 4; ++g) (p.format[g] == 0 ? nvfp4 : fp8) += p.format[g] < 2;
  EXPECT_EQ(PlanFormatCounts(p, b), absl::StrCat(nvfp4, " NVFP4, ", fp8, " FP8"));
  EXPECT_GT(nvfp4, 0u);
  SchemeSelection too_low;
  too_low.effective_bits = 4.0;
  EXPECT_EQ(MakePlan(b, too_low).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(MakePlanTest, CoverageQuantizesTheLeastSensitiveGroups) {
  Baseline b = FourGroups();
  EXPECT_THAT(b.ranking, ElementsAre(1, 3, 2, 0));
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, {.coverage = 0.5}));
  EXPECT_THAT(Selected(p, b), ElementsAre("language_model.layers.1.mlp.down_proj.quant_recipe",
                                          "language_model.layers.3.mlp.down_proj.quant_recipe"));
  EXPECT_DOUBLE_EQ(p.effective_bits, 12.0);
  // floor(0.1 * 4 + 0.5) = 0 groups is refused; floor(0.125 * 4 + 0.5) = 1 group (halves round up).
  auto none = MakePlan(b, {.coverage = 0.1});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(none.status().message(), HasSubstr("selects no group"));
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
  auto p = MakePlan(b, {.effective_bits = 7});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(p.status().message(), HasSubstr("minimum achievable is 8.0000 bits"));
  // One group disabled stays at 16 bits: (3 x 50 + 100) / 400 x 16 = 10.
  p = MakePlan(b, {.disabled_layers = {"*layers.0.*"}, .effective_bits = 9.5});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(p.status().message(), HasSubstr("minimum achievable is 10.0000 bits"));
}

TEST(MakePlanTest, ExactlyOneSelectionIsRequired) {
  Baseline b = FourGroups();
  CoverageManifest m{
      {"language_model.layers.0.mlp.down_proj.quant_recipe"},
      {"language_model.layers.1.mlp.down_proj.quant_recipe", "language_model.layers.2.mlp.down_proj.quant_recipe",
       "language_model.layers.3.mlp.down_proj.quant_recipe"}};
  for (const SchemeSelection& s : {SchemeSelection{}, SchemeSelection{.disabled_layers = {"*layers.0.*"}},
                                   SchemeSelection{.coverage = 0.5, .effective_bits = 12},
                                   SchemeSelection{.coverage = 0.5, .coverage_manifest = m},
                                   SchemeSelection{.coverage_manifest = m, .effective_bits = 12}}) {
    auto p = MakePlan(b, s);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(p.status().message(), HasSubstr("exactly one of coverage"));
  }
  EXPECT_THAT(ValidateSelection({}).message(), HasSubstr("1 quantizes every group"));
  EXPECT_THAT(ValidateSelection({}).message(), Not(HasSubstr("--")));  // fields as the API names them, not flags
  EXPECT_THAT(ValidateSelection({}).message(), HasSubstr("coverage_manifest"));
}

TEST(MakePlanTest, RangesAreCheckedWhereverTheSelectionComesFrom) {
  for (double c : {0.0, -0.5, 1.5, std::nan("")}) {
    EXPECT_EQ(ValidateSelection({.coverage = c}).code(), absl::StatusCode::kInvalidArgument) << c;
  }
  for (double eb : {0.0, 16.0, 17.0, std::nan("")}) {
    EXPECT_EQ(ValidateSelection({.effective_bits = eb}).code(), absl::StatusCode::kInvalidArgument) << eb;
  }
  EXPECT_TRUE(ValidateSelection({.coverage = 1.0}).ok());
  EXPECT_TRUE(ValidateSelection({.effective_bits = 15.9}).ok());
}

TEST(MakePlanTest, ManifestDisabledLayersAreMergedWithTheRequests) {
  Baseline b = FourGroups();
  CoverageManifest m{
      {"language_model.layers.0.mlp.down_proj.quant_recipe", "language_model.layers.1.mlp.down_proj.quant_recipe",
       "language_model.layers.2.mlp.down_proj.quant_recipe"},
      {"language_model.layers.3.mlp.down_proj.quant_recipe"},
      /*disabled_layers=*/{"*layers.1.*"}};
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, {.coverage_manifest = m, .disabled_layers = {"*layers.0.*"}}));
  EXPECT_THAT(Selected(p, b), ElementsAre("language_model.layers.2.mlp.down_proj.quant_recipe"));
  EXPECT_THAT(p.disabled_layers, ElementsAre("*layers.0.*", "*layers.1.*"));
  EXPECT_THAT(p.disabled_by[1], ElementsAre("*layers.1.*"));
  // The manifest's patterns follow the same rule: one matching nothing is an error, not ignored.
  m.disabled_layers = {"*no_such_layer*"};
  auto bad = MakePlan(b, {.coverage_manifest = m});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("'*no_such_layer*'"));
}

TEST(ParseCoverageManifestTest, ReadsDisabledLayersWhenPresent) {
  auto j = nlohmann::json::parse(R"({"selected_layers": ["a"], "dropped_layers": ["b"],
                                     "disabled_layers": ["*visual*"], "note": 1})");
  ASSERT_OK_AND_ASSIGN(CoverageManifest m, ParseCoverageManifest(j, "m.json"));
  EXPECT_THAT(m.disabled_layers, ElementsAre("*visual*"));
  j["disabled_layers"] = "*visual*";  // not a list: refused, not ignored
  EXPECT_EQ(ParseCoverageManifest(j, "m.json").status().code(), absl::StatusCode::kInvalidArgument);
  j.erase("disabled_layers");
  ASSERT_OK_AND_ASSIGN(CoverageManifest m2, ParseCoverageManifest(j, "m.json"));
  EXPECT_TRUE(m2.disabled_layers.empty());
}

TEST(MakePlanTest, ManifestMustPartitionTheKeys) {
  Baseline b = FourGroups();
  CoverageManifest m{
      {"language_model.layers.0.mlp.down_proj.quant_recipe", "bogus.quant_recipe"},
      {"language_model.layers.1.mlp.down_proj.quant_recipe", "language_model.layers.1.mlp.down_proj.quant_recipe"}};
  auto p = MakePlan(b, {.coverage_manifest = m});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("missing 2 [language_model.layers.2.mlp.down_proj.quant_recipe, "
                                              "language_model.layers.3.mlp.down_proj.quant_recipe]"));
  EXPECT_THAT(p.status().message(), HasSubstr("extra 1 [bogus.quant_recipe]"));
  EXPECT_THAT(p.status().message(), HasSubstr("duplicated 1 [language_model.layers.1.mlp.down_proj.quant_recipe]"));
}

TEST(MakePlanTest, ManifestSelectsItsGroupsMinusDisabled) {
  Baseline b = FourGroups();
  CoverageManifest m{
      {"language_model.layers.0.mlp.down_proj.quant_recipe", "language_model.layers.2.mlp.down_proj.quant_recipe"},
      {"language_model.layers.1.mlp.down_proj.quant_recipe", "language_model.layers.3.mlp.down_proj.quant_recipe"}};
  ASSERT_OK_AND_ASSIGN(Plan p, MakePlan(b, {.coverage_manifest = m, .disabled_layers = {"*layers.0.*"}}));
  EXPECT_THAT(Selected(p, b), ElementsAre("language_model.layers.2.mlp.down_proj.quant_recipe"));
}

TEST(ParseCoverageTest, AcceptsAFractionTopXXOrPercent) {
  EXPECT_DOUBLE_EQ(*ParseCoverage("top10"), 0.1);
  EXPECT_DOUBLE_EQ(*ParseCoverage("TOP100"), 1.0);
  EXPECT_DOUBLE_EQ(*ParseCoverage("50%"), 0.5);
  EXPECT_DOUBLE_EQ(*ParseCoverage("1.5%"), 0.015);
  EXPECT_DOUBLE_EQ(*ParseCoverage("0.3"), 0.3);
  EXPECT_DOUBLE_EQ(*ParseCoverage("1"), 1.0);
}

TEST(ParseCoverageTest, RefusesAmbiguousOrMalformedValues) {
  // "1.5" and "10" used to mean 1.5 % and 10 %; "" and "nan" used to pass through.
  for (const char* bad : {"1.5", "10", "100", "", " ", "nan", "inf", "0", "0%", "top0", "top", "150%", "top101", "-0.5",
                          "0x1p-2", "1e-1", "top10%", "ten"}) {
    auto c = ParseCoverage(bad);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << "'" << bad << "'";
    EXPECT_THAT(c.status().message(), HasSubstr("a fraction in (0, 1]")) << bad;
  }
  EXPECT_THAT(ParseCoverage("1.5").status().message(), HasSubstr("bare number above 1"));
}

}  // namespace
}  // namespace autoquant

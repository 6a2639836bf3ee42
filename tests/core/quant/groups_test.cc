#include "core/quant/groups.h"

#include <chrono>

#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<LinearDesc> TwoLayerModel() {
  std::vector<LinearDesc> out;
  auto add = [&](const std::string& n, int64_t o, int64_t i) { out.push_back({n, o * i, o, i}); };
  add("model.visual.blocks.0.attn.qkv", 96, 32);
  add("model.visual.blocks.0.mlp.gate_proj", 48, 32);
  add("model.visual.blocks.0.mlp.up_proj", 48, 32);
  for (int l = 0; l < 2; ++l) {
    std::string p = "model.language_model.layers." + std::to_string(l);
    add(p + ".self_attn.q_proj", 64, 64);
    add(p + ".self_attn.k_proj", 32, 64);
    add(p + ".self_attn.v_proj", 32, 64);
    add(p + ".self_attn.o_proj", 64, 64);
    add(p + ".mlp.gate_proj", 96, 64);
    add(p + ".mlp.up_proj", 96, 64);
    add(p + ".mlp.down_proj", 64, 96);
  }
  add("lm_head", 300, 64);
  return out;
}

std::vector<std::string> Keys(const std::vector<QuantGroup>& gs) {
  std::vector<std::string> k;
  for (const auto& g : gs) k.push_back(g.key);
  return k;
}

TEST(BuildGroupsTest, GroupsLikeModelOptWithVisionExcluded) {
  ASSERT_OK_AND_ASSIGN(auto gs, BuildGroups(TwoLayerModel(), {}));
  EXPECT_THAT(Keys(gs), ElementsAre("language_model.layers.0.self_attn.q_proj.quant_recipe",
                                    "language_model.layers.0.self_attn.o_proj.quant_recipe",
                                    "language_model.layers.0.mlp.gate_proj.quant_recipe",
                                    "language_model.layers.0.mlp.down_proj.quant_recipe",
                                    "language_model.layers.1.self_attn.q_proj.quant_recipe",
                                    "language_model.layers.1.self_attn.o_proj.quant_recipe",
                                    "language_model.layers.1.mlp.gate_proj.quant_recipe",
                                    "language_model.layers.1.mlp.down_proj.quant_recipe", "lm_head.quant_recipe"));
  EXPECT_THAT(gs[0].modules, ElementsAre("model.language_model.layers.0.self_attn.q_proj",
                                         "model.language_model.layers.0.self_attn.k_proj",
                                         "model.language_model.layers.0.self_attn.v_proj"));
  EXPECT_EQ(gs[0].weight_numel, 64 * 64 + 2 * 32 * 64);
  EXPECT_EQ(gs[2].modules.size(), 2u);
}

TEST(BuildGroupsTest, VisionCanBeIncluded) {
  ASSERT_OK_AND_ASSIGN(auto gs, BuildGroups(TwoLayerModel(), {.include_vision = true}));
  EXPECT_EQ(gs[0].key, "visual.blocks.0.attn.qkv.quant_recipe");
  EXPECT_EQ(gs[1].key, "visual.blocks.0.mlp.gate_proj.quant_recipe");
  EXPECT_EQ(gs[1].modules.size(), 2u);
  EXPECT_EQ(gs.size(), 11u);
}

TEST(BuildGroupsTest, AMatchOnAnyMemberDisablesTheWholeGroup) {
  ASSERT_OK_AND_ASSIGN(auto gs, BuildGroups(TwoLayerModel(), {.disabled_layers = {"*layers.1.*.v_proj", "lm_head"}}));
  for (const auto& g : gs) {
    bool want = g.key == "language_model.layers.1.self_attn.q_proj.quant_recipe" || g.key == "lm_head.quant_recipe";
    EXPECT_EQ(g.disabled, want) << g.key;
  }
}

TEST(BuildGroupsTest, FullNamesMatchToo) {
  ASSERT_OK_AND_ASSIGN(
      auto gs, BuildGroups(TwoLayerModel(), {.disabled_layers = {"model.language_model.layers.0.mlp.up_proj"}}));
  EXPECT_TRUE(gs[2].disabled);
  EXPECT_FALSE(gs[3].disabled);
}

TEST(BuildGroupsTest, PatternMatchingNothingIsAnError) {
  auto gs = BuildGroups(TwoLayerModel(), {.disabled_layers = {"*layers.0.*", "*mlp.gate.*"}});
  EXPECT_EQ(gs.status().code(), absl::StatusCode::kInvalidArgument);
  // Only the pattern that matched nothing is named.
  EXPECT_THAT(std::string(gs.status().message()),
              ::testing::StartsWith("disabled_layers pattern(s) '*mlp.gate.*' match no Linear module"));
}

TEST(BuildGroupsTest, VisionPatternIsNotATypoEvenWhenVisionIsExcluded) {
  EXPECT_TRUE(BuildGroups(TwoLayerModel(), {.disabled_layers = {"*visual*"}}).ok());
}

TEST(BuildGroupsTest, ThousandsOfPatternsThatAllMatchStayLinear) {
  // A 28-layer language model and 4096 distinct patterns (the request limit) that each match every
  // module: every group's disabled_by holds all of them. Searching the list for each hit, as before,
  // took billions of comparisons (seconds on the RPC thread that validates the request).
  std::vector<LinearDesc> linears;
  for (int l = 0; l < 28; ++l) {
    const std::string p = "model.language_model.layers." + std::to_string(l);
    for (const char* m : {".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj", ".self_attn.o_proj",
                          ".mlp.gate_proj", ".mlp.up_proj", ".mlp.down_proj"}) {
      linears.push_back({p + m, 64, 8, 8});
    }
  }
  std::vector<std::string> patterns;
  for (char a = '!'; a <= '~' && patterns.size() < 4096; ++a) {
    for (char b = '!'; b <= '~' && patterns.size() < 4096; ++b) {
      if (a == ']' || b == ']' || a == '!' || a == '^' || a == '-' || b == '-' || a == '\\' || b == '\\') continue;
      patterns.push_back(std::string("*[.") + a + b + "]*");  // each matches any name with a '.'
    }
  }
  ASSERT_EQ(patterns.size(), 4096u);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_OK_AND_ASSIGN(auto gs, BuildGroups(linears, {.disabled_layers = patterns}));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  ASSERT_EQ(gs.size(), 28u * 4);
  for (const auto& g : gs) {
    EXPECT_TRUE(g.disabled);
    EXPECT_EQ(g.disabled_by.size(), 4096u);
  }
  EXPECT_EQ(gs[0].disabled_by.front(), patterns.front());
}

}  // namespace
}  // namespace autoquant

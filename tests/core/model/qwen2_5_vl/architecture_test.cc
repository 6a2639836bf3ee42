#include "core/model/qwen2_5_vl/architecture.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "core/model/qwen2_5_vl/config.h"
#include "core/model/qwen2_5_vl/model.h"
#include "core/model/qwen2_5_vl/presets.h"

namespace autoquant::qwen2_5_vl {
namespace {

// Keys as the Hub's Qwen2.5-VL-3B-Instruct checkpoint holds them (legacy layout) and as
// transformers 5.x saves the same model (nested).
TEST(Qwen2_5_VLArchitectureTest, TranslatesBothKeyLayouts) {
  const std::pair<const char*, const char*> kKeys[] = {
      {"model.layers.0.self_attn.q_proj.weight", "model.language_model.layers.0.self_attn.q_proj.weight"},
      {"model.embed_tokens.weight", "model.language_model.embed_tokens.weight"},
      {"model.norm.weight", "model.language_model.norm.weight"},
      {"visual.blocks.31.attn.qkv.weight", "model.visual.blocks.31.attn.qkv.weight"},
      {"visual.merger.mlp.0.weight", "model.visual.merger.mlp.0.weight"},
      {"lm_head.weight", "lm_head.weight"},
  };
  for (const auto& [legacy, nested] : kKeys) {
    EXPECT_EQ(ModelName(legacy), nested) << legacy;
    EXPECT_EQ(ModelName(nested), nested) << nested;
    EXPECT_EQ(CheckpointKey(nested, KeyLayout::kLegacy), legacy) << nested;
    EXPECT_EQ(CheckpointKey(nested, KeyLayout::kNested), nested) << nested;
  }
}

TEST(Qwen2_5_VLArchitectureTest, SitesByAnyName) {
  for (const char* name : {"model.language_model.layers.12.mlp.down_proj", "model.layers.12.mlp.down_proj",
                           "language_model.layers.12.mlp.down_proj"}) {
    const Site s = SiteOf(name);
    EXPECT_EQ(s.part, Part::kText) << name;
    EXPECT_EQ(s.layer, 12) << name;
  }
  for (const char* name : {"model.visual.blocks.3.mlp.up_proj", "visual.blocks.3.mlp.up_proj"}) {
    const Site s = SiteOf(name);
    EXPECT_EQ(s.part, Part::kVision) << name;
    EXPECT_EQ(s.layer, 3) << name;
  }
  EXPECT_EQ(SiteOf("model.visual.merger.mlp.0").part, Part::kVision);
  EXPECT_EQ(SiteOf("model.visual.merger.mlp.0").layer, -1);
  EXPECT_EQ(SiteOf("lm_head").part, Part::kHead);
  EXPECT_EQ(SiteOf("model.language_model.embed_tokens").layer, -1);
  // A layer index is a whole component: "layers.1x" is no layer 1.
  EXPECT_EQ(SiteOf("model.language_model.layers.1x.mlp").layer, -1);
  EXPECT_TRUE(IsVision("visual.blocks.0.attn.proj"));
  EXPECT_FALSE(IsVision("model.language_model.layers.0.self_attn.o_proj"));
}

TEST(Qwen2_5_VLArchitectureTest, FusedGemmsAreVllmsPackedModules) {
  EXPECT_EQ(FusedGemmOf("model.language_model.layers.0.self_attn.k_proj"),
            "model.language_model.layers.0.self_attn.qkv_proj");
  EXPECT_EQ(FusedGemmOf("model.language_model.layers.0.mlp.up_proj"), "model.language_model.layers.0.mlp.gate_up_proj");
  EXPECT_EQ(FusedGemmOf("model.language_model.layers.0.mlp.down_proj"), "");
  EXPECT_EQ(FusedGemmOf("model.language_model.layers.0.self_attn.o_proj"), "");
  EXPECT_EQ(FusedGemmOf("lm_head"), "");
}

// Every parameter of the model as built: both layouts round-trip, and the site's layer is the index
// in the name the model itself gives.
TEST(Qwen2_5_VLArchitectureTest, EveryParameterOfTheModelRoundTrips) {
  auto json = PresetConfig("tiny", torch::kBFloat16);
  ASSERT_TRUE(json.ok()) << json.status();
  auto config = ParseQwen2_5_VLConfig(*json, "tiny");
  ASSERT_TRUE(config.ok()) << config.status();
  Qwen2_5_VLModel model(*config);
  std::set<int> text_layers, vision_blocks;
  for (const auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    for (KeyLayout layout : {KeyLayout::kNested, KeyLayout::kLegacy}) {
      EXPECT_EQ(ModelName(CheckpointKey(name, layout)), name);
    }
    const Site s = SiteOf(name);
    if (name.starts_with("model.visual.")) {
      EXPECT_EQ(s.part, Part::kVision) << name;
      if (s.layer >= 0) vision_blocks.insert(s.layer);
    } else if (name.starts_with("lm_head")) {
      EXPECT_EQ(s.part, Part::kHead) << name;
    } else {
      EXPECT_EQ(s.part, Part::kText) << name;
      if (s.layer >= 0) text_layers.insert(s.layer);
    }
  }
  EXPECT_EQ(text_layers.size(), static_cast<size_t>(model->config().text.num_hidden_layers));
  EXPECT_EQ(vision_blocks.size(), static_cast<size_t>(model->config().vision.depth));
}

}  // namespace
}  // namespace autoquant::qwen2_5_vl

#include "core/model/qwen2_5_vl/config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace autoquant {
namespace {
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

// The published Qwen2.5-VL-3B-Instruct config (transformers 4.x flat layout).
const char* k3BFlat = R"({
  "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
  "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655,
  "video_token_id": 151656, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
  "intermediate_size": 11008, "max_position_embeddings": 128000, "max_window_layers": 70,
  "model_type": "qwen2_5_vl", "num_attention_heads": 16, "num_hidden_layers": 36,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.41.2",
  "use_cache": true, "use_sliding_window": false,
  "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
    "num_heads": 16, "in_chans": 3, "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2,
    "spatial_patch_size": 14, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2, "temporal_patch_size": 2},
  "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "vocab_size": 151936})";

// As transformers 5.x saves a small config.
const char* kTinyNested = R"({
  "image_token_id": 151655, "model_type": "qwen2_5_vl",
  "text_config": {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
    "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-05, "vocab_size": 300,
    "rope_parameters": {"mrope_section": [2, 3, 3], "rope_theta": 1000000.0, "rope_type": "default",
      "type": "mrope"}, "dtype": "float32"},
  "tie_word_embeddings": false, "video_token_id": 151656,
  "vision_config": {"depth": 2, "fullatt_block_indexes": [1], "hidden_size": 32, "in_channels": 3,
    "intermediate_size": 48, "num_heads": 2, "out_hidden_size": 64, "patch_size": 14,
    "spatial_merge_size": 2, "temporal_patch_size": 2, "tokens_per_second": 4, "window_size": 112},
  "vision_end_token_id": 151653, "vision_start_token_id": 151652})";

TEST(Qwen2_5_VLConfigTest, Parses3BFlatLayout) {
  auto c = ParseQwen2_5_VLConfig(json::parse(k3BFlat), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->layout, ConfigLayout::kFlatV4);
  EXPECT_EQ(c->text.hidden_size, 2048);
  EXPECT_EQ(c->text.num_key_value_heads, 2);
  EXPECT_EQ(c->text.head_dim(), 128);
  EXPECT_EQ(c->text.vocab_size, 151936);
  EXPECT_DOUBLE_EQ(c->text.rms_norm_eps, 1e-6);
  EXPECT_THAT(c->text.mrope_section, ElementsAre(16, 24, 24));
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->vision.hidden_size, 1280);
  EXPECT_EQ(c->vision.out_hidden_size, 2048);
  EXPECT_EQ(c->vision.tokens_per_second, 2);
  EXPECT_THAT(c->vision.fullatt_block_indexes, ElementsAre(7, 15, 23, 31));
  EXPECT_EQ(c->torch_dtype, "bfloat16");
}

TEST(Qwen2_5_VLConfigTest, ParsesNestedV5Layout) {
  auto c = ParseQwen2_5_VLConfig(json::parse(kTinyNested), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->layout, ConfigLayout::kNestedV5);
  EXPECT_EQ(c->text.hidden_size, 64);
  EXPECT_EQ(c->text.vocab_size, 300);
  EXPECT_THAT(c->text.mrope_section, ElementsAre(2, 3, 3));
  EXPECT_DOUBLE_EQ(c->text.rms_norm_eps, 1e-5);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->vision.depth, 2);
  EXPECT_EQ(c->torch_dtype, "float32");
}

TEST(Qwen2_5_VLConfigTest, TieFlagInsideTextConfigCounts) {
  json j = json::parse(kTinyNested);
  j["text_config"]["tie_word_embeddings"] = true;
  auto c = ParseQwen2_5_VLConfig(j, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->tie_word_embeddings);
}

TEST(Qwen2_5_VLConfigTest, MissingVisionKeysTakeClassDefaults) {
  json j = json::parse(k3BFlat);
  j["vision_config"].erase("tokens_per_second");
  auto c = ParseQwen2_5_VLConfig(j, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vision.tokens_per_second, 4);
}

TEST(Qwen2_5_VLConfigTest, RejectsWrongModelTypeAndBadSizes) {
  json j = json::parse(kTinyNested);
  j["model_type"] = "llama";
  EXPECT_THAT(ParseQwen2_5_VLConfig(j, "c.json").status().message(), HasSubstr("expected 'qwen2_5_vl'"));
  j = json::parse(kTinyNested);
  j["text_config"]["rope_parameters"]["mrope_section"] = {2, 3, 4};
  EXPECT_THAT(ParseQwen2_5_VLConfig(j, "c.json").status().message(), HasSubstr("mrope_section"));
  j = json::parse(kTinyNested);
  j["text_config"]["hidden_size"] = "64";
  EXPECT_THAT(ParseQwen2_5_VLConfig(j, "c.json").status().message(), HasSubstr("'hidden_size' has the wrong type"));
}

// Found by fuzzing (tests/fuzz/qwen2_5_vl_config_fuzz.cc): a float too large for int64 went
// through nlohmann's get<int64_t> (undefined behaviour), and a huge mrope_section entry
// overflowed the sum; both are now InvalidArgument.
TEST(Qwen2_5_VLConfigTest, NonIntegerOrHugeSizesAreErrorsNotUndefinedBehaviour) {
  for (json bad : {json(1e30), json(2.5), json(-1e300)}) {
    json j = json::parse(kTinyNested);
    j["text_config"]["hidden_size"] = bad;
    auto c = ParseQwen2_5_VLConfig(j, "c.json");
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_THAT(c.status().message(), HasSubstr("'hidden_size' has the wrong type")) << bad;
  }
  json j = json::parse(kTinyNested);
  j["vision_config"]["fullatt_block_indexes"] = {1.0e30};
  EXPECT_THAT(ParseQwen2_5_VLConfig(j, "c.json").status().message(), HasSubstr("'fullatt_block_indexes'"));
  j = json::parse(kTinyNested);
  j["text_config"]["rope_parameters"]["mrope_section"] = {int64_t{9223372036854775807}, 3, 3};
  EXPECT_THAT(ParseQwen2_5_VLConfig(j, "c.json").status().message(), HasSubstr("mrope_section"));
  j["text_config"]["rope_parameters"]["mrope_section"] = {-2, 3, 7};  // sums right, still wrong
  EXPECT_THAT(ParseQwen2_5_VLConfig(j, "c.json").status().message(), HasSubstr("mrope_section"));
}

}  // namespace
}  // namespace autoquant

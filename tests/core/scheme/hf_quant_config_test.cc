#include "core/scheme/hf_quant_config.h"

#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::ElementsAre;
using json = nlohmann::json;

const std::vector<LayerQuant> kFp8Plan = {{"model.layers.0.self_attn.q_proj", Format::kFp8},
                                          {"model.layers.0.mlp.down_proj", Format::kNone},
                                          {"lm_head", Format::kNone}};

TEST(MakeQuantConfigsTest, SingleFormatModelOptIsFp8WithExclusions) {
  ASSERT_OK_AND_ASSIGN(QuantConfigs c, MakeQuantConfigs(ExportFormat::kModelOpt, kFp8Plan, "0.1.0"));
  EXPECT_EQ(c.quantization_config["quant_method"], "modelopt");
  EXPECT_EQ(c.quantization_config["quant_algo"], "FP8");
  EXPECT_THAT(c.quantization_config["ignore"].get<std::vector<std::string>>(),
              ElementsAre("model.layers.0.mlp.down_proj", "lm_head"));
  EXPECT_EQ(c.hf_quant_config["quantization"]["quant_algo"], "FP8");
  EXPECT_EQ(c.hf_quant_config["quantization"]["exclude_modules"], c.quantization_config["ignore"]);
  EXPECT_FALSE(c.quantization_config.contains("quantized_layers"));
}

// MIXED_PRECISION (quantized_layers, no exclusions) needs a second quantized format in the registry
// (core/quant/formats.h); its test comes with that format (NVFP4, issue 26).

TEST(MakeQuantConfigsTest, CompressedTensorsIsStaticPerTensorFp8) {
  ASSERT_OK_AND_ASSIGN(QuantConfigs c, MakeQuantConfigs(ExportFormat::kCompressedTensors, kFp8Plan, "0.1.0"));
  EXPECT_TRUE(c.hf_quant_config.is_null());
  EXPECT_EQ(c.quantization_config["quant_method"], "compressed-tensors");
  const json& g = c.quantization_config["config_groups"]["group_0"];
  for (const char* k : {"weights", "input_activations"}) {
    EXPECT_EQ(g[k]["strategy"], "tensor");
    EXPECT_EQ(g[k]["dynamic"], false);
    EXPECT_EQ(g[k]["num_bits"], 8);
  }
}

TEST(MakeQuantConfigsTest, NothingQuantizedIsAnError) {
  auto c = MakeQuantConfigs(ExportFormat::kModelOpt, {{"lm_head", Format::kNone}}, "0.1.0");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace autoquant

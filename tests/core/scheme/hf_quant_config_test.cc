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

const std::vector<LayerQuant> kMixedPlan = {{"model.layers.0.self_attn.q_proj", Format::kFp8},
                                            {"model.layers.0.mlp.down_proj", Format::kNvfp4},
                                            {"model.layers.0.mlp.gate_proj", Format::kNvfp4},
                                            {"lm_head", Format::kNone}};

TEST(MakeQuantConfigsTest, SingleFormatModelOptNvfp4HasItsGroupSize) {
  const std::vector<LayerQuant> plan = {{"a", Format::kNvfp4}, {"lm_head", Format::kNone}};
  ASSERT_OK_AND_ASSIGN(QuantConfigs c, MakeQuantConfigs(ExportFormat::kModelOpt, plan, "0.1.0"));
  EXPECT_EQ(c.hf_quant_config["quantization"]["quant_algo"], "NVFP4");
  EXPECT_EQ(c.hf_quant_config["quantization"]["group_size"], 16);
  const json& g = c.quantization_config["config_groups"]["group_0"];
  EXPECT_EQ(g["weights"], json({{"dynamic", false}, {"num_bits", 4}, {"type", "float"}, {"group_size", 16}}));
  EXPECT_EQ(g["input_activations"], g["weights"]);
  // Weight-only: no input_activations (vLLM reads that as W4A16_NVFP4).
  const std::vector<LayerQuant> wo = {{"a", Format::kNvfp4W4A16}};
  ASSERT_OK_AND_ASSIGN(c, MakeQuantConfigs(ExportFormat::kModelOpt, wo, "0.1.0"));
  EXPECT_EQ(c.quantization_config["quant_algo"], "W4A16_NVFP4");
  EXPECT_FALSE(c.quantization_config["config_groups"]["group_0"].contains("input_activations"));
}

// ModelOpt's MIXED_PRECISION: quantized_layers with NVFP4 (and its group size) or FP8 per layer, no
// exclusions, one config group per distinct layer entry targeting its layers by name.
TEST(MakeQuantConfigsTest, TwoFormatsAreModelOptMixedPrecision) {
  ASSERT_OK_AND_ASSIGN(QuantConfigs c, MakeQuantConfigs(ExportFormat::kModelOpt, kMixedPlan, "0.1.0"));
  const json& q = c.hf_quant_config["quantization"];
  EXPECT_EQ(q["quant_algo"], "MIXED_PRECISION");
  EXPECT_EQ(q["quantized_layers"],
            json({{"model.layers.0.self_attn.q_proj", {{"quant_algo", "FP8"}}},
                  {"model.layers.0.mlp.down_proj", {{"quant_algo", "NVFP4"}, {"group_size", 16}}},
                  {"model.layers.0.mlp.gate_proj", {{"quant_algo", "NVFP4"}, {"group_size", 16}}}}));
  EXPECT_FALSE(q.contains("exclude_modules"));
  EXPECT_EQ(c.quantization_config["quantized_layers"], q["quantized_layers"]);
  const json& groups = c.quantization_config["config_groups"];
  EXPECT_THAT(groups["group_0"]["targets"].get<std::vector<std::string>>(),
              ElementsAre("model.layers.0.mlp.down_proj", "model.layers.0.mlp.gate_proj"));
  EXPECT_EQ(groups["group_0"]["weights"]["num_bits"], 4);
  EXPECT_THAT(groups["group_1"]["targets"].get<std::vector<std::string>>(),
              ElementsAre("model.layers.0.self_attn.q_proj"));
  EXPECT_EQ(groups["group_1"]["weights"]["num_bits"], 8);
}

// compressed-tensors: a config group per format, NVFP4 first, each listing its modules; every
// unquantized Linear in ignore; the top-level format says mixed-precision.
TEST(MakeQuantConfigsTest, TwoFormatsAreCompressedTensorsGroupsPerFormat) {
  ASSERT_OK_AND_ASSIGN(QuantConfigs c, MakeQuantConfigs(ExportFormat::kCompressedTensors, kMixedPlan, "0.1.0"));
  const json& qc = c.quantization_config;
  EXPECT_EQ(qc["format"], "mixed-precision");
  EXPECT_THAT(qc["ignore"].get<std::vector<std::string>>(), ElementsAre("lm_head"));
  const json& g0 = qc["config_groups"]["group_0"];
  EXPECT_EQ(g0["format"], "nvfp4-pack-quantized");
  EXPECT_THAT(g0["targets"].get<std::vector<std::string>>(),
              ElementsAre("model.layers.0.mlp.down_proj", "model.layers.0.mlp.gate_proj"));
  for (const char* k : {"weights", "input_activations"}) {
    EXPECT_EQ(g0[k]["strategy"], "tensor_group") << k;
    EXPECT_EQ(g0[k]["group_size"], 16) << k;
    EXPECT_EQ(g0[k]["num_bits"], 4) << k;
    EXPECT_EQ(g0[k]["type"], "float") << k;
    EXPECT_EQ(g0[k]["scale_dtype"], "torch.float8_e4m3fn") << k;
  }
  EXPECT_EQ(g0["weights"]["dynamic"], false);
  EXPECT_EQ(g0["input_activations"]["dynamic"], "local");
  const json& g1 = qc["config_groups"]["group_1"];
  EXPECT_EQ(g1["format"], "float-quantized");
  EXPECT_THAT(g1["targets"].get<std::vector<std::string>>(), ElementsAre("model.layers.0.self_attn.q_proj"));
  // One format: targets every Linear, as the FP8 export always did.
  const std::vector<LayerQuant> one = {{"a", Format::kNvfp4W4A16}, {"b", Format::kNone}};
  ASSERT_OK_AND_ASSIGN(c, MakeQuantConfigs(ExportFormat::kCompressedTensors, one, "0.1.0"));
  EXPECT_EQ(c.quantization_config["format"], "nvfp4-pack-quantized");
  EXPECT_THAT(c.quantization_config["config_groups"]["group_0"]["targets"].get<std::vector<std::string>>(),
              ElementsAre("Linear"));
  EXPECT_TRUE(c.quantization_config["config_groups"]["group_0"]["input_activations"].is_null());
}

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

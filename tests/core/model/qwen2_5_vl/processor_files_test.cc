#include "core/model/qwen2_5_vl/processor_files.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "absl/strings/str_split.h"
#include "core/model/qwen2_5_vl/presets.h"

namespace autoquant {
namespace {

using ::testing::HasSubstr;

std::map<std::string, std::string> FilesOf(const nlohmann::ordered_json& config) {
  auto files = Qwen2_5_VLProcessorFiles(config);
  EXPECT_TRUE(files.ok()) << files.status();
  if (!files.ok()) return {};
  return {files->begin(), files->end()};
}

nlohmann::ordered_json Preset(const char* name) {
  auto c = PresetConfig(name, c10::ScalarType::BFloat16);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : nlohmann::ordered_json();
}

// The 3B's ids are the published checkpoint's: the vocabulary fills 0..151642
// and the 22 added tokens follow, <|image_pad|> at image_token_id.
TEST(ProcessorFilesTest, The3BPresetGetsQwensVocabularyAndSpecialTokenIds) {
  const auto config = Preset("qwen2.5-vl-3b");
  const auto files = FilesOf(config);
  ASSERT_EQ(files.size(), 4u);
  const auto tok = nlohmann::json::parse(files.at("tokenizer.json"));
  EXPECT_EQ(tok["model"]["vocab"].size(), 151643u);
  EXPECT_EQ(tok["model"]["merges"].size(), 151643u - 256u);
  std::set<int64_t> ids;
  for (const auto& [_, id] : tok["model"]["vocab"].items()) ids.insert(id.get<int64_t>());
  EXPECT_EQ(ids.size(), 151643u);
  EXPECT_EQ(*ids.begin(), 0);
  EXPECT_EQ(*ids.rbegin(), 151642);
  ASSERT_EQ(tok["added_tokens"].size(), 22u);
  std::map<std::string, int64_t> added;
  for (const auto& t : tok["added_tokens"]) added[t["content"].get<std::string>()] = t["id"].get<int64_t>();
  EXPECT_EQ(added.at("<|endoftext|>"), config["bos_token_id"].get<int64_t>());
  EXPECT_EQ(added.at("<|im_end|>"), config["eos_token_id"].get<int64_t>());
  EXPECT_EQ(added.at("<|vision_start|>"), config["vision_start_token_id"].get<int64_t>());
  EXPECT_EQ(added.at("<|vision_end|>"), config["vision_end_token_id"].get<int64_t>());
  EXPECT_EQ(added.at("<|vision_pad|>"), config["vision_token_id"].get<int64_t>());
  EXPECT_EQ(added.at("<|image_pad|>"), config["image_token_id"].get<int64_t>());
  EXPECT_EQ(added.at("<|video_pad|>"), config["video_token_id"].get<int64_t>());
  EXPECT_EQ(added.at("<|file_sep|>"), 151664);
}

// A BPE merge may only join tokens that exist before it, and must make a token
// of the vocabulary; otherwise the tokenizers library refuses the file.
TEST(ProcessorFilesTest, EveryMergeJoinsEarlierTokensIntoAVocabularyToken) {
  const auto tok = nlohmann::json::parse(FilesOf(Preset("qwen2.5-vl-3b")).at("tokenizer.json"));
  const auto& vocab = tok["model"]["vocab"];
  int64_t previous = 255;
  for (const auto& m : tok["model"]["merges"]) {
    std::vector<std::string> parts = absl::StrSplit(m.get<std::string>(), ' ');
    ASSERT_EQ(parts.size(), 2u) << m;
    ASSERT_TRUE(vocab.contains(parts[0]) && vocab.contains(parts[1])) << m;
    const std::string merged = parts[0] + parts[1];
    ASSERT_TRUE(vocab.contains(merged)) << m;
    EXPECT_LT(vocab[parts[0]].get<int64_t>(), vocab[merged].get<int64_t>()) << m;
    EXPECT_EQ(vocab[merged].get<int64_t>(), previous + 1) << m;  // merges in id order
    previous = vocab[merged].get<int64_t>();
  }
}

TEST(ProcessorFilesTest, TinyPresetKeepsTheSpecialTokensThatFitItsVocabulary) {
  const auto config = Preset("tiny");
  const auto files = FilesOf(config);
  const auto tok = nlohmann::json::parse(files.at("tokenizer.json"));
  EXPECT_EQ(tok["model"]["vocab"].size(), 491u);
  ASSERT_EQ(tok["added_tokens"].size(), 21u);  // <|file_sep|> would be 512 = vocab_size
  EXPECT_EQ(tok["added_tokens"].back()["id"], 511);
  EXPECT_EQ(tok["added_tokens"][12]["content"], "<|image_pad|>");
  EXPECT_EQ(tok["added_tokens"][12]["id"], config["image_token_id"]);
  const auto tc = nlohmann::json::parse(files.at("tokenizer_config.json"));
  EXPECT_EQ(tc["added_tokens_decoder"].size(), 21u);
  EXPECT_EQ(tc["eos_token"], "<|im_end|>");
  EXPECT_EQ(tc["additional_special_tokens"].size(), 13u);
  const auto pre = nlohmann::json::parse(files.at("preprocessor_config.json"));
  EXPECT_EQ(pre["patch_size"], config["vision_config"]["patch_size"]);
  EXPECT_EQ(pre["merge_size"], config["vision_config"]["spatial_merge_size"]);
  EXPECT_THAT(files.at("chat_template.jinja"), HasSubstr("<|vision_start|><|image_pad|><|vision_end|>"));
}

TEST(ProcessorFilesTest, SameConfigGivesTheSameBytes) {
  const auto config = Preset("tiny");
  EXPECT_EQ(FilesOf(config), FilesOf(config));
}

TEST(ProcessorFilesTest, TokenIdsOffQwensLayoutAreRefusedByName) {
  auto config = Preset("tiny");
  config["image_token_id"] = 7;
  auto files = Qwen2_5_VLProcessorFiles(config);
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(files.status().message(), HasSubstr("image_token_id is 7"));

  config = Preset("tiny");
  config["eos_token_id"] = 2;
  files = Qwen2_5_VLProcessorFiles(config);
  ASSERT_FALSE(files.ok());
  EXPECT_THAT(files.status().message(), HasSubstr("eos_token_id is 2 but <|im_end|> is 493"));

  config = Preset("tiny");
  config["vision_start_token_id"] = 100;
  files = Qwen2_5_VLProcessorFiles(config);
  ASSERT_FALSE(files.ok());
  EXPECT_THAT(files.status().message(), HasSubstr("256 byte tokens"));

  config = Preset("tiny");
  config.erase("vocab_size");
  files = Qwen2_5_VLProcessorFiles(config);
  ASSERT_FALSE(files.ok());
  EXPECT_THAT(files.status().message(), HasSubstr("vocab_size"));
}

}  // namespace
}  // namespace autoquant

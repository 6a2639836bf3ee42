#include "core/model/qwen2_5_vl/processor_files.h"

#include <array>
#include <cstdint>
#include <string_view>
#include <unordered_set>

#include "absl/strings/str_cat.h"

namespace autoquant {
namespace {

struct SpecialToken {
  const char* text;
  bool special;  // as Qwen2.5 marks them: the tool and FIM tokens are added but not special
};

// Qwen2.5-VL's added tokens, in id order from <|endoftext|>.
constexpr std::array<SpecialToken, 22> kSpecialTokens = {{
    {"<|endoftext|>", true},      {"<|im_start|>", true},     {"<|im_end|>", true},      {"<|object_ref_start|>", true},
    {"<|object_ref_end|>", true}, {"<|box_start|>", true},    {"<|box_end|>", true},     {"<|quad_start|>", true},
    {"<|quad_end|>", true},       {"<|vision_start|>", true}, {"<|vision_end|>", true},  {"<|vision_pad|>", true},
    {"<|image_pad|>", true},      {"<|video_pad|>", true},    {"<tool_call>", false},    {"</tool_call>", false},
    {"<|fim_prefix|>", false},    {"<|fim_middle|>", false},  {"<|fim_suffix|>", false}, {"<|fim_pad|>", false},
    {"<|repo_name|>", false},     {"<|file_sep|>", false},
}};

// Offsets from <|endoftext|> of the ids a config names.
constexpr std::array<std::pair<const char*, int>, 6> kConfigIds = {{
    {"bos_token_id", 0},
    {"vision_start_token_id", 9},
    {"vision_end_token_id", 10},
    {"vision_token_id", 11},
    {"image_token_id", 12},
    {"video_token_id", 13},
}};

constexpr std::string_view kPreTokenizerRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Qwen2-VL / Qwen2.5-VL-Instruct's chat template (images and videos as
// <|vision_start|><|image_pad|><|vision_end|>, a default system turn).
constexpr std::string_view kChatTemplate =
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

std::string Utf8(uint32_t code_point) {
  std::string s;
  if (code_point < 0x80) {
    s.push_back(static_cast<char>(code_point));
  } else {  // the byte symbols stay below U+0800
    s.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    s.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
  return s;
}

// GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves,
// the other 68 are shifted to U+0100 onwards. Returned in vocabulary order
// (printable first), each with its byte.
std::vector<std::pair<uint8_t, std::string>> ByteSymbols() {
  std::vector<std::pair<uint8_t, std::string>> out;
  auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
  for (int b = 0; b < 256; ++b) {
    if (printable(b)) out.emplace_back(static_cast<uint8_t>(b), Utf8(b));
  }
  uint32_t shifted = 256;
  for (int b = 0; b < 256; ++b) {
    if (!printable(b)) out.emplace_back(static_cast<uint8_t>(b), Utf8(shifted++));
  }
  return out;
}

nlohmann::json ByteLevel() {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
}

std::string TokenizerJson(int64_t first_special, int64_t vocab_size) {
  const auto bytes = ByteSymbols();
  std::array<std::string, 256> symbol;
  nlohmann::json vocab = nlohmann::json::object();
  std::unordered_set<std::string> known;
  for (const auto& [b, s] : bytes) {
    symbol[b] = s;
    vocab[s] = static_cast<int64_t>(known.size());
    known.insert(s);
  }
  // Merges: a breadth-first walk that extends every token by each common
  // character in turn; every merge's left side was made by an earlier one.
  std::vector<std::string> common;
  for (char c : std::string_view(" abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-\n")) {
    common.push_back(symbol[static_cast<uint8_t>(c)]);
  }
  nlohmann::json merges = nlohmann::json::array();
  std::vector<std::string> queue = common;
  for (size_t next = 0; static_cast<int64_t>(known.size()) < first_special; ++next) {
    const std::string left = queue[next];
    for (const std::string& c : common) {
      if (static_cast<int64_t>(known.size()) >= first_special) break;
      std::string token = left + c;
      if (!known.insert(token).second) continue;
      vocab[token] = static_cast<int64_t>(known.size()) - 1;
      merges.push_back(absl::StrCat(left, " ", c));
      queue.push_back(std::move(token));
    }
  }
  nlohmann::json added = nlohmann::json::array();
  for (size_t i = 0; i < kSpecialTokens.size() && first_special + static_cast<int64_t>(i) < vocab_size; ++i) {
    added.push_back({{"id", first_special + static_cast<int64_t>(i)},
                     {"content", kSpecialTokens[i].text},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", kSpecialTokens[i].special}});
  }
  nlohmann::json split = {{"type", "Split"},
                          {"pattern", {{"Regex", std::string(kPreTokenizerRegex)}}},
                          {"behavior", "Isolated"},
                          {"invert", false}};
  nlohmann::json doc = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", std::move(added)},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", {split, ByteLevel()}}}},
      {"post_processor", ByteLevel()},
      {"decoder", ByteLevel()},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", std::move(vocab)},
        {"merges", std::move(merges)}}},
  };
  return doc.dump();
}

std::string TokenizerConfigJson(int64_t first_special, int64_t vocab_size) {
  nlohmann::ordered_json decoder = nlohmann::ordered_json::object();
  nlohmann::ordered_json additional = nlohmann::ordered_json::array();
  for (size_t i = 0; i < kSpecialTokens.size() && first_special + static_cast<int64_t>(i) < vocab_size; ++i) {
    decoder[std::to_string(first_special + static_cast<int64_t>(i))] = {{"content", kSpecialTokens[i].text},
                                                                        {"lstrip", false},
                                                                        {"normalized", false},
                                                                        {"rstrip", false},
                                                                        {"single_word", false},
                                                                        {"special", kSpecialTokens[i].special}};
    if (i >= 1 && i <= 13) additional.push_back(kSpecialTokens[i].text);  // <|im_start|> ... <|video_pad|>
  }
  nlohmann::ordered_json c = {
      {"add_prefix_space", false},
      {"added_tokens_decoder", std::move(decoder)},
      {"additional_special_tokens", std::move(additional)},
      {"bos_token", nullptr},
      {"clean_up_tokenization_spaces", false},
      {"eos_token", "<|im_end|>"},
      {"errors", "replace"},
      {"model_max_length", 131072},
      {"pad_token", "<|endoftext|>"},
      {"split_special_tokens", false},
      {"tokenizer_class", "Qwen2Tokenizer"},
      {"unk_token", nullptr},
  };
  return c.dump(2) + "\n";
}

std::string PreprocessorConfigJson(const nlohmann::ordered_json& vision) {
  nlohmann::ordered_json c = {
      {"min_pixels", 3136},
      {"max_pixels", 12845056},
      {"patch_size", vision.value("patch_size", 14)},
      {"temporal_patch_size", vision.value("temporal_patch_size", 2)},
      {"merge_size", vision.value("spatial_merge_size", 2)},
      {"image_mean", {0.48145466, 0.4578275, 0.40821073}},
      {"image_std", {0.26862954, 0.26130258, 0.27577711}},
      {"image_processor_type", "Qwen2VLImageProcessor"},
      {"processor_class", "Qwen2_5_VLProcessor"},
  };
  return c.dump(2) + "\n";
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Qwen2_5_VLProcessorFiles(
    const nlohmann::ordered_json& config) {
  auto id_of = [&](const char* key) -> absl::StatusOr<int64_t> {
    if (!config.contains(key) || !config[key].is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ", key, " must be a token id"));
    }
    return config[key].get<int64_t>();
  };
  absl::StatusOr<int64_t> vocab_size = id_of("vocab_size");
  absl::StatusOr<int64_t> vision_start = id_of("vision_start_token_id");
  if (!vocab_size.ok()) return vocab_size.status();
  if (!vision_start.ok()) return vision_start.status();
  const int64_t first_special = *vision_start - 9;
  if (first_special < 256) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: vision_start_token_id ", *vision_start,
        " leaves no room for the 256 byte tokens before Qwen2.5-VL's special tokens (it must be at least 265)"));
  }
  for (const auto& [key, offset] : kConfigIds) {
    if (!config.contains(key)) continue;
    absl::StatusOr<int64_t> id = id_of(key);
    if (!id.ok()) return id.status();
    if (*id != first_special + offset || *id >= *vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config.json: ", key, " is ", *id, " but Qwen2.5-VL's layout puts it at ", first_special + offset,
          " (vision_start_token_id - 9 + ", offset, "), below vocab_size ", *vocab_size));
    }
  }
  // eos is <|im_end|> in the published configs (a list in generation_config.json, a single id here).
  if (config.contains("eos_token_id")) {
    absl::StatusOr<int64_t> eos = id_of("eos_token_id");
    if (!eos.ok()) return eos.status();
    if (*eos != first_special + 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json: eos_token_id is ", *eos, " but <|im_end|> is ", first_special + 2));
    }
  }
  static const nlohmann::ordered_json kNoVision = nlohmann::ordered_json::object();
  const nlohmann::ordered_json& vision =
      config.contains("vision_config") && config["vision_config"].is_object() ? config["vision_config"] : kNoVision;
  return std::vector<std::pair<std::string, std::string>>{
      {"tokenizer.json", TokenizerJson(first_special, *vocab_size)},
      {"tokenizer_config.json", TokenizerConfigJson(first_special, *vocab_size)},
      {"chat_template.jinja", std::string(kChatTemplate)},
      {"preprocessor_config.json", PreprocessorConfigJson(vision)},
  };
}

}  // namespace autoquant

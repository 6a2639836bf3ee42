// Fuzzes config.json parsing (JSON text -> ParseQwen2_5_VLConfig): any input
// gives a config or a Status, and an accepted config has the sizes the model
// code divides and indexes by in range.
#include <cstddef>
#include <cstdint>

#include "core/model/qwen2_5_vl/config.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto config = autoquant::ParseQwen2_5_VLConfig(j, "fuzz/config.json");
  if (!config.ok()) return 0;
  const auto& t = config->text;
  const auto& v = config->vision;
  FUZZ_CHECK(t.num_attention_heads > 0 && t.hidden_size % t.num_attention_heads == 0);
  FUZZ_CHECK(t.num_key_value_heads > 0 && t.num_attention_heads % t.num_key_value_heads == 0);
  FUZZ_CHECK(t.head_dim() > 0);
  FUZZ_CHECK(v.num_heads > 0 && v.hidden_size % v.num_heads == 0 && v.head_dim() > 0);
  return 0;
}

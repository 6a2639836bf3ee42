// Fuzzes coverage-manifest parsing as ReadCoverageManifest does it (JSON text
// -> ParseCoverageManifest), then ValidatePartition against a fixed set of
// group keys: any input gives a manifest or a Status.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/quant/plan.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto m = autoquant::ParseCoverageManifest(j, "fuzz_coverage_from_baseline.json");
  if (!m.ok()) return 0;
  static const std::vector<std::string> kKeys = {
      "language_model.layers.0.mlp.down_proj.quant_recipe", "language_model.layers.0.mlp.gate_proj.quant_recipe",
      "language_model.layers.1.mlp.down_proj.quant_recipe", "language_model.layers.1.self_attn.q_proj.quant_recipe"};
  (void)autoquant::ValidatePartition(*m, kKeys);
  autoquant::SchemeSelection s;
  s.coverage_manifest = *m;
  (void)autoquant::ValidateSelection(s);
  (void)autoquant::EffectiveDisabledLayers(s);
  return 0;
}

// Fuzzes reading a cached baseline back (LoadBaseline's steps on the file's
// text: JSON parse, BaselineFromJson; the key check needs no fuzzing). A
// baseline BaselineFromJson accepts is promised to be safe to index, so the
// target then plans a scheme on it and round-trips it through JSON.
#include <cstddef>
#include <cstdint>

#include "core/quant/baseline.h"
#include "core/quant/plan.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto b = autoquant::BaselineFromJson(j);
  if (!b.ok()) return 0;
  for (double coverage : {0.5, 1.0}) {
    autoquant::SchemeSelection s;
    s.coverage = coverage;
    auto plan = autoquant::MakePlan(*b, s);
    if (plan.ok()) (void)autoquant::CoverageOf(*plan, *b);
  }
  auto again = autoquant::BaselineFromJson(autoquant::BaselineToJson(*b));
  FUZZ_CHECK(again.ok());
  return 0;
}

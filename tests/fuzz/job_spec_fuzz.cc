// Fuzzes JobSpec::FromJson (how the job store reads a stored request back):
// any JSON gives a spec or a Status, and an accepted spec round-trips.
#include <cstddef>
#include <cstdint>

#include "core/jobs/job.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto spec = autoquant::JobSpec::FromJson(j);
  if (!spec.ok()) return 0;
  auto again = autoquant::JobSpec::FromJson(spec->ToJson());
  FUZZ_CHECK(again.ok() && *again == *spec);
  return 0;
}

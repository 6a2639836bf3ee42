// Fuzzes the daemon's request validation: a serialized v1::SchemeSpec
// (ParseFromArray) -> SpecFromProto -> ValidateSchemeSpec; what the validation accepts (what the service
// stores) survives the wire both ways and the store's JSON. Torch-free by design: no translation unit
// may include both torch and protobuf headers (docs/design.md).
#include <cstddef>
#include <cstdint>

#include "autoquant/v1/autoquant.pb.h"
#include "server/job_proto.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  autoquant::v1::SchemeSpec p;
  if (!p.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto spec = autoquant::SpecFromProto(p);
  if (!spec.ok()) return 0;
  // Refused here, a spec goes no further (and may hold NaN, which equals nothing).
  if (!autoquant::ValidateSchemeSpec(*spec).ok()) return 0;
  autoquant::v1::SchemeSpec back;
  autoquant::SpecToProto(*spec, &back);
  auto again = autoquant::SpecFromProto(back);
  FUZZ_CHECK(again.ok() && *again == *spec);
  auto stored = autoquant::JobSpec::FromJson(spec->ToJson());
  FUZZ_CHECK(stored.ok() && *stored == *spec);
  return 0;
}

// Fuzzes ParseSafetensorsHeader with whole files (length prefix, JSON, data):
// any input must give a header or a Status, and an accepted header must keep
// its promises (tensors inside the file, in order, span = numel x dtype size).
#include <cstddef>
#include <cstdint>

#include "core/io/safetensors_header.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view file(reinterpret_cast<const char*>(data), size);
  auto header = autoquant::ParseSafetensorsHeader(file, "fuzz.safetensors");
  if (!header.ok()) return 0;
  FUZZ_CHECK(header->data_start >= 8 && header->data_start <= size);
  const uint64_t data_size = size - header->data_start;
  uint64_t prev_end = 0;
  for (const autoquant::TensorInfo& t : header->tensors) {
    FUZZ_CHECK(t.begin <= t.end && t.end <= data_size);
    FUZZ_CHECK(t.begin >= prev_end);
    prev_end = t.end;
    FUZZ_CHECK(t.numel() >= 0);
    FUZZ_CHECK(static_cast<uint64_t>(t.numel()) * autoquant::DTypeSize(t.dtype) == t.nbytes());
  }
  return 0;
}

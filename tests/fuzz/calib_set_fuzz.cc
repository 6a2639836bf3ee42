// Fuzzes the calibration-file reader, CalibSet::Load, with whole files: the
// input is written to a temporary file (Load maps a path). Any input gives a
// set or a Status; an accepted set's batches must all be in range.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/model/qwen2_5_vl/calib_set.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

std::filesystem::path TempFile() {
  const char* dir = std::getenv("TMPDIR");
  return std::filesystem::path(dir != nullptr ? dir : "/tmp") /
         ("autoquant-calib-fuzz-" + std::to_string(::getpid()) + ".safetensors");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path path = TempFile();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  auto set = autoquant::CalibSet::Load(path);
  if (!set.ok()) return 0;
  for (auto [begin, end] : set->BatchRanges(2)) {
    auto batch = set->Batch(begin, end);
    FUZZ_CHECK(batch.ok());
  }
  return 0;
}

// Parsing and validation of a safetensors header, without torch.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON, then the
// data buffer. The JSON maps tensor names to {dtype, shape, data_offsets}
// (offsets relative to the data buffer), plus an optional "__metadata__"
// object of string -> string.
//
// ParseSafetensorsHeader checks everything a reader relies on and names the
// file and the problem in its InvalidArgument error: truncated file, header
// length beyond the file, header not JSON, unknown dtype, offsets out of range
// or overlapping, shape x dtype size != byte span, duplicate names.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/io/dtype.h"

namespace autoquant {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // empty for 0-d tensors
  uint64_t begin = 0;          // byte offsets into the data buffer, [begin, end)
  uint64_t end = 0;

  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data order (ascending begin)
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // absolute file offset of the data buffer (8 + N)
};

// `file` is the whole file content (usually an mmap); `source` names it in errors.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view file, absl::string_view source);

// Serializes a header whose tensors are laid out back to back in the given
// order; pads the JSON with spaces to a multiple of 8 bytes as the Python
// package does, so the data buffer stays 8-byte aligned. Returns the 8-byte
// length prefix plus the JSON.
std::string SerializeSafetensorsHeader(const std::vector<TensorInfo>& tensors,
                                       const std::map<std::string, std::string>& metadata);

}  // namespace autoquant

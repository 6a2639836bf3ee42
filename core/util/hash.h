// SHA-256 (OpenSSL) for fingerprints of models, calibration sets and
// baselines: content hashes, so a changed input is never mistaken for a
// cached one.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace autoquant {

std::string Sha256Hex(absl::string_view data);

// Incremental hashing of large inputs.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  void Update(const void* data, size_t n);
  void Update(absl::string_view s) { Update(s.data(), s.size()); }
  std::string HexDigest();  // finalizes

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Streams the file through SHA-256 in 1 MiB reads.
absl::Status HashFile(const std::filesystem::path& path, Sha256* h);

}  // namespace autoquant

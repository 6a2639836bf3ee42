// SHA-256 (OpenSSL) for fingerprints of models, calibration sets and
// baselines: content hashes, so a changed input is never mistaken for a
// cached one.
//
//   ASSIGN_OR_RETURN(std::string key, Sha256Hex(text));
//
//   Sha256 h;
//   h.Update(header);
//   RETURN_IF_ERROR(HashFile(path, &h));
//   ASSIGN_OR_RETURN(std::string hex, h.HexDigest());
//
// OpenSSL can fail (no provider for SHA-256, e.g. a FIPS-only configuration;
// out of memory). A failure is kept by the Sha256 object and returned by
// HexDigest() as Internal: a digest of partial input is never handed out.
// Not thread-safe.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace autoquant {

// Internal if OpenSSL fails.
absl::StatusOr<std::string> Sha256Hex(absl::string_view data);

// Incremental hashing of large inputs.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  // After a failure (see status()), further updates are ignored.
  void Update(const void* data, size_t n);
  void Update(absl::string_view s) { Update(s.data(), s.size()); }
  // OK, or the first OpenSSL failure seen so far.
  const absl::Status& status() const { return status_; }
  // Finalizes: the lowercase hex digest, or the first failure. Call once.
  absl::StatusOr<std::string> HexDigest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  absl::Status status_;
  bool finished_ = false;
};

// Streams the file through SHA-256 in 1 MiB reads. Filesystem errors as
// ErrnoStatus; a hashing failure as Internal.
absl::Status HashFile(const std::filesystem::path& path, Sha256* h);

// The hex SHA-256 of each piece, hashed on up to `threads` threads (0 = the
// default of parallel.h): a scheme's tensors hash in parallel. Internal if
// OpenSSL fails.
absl::StatusOr<std::vector<std::string>> Sha256HexEach(const std::vector<absl::string_view>& pieces, int threads = 0);

}  // namespace autoquant

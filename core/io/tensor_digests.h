// SHA-256 digests of a safetensors file's tensors, remembered for the
// process by file (path + FileStamp: a rewrite or touch forgets them), so
// that a daemon hashes its base model's tensors once (at load, in parallel)
// and every standalone export reuses them instead of hashing gigabytes of
// unchanged bytes again.
//
// Besides a tensor's own bytes, a caller may remember digests of values
// derived deterministically from it under its own key (the FP8 version of a
// weight: "<tensor>#fp8-<format>"): they are forgotten with the file.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/io/safetensors_file.h"

namespace autoquant {

// The hex digest of every tensor of `file`, in header order: remembered ones
// reused, the rest hashed on up to `threads` threads (0: parallel.h's default)
// and remembered. Errors: stat failures, OpenSSL failures.
absl::StatusOr<std::vector<std::string>> TensorDigestsOf(const SafetensorsFile& file, int threads = 0);

// A digest remembered under `key` (a tensor name or a derived key) for
// `file` as it is now; nullopt if none or if the file changed since.
std::optional<std::string> RememberedDigest(const SafetensorsFile& file, const std::string& key);
void RememberDigest(const SafetensorsFile& file, const std::string& key, std::string hex);

}  // namespace autoquant

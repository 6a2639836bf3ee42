// Content digests of a scheme's tensors, so that a scheme that changed after
// export (a flipped bit on disk, a bad copy, a hand edit) is caught.
//
// The quant manifest (layer-sensitivity/<scheme>_quant_manifest.json) records
// under "integrity" the SHA-256 of every tensor's bytes and the shard that
// holds it:
//   "integrity": {"algorithm": "sha256",
//                 "tensors": {"<name>": {"file": "model-00001-of-00001.safetensors", "sha256": "<hex>"}}}
// Export writes it and verifies it before publishing the scheme;
// `autoquant diff` and the daemon verify it before trusting a scheme.
//
//   ASSIGN_OR_RETURN(TensorDigests d, ComputeTensorDigests(staged_dir));
//   ...
//   RETURN_IF_ERROR(VerifySchemeIntegrity(scheme_dir));
//
// Torch-free (reads files through mmap, hashes tensors on several threads:
// core/util/parallel.h); thread-safe.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace autoquant {

struct TensorDigest {
  std::string file;    // shard file name, relative to the checkpoint directory
  std::string sha256;  // lowercase hex of the tensor's bytes
};
using TensorDigests = std::map<std::string, TensorDigest>;  // by tensor name

// Digests of every tensor of the checkpoint in `dir` (model.safetensors, or
// the shards model.safetensors.index.json names). Errors name the file.
absl::StatusOr<TensorDigests> ComputeTensorDigests(const std::filesystem::path& dir);

// The manifest's "integrity" object.
nlohmann::ordered_json IntegrityJson(const TensorDigests& digests);

// Recomputes the digests of `scheme_dir` and compares them with its quant
// manifest's record. DataLoss naming the tensor and the shard when a tensor's
// bytes differ, a recorded tensor is missing or moved, or an unrecorded tensor
// appeared; FailedPrecondition when the manifest has no integrity record;
// NotFound when there is no quant manifest.
absl::Status VerifySchemeIntegrity(const std::filesystem::path& scheme_dir);

// The comparison half of VerifySchemeIntegrity, for digests already computed
// from `scheme_dir`'s files (export hashes the staged files once and checks
// that the manifest it wrote records exactly those).
absl::Status CheckManifestRecords(const std::filesystem::path& scheme_dir, const TensorDigests& found);

}  // namespace autoquant

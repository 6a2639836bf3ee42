// Writes a scheme's tensors in the shared-shard layout: the tensor plan is
// cut into pieces (one per layer group in the version the plan gives it, BF16
// or FP8, and the rest of the model in shards of at most max_shard_bytes);
// each piece is a content-addressed blob (core/io/blob_store.h), then linked
// (or copied) into the staged scheme directory, whose
// model.safetensors.index.json names the linked files. A ten-scheme sweep so
// writes each group's two versions and the rest once, not ten times.
//
// A piece's blob is found without producing it only through the records the
// daemon keeps (SharedWriteOptions::records: the key its description gives
// -> the blob made for it, which must verify in full). Without a record (a
// first use, the offline CLI) the piece is produced and the blob it hashes to
// reused only if a file of that id verifies in full, else written; either
// way the record is then made. The caller holds the store's use lock
// (BlobStore::LockForUse) throughout.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/io/blob_store.h"
#include "core/io/checkpoint_writer.h"
#include "core/scheme/integrity.h"

namespace autoquant {

struct SharedPiece {
  // Everything that determines the piece's bytes (the base's fingerprint,
  // each tensor's name, dtype and shape, the quantizer and its inputs):
  // equal descriptions must mean equal bytes. Hashed into the blob key.
  std::string description;
  std::vector<size_t> tensors;  // indices into the tensor plan, in file order
};

struct SharedWriteOptions {
  bool allow_links = true;         // false: copy every blob (as where links are impossible)
  BlobRecords* records = nullptr;  // the daemon's; none: every piece is produced and verified by content
  const std::atomic<bool>* cancel = nullptr;
  std::function<void(size_t, size_t)> progress;  // (pieces done, total)
};

struct SharedWriteResult {
  std::map<std::string, std::string> weight_map;  // tensor -> file in the scheme directory
  TensorDigests digests;                          // from the verified blobs
  uint64_t tensor_bytes = 0;                      // the scheme's tensors
  uint64_t bytes_written = 0;                     // new blobs and copies written by this call
  size_t blobs_reused = 0, blobs_written = 0, blobs_copied = 0;
  size_t blob_records_failed = 0;  // blobs written whose record the job store could not keep
};

absl::StatusOr<SharedWriteResult> WriteSharedShards(const BlobStore& store, const std::vector<PlannedTensor>& plan,
                                                    const std::vector<SharedPiece>& pieces, const DirHandle& dir,
                                                    const SharedWriteOptions& options);

}  // namespace autoquant

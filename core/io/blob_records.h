// What the daemon recorded about the blobs it produced (blob_store.h): for a
// blob key (a hash of what a blob holds, derived before anything is
// produced) the id of the blob made for it and its size. The blob store
// trusts a blob found by key only through such a record, kept where only the
// daemon writes (its job store: core/jobs implements this interface), never
// through anything beside the blobs in the models root, which another user
// may be able to write.
//
//   ASSIGN_OR_RETURN(std::optional<BlobRecord> r, records.LookupBlob(key));
//   RETURN_IF_ERROR(records.RecordBlob(key, {blob.id, file_bytes}));
//
// Header-only and torch-free, so that the job stores implement it without
// linking the blob store.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace autoquant {

struct BlobRecord {
  std::string id;      // hex SHA-256 of the blob's header
  uint64_t bytes = 0;  // the blob file's size
  bool operator==(const BlobRecord&) const = default;
};

class BlobRecords {
 public:
  virtual ~BlobRecords() = default;
  // The record for `key`; nullopt when there is none. The store's own errors
  // (Unavailable, Internal) otherwise. Thread-safe.
  virtual absl::StatusOr<std::optional<BlobRecord>> LookupBlob(const std::string& key) = 0;
  // Records `record` for `key`, replacing an earlier one (a blob removed by
  // `autoquant gc`, or found damaged, is produced again under a new record).
  // ResourceExhausted for a full disk. Thread-safe.
  virtual absl::Status RecordBlob(const std::string& key, const BlobRecord& record) = 0;
};

}  // namespace autoquant

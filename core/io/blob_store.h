// Content-addressed, read-only safetensors shards that scheme directories
// share through hard links (the shared-shard layout, docs/design.md).
//
// A sweep's schemes differ only in which layer groups are FP8: the vision
// tower, embeddings, norms and head are the base's in every scheme, and each
// group is either its BF16 or its FP8 version. Each of those pieces is written
// once, as a blob, and every scheme directory holding it gets a hard link
// (a plain copy where the filesystem cannot link). A scheme directory stays
// an ordinary Hugging Face checkpoint (its index names the linked files);
// deleting it removes its links, never another scheme's data.
//
//   <root>/sha256/<id>.safetensors   a blob, mode 0444. <id> is the SHA-256 of
//       the file's header (length prefix + JSON), whose __metadata__ records
//       every tensor's SHA-256 as "sha256:<tensor>": the name pins down every
//       byte of the file.
//   <root>/refs/<key>                the id of the blob stored for <key>, a
//       hex SHA-256 the caller derives from what the blob holds (the base's
//       fingerprint, the tensors, the scales), so a blob is found before any
//       tensor is produced.
//
//   ASSIGN_OR_RETURN(BlobStore store, BlobStore::Open(models_root / ".autoquant/blobs"));
//   auto blob = store.Find(key);              // verified, or NotFound / DataLoss
//   if (!blob.ok()) blob = store.Put(key, tensors);
//   ASSIGN_OR_RETURN(BlobPlacement how, store.Place(*blob, staged_dir));
//
// Verification: a blob is hashed in full (header id and every tensor) the
// first time this process uses it (through any BlobStore object), then
// trusted while its inode, size and mtime are unchanged (blobs are read-only; `autoquant diff` re-hashes every
// scheme's tensors whenever asked). Writes are atomic (temporary file,
// fsync, rename), so two processes storing the same blob at once both end
// with one complete file. Thread-safe.
#pragma once

#include <torch/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/io/safetensors_header.h"
#include "core/io/safetensors_writer.h"

namespace autoquant {

struct Blob {
  std::string id;                 // hex SHA-256 of the header
  std::filesystem::path path;     // <root>/sha256/<id>.safetensors
  std::vector<TensorInfo> tensors;  // in file order
  std::map<std::string, std::string> sha256;  // tensor name -> hex SHA-256 of its bytes
  uint64_t data_bytes = 0;        // sum of the tensors' bytes

  // The blob's name inside a scheme directory.
  std::string FileName() const { return "model-" + id + ".safetensors"; }
};

struct BlobTensor {
  TensorSpec spec;
  torch::Tensor value;  // any device; matches spec
};

enum class BlobPlacement { kLinked, kCopied };

struct BlobGcResult {
  size_t blobs_removed = 0;
  uint64_t bytes_freed = 0;
  size_t refs_removed = 0;
  size_t blobs_kept = 0;  // linked into a scheme, or younger than min_age
};

class BlobStore {
 public:
  // Creates <root>/sha256 and <root>/refs if missing and removes leftovers of
  // killed writers there (RemoveStaleStaging).
  static absl::StatusOr<BlobStore> Open(const std::filesystem::path& root);

  const std::filesystem::path& root() const { return root_; }

  // The verified blob recorded for `key`. NotFound when none is recorded or
  // its file is gone; DataLoss (naming the file and the tensor) when the file
  // does not match its id or a tensor its recorded digest.
  absl::StatusOr<Blob> Find(const std::string& key) const;

  // Writes `tensors` (in this order) as a blob and records it under `key`.
  // A verified blob with the same id is kept as it is; a damaged one is
  // replaced (schemes linked to the damaged file keep it: `autoquant diff`
  // reports them).
  absl::StatusOr<Blob> Put(const std::string& key, const std::vector<BlobTensor>& tensors) const;

  // Puts the blob into `dir` as blob.FileName(): a hard link, or a copy
  // (fsynced, mode 0444) where the filesystem refuses links (EXDEV, EPERM,
  // EMLINK, ENOTSUP) or `allow_links` is false.
  absl::StatusOr<BlobPlacement> Place(const Blob& blob, const std::filesystem::path& dir,
                                      bool allow_links = true) const;

  // Verifies the blob file `path` in full (id and every tensor digest).
  static absl::StatusOr<Blob> VerifyFile(const std::filesystem::path& path);

  // Removes the blobs no scheme links any more (link count 1: only the
  // store's name) whose file is older than `min_age_seconds` (an export
  // links its blobs seconds after storing them; the age keeps a running one
  // safe), and the refs whose blob is gone. dry_run counts without removing.
  // A scheme holding a copy (not a link) never depends on the store.
  absl::StatusOr<BlobGcResult> CollectGarbage(int64_t min_age_seconds, bool dry_run) const;

 private:
  struct Verified;
  explicit BlobStore(std::filesystem::path root);
  absl::StatusOr<Blob> Load(const std::string& id) const;
  std::filesystem::path BlobPath(const std::string& id) const;  // <root>/sha256/<id>.safetensors
  std::filesystem::path root_;
};

// A blob key: the hex SHA-256 of `description` (what the blob holds, written
// so that equal descriptions mean equal bytes).
absl::StatusOr<std::string> BlobKey(absl::string_view description);

}  // namespace autoquant

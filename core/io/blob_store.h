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
//   <root>/use.lock                  locked shared by every export while it
//       finds, stores and links blobs, exclusively by CollectGarbage.
//
//   ASSIGN_OR_RETURN(BlobStore store, BlobStore::Open(models_root, ".autoquant/blobs"));
//   ASSIGN_OR_RETURN(FlockFile in_use, store.LockForUse(cancel));
//   absl::StatusOr<Blob> blob = store.Find(records, key);  // verified, or NotFound / DataLoss
//   if (!blob.ok()) blob = store.Put(key, produce_tensors(), &records);
//   ASSIGN_OR_RETURN(BlobPlacement how, store.Place(*blob, staged_dir));
//
// Trust. A file that checks out against itself (its name hashes its header,
// its header holds its tensors' digests) can still hold anything: another
// user who can write the store can plant a self-consistent blob with wrong
// scales. So a blob is used for a key only
//   - through a record the daemon made when it produced that blob
//     (blob_records.h; kept in the daemon's job store, where only the daemon
//     writes): Find. The record names the id; the file of that id must
//     verify in full, so it holds exactly the bytes the daemon produced; or
//   - by content: Put is given the tensors, computes the id they hash to, and
//     keeps an existing file of that id only if it verifies in full (then it
//     is byte for byte the file Put would write), else writes it.
// Nothing beside the blobs says which blob a key has: the `refs/` of earlier
// versions are never read (CollectGarbage removes them). A blob file owned by
// another user or writable by group or others is never used (its owner could
// change it after the check): Find says DataLoss and Put writes its own.
//
// No symlinks. The store is held by directory handles (dir_handle.h):
// `below` (e.g. ".autoquant/blobs") and sha256/ are opened, or created,
// without following a symlink (FailedPrecondition naming the path and saying
// to remove the link); blob files are opened O_NOFOLLOW, regular files only;
// writes and links go through the held directories, and a link is checked to
// be the very file (device, inode) that was verified.
//
// Verification is remembered for the process (through any BlobStore object)
// by (device, inode) with the file's stamp (file_util.h: size, mtime and
// ctime), and trusted while the stamp is unchanged. An edit in place changes
// the ctime, which nobody can set back (the mtime can be); a link or unlink
// changes it too, so a blob is hashed again after another process linked it
// or a scheme holding it was deleted. Place's own link changes it as well, so
// after linking Place remembers the new stamp if nothing but the ctime
// changed. That leaves one window: an edit in place between the last check
// (a full hash, or a stamp that matched) and Place's link, with the mtime set
// back, is taken for verified. Making it needs write access to a 0444 file of
// the daemon's user, i.e. being that user or root, which docs/security.md
// leaves out of scope; `autoquant diff` re-hashes every scheme's tensors.
// The ctime is only as fine as the kernel's clock for it: without multigrain
// timestamps, an edit within the same tick as the last change keeps it too.
//
// Writes are atomic (temporary file, fsync, rename), so two processes storing
// the same blob at once both end with one complete file. Thread-safe.
#pragma once

#include <torch/types.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/io/blob_records.h"
#include "core/io/safetensors_header.h"
#include "core/io/safetensors_writer.h"
#include "core/util/dir_handle.h"
#include "core/util/file_lock.h"
#include "core/util/file_util.h"

namespace autoquant {

struct Blob {
  std::string id;                             // hex SHA-256 of the header
  std::filesystem::path path;                 // <root>/sha256/<id>.safetensors, for messages
  std::vector<TensorInfo> tensors;            // in file order
  std::map<std::string, std::string> sha256;  // tensor name -> hex SHA-256 of its bytes
  uint64_t data_bytes = 0;                    // sum of the tensors' bytes
  uint64_t file_bytes = 0;                    // the file's size (header included)
  FileStamp stamp;                            // the file's, when it was verified
  // The verified file, held open (Find, Put): Place links or copies exactly it.
  std::shared_ptr<const UniqueFd> file;

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
  size_t refs_removed = 0;  // files of the refs/ directory earlier versions kept (never read now)
  size_t blobs_kept = 0;    // linked into a scheme, or younger than min_age
};

class BlobStore {
 public:
  // Opens the store `dir`/`below`. `dir` is the caller's (an operator's
  // models root: it may be, or pass through, a symlink); each component of
  // `below` and sha256/ beneath it are opened without following a symlink
  // and, with `create`, made (0755) where missing, `dir` too. Removes
  // leftovers of killed writers in sha256/ (RemoveStaleStaging).
  // FailedPrecondition naming the link and saying to remove it where a
  // component is a symlink; NotFound without `create` where one is missing.
  static absl::StatusOr<BlobStore> Open(const std::filesystem::path& dir, absl::string_view below = "",
                                        bool create = true);

  // The store's directory (`dir`/`below`), for messages.
  const std::filesystem::path& root() const { return root_->path(); }

  // Shared use of the store, until the returned lock goes: CollectGarbage
  // refuses to run meanwhile. Waits (polling, `cancel` ends it with
  // Cancelled) while a CollectGarbage runs, at most 10 minutes, then fails
  // Unavailable naming the holder.
  absl::StatusOr<FlockFile> LockForUse(const std::atomic<bool>* cancel) const;

  // The blob `records` holds for `key`, verified (open, for Place). NotFound
  // when no blob is recorded for `key` or its file is gone; DataLoss (naming
  // the file and what is wrong) when the file does not verify in full, has
  // another size than recorded, or is not the daemon's (another owner, or
  // writable by group or others); FailedPrecondition when something else (a
  // symlink, a FIFO) has its name. In each case the caller produces the
  // tensors and Puts them. The records' own errors as they are.
  absl::StatusOr<Blob> Find(BlobRecords& records, const std::string& key) const;

  // The blob holding `tensors` (in this order), open for Place: a file with
  // their id that verifies in full is kept as it is (`*written` false),
  // anything else under that name is replaced by a file written here
  // (`*written` true; schemes linked to a replaced file keep it: `autoquant
  // diff` reports a damaged one). With `records`, records key -> blob there;
  // a record that cannot be stored (a full disk under the job store) does
  // not fail the Put, whose blob is complete and verified: only its reuse by
  // key is lost. That failure goes to `*unrecorded` (OK otherwise).
  // InvalidArgument for a key that is not a hex SHA-256 or a tensor that
  // does not match its spec.
  absl::StatusOr<Blob> Put(const std::string& key, const std::vector<BlobTensor>& tensors,
                           BlobRecords* records = nullptr, bool* written = nullptr,
                           absl::Status* unrecorded = nullptr) const;

  // Puts the blob (as Find or Put returned it) into `dir` as
  // blob.FileName(): a hard link (linkat between the held directories), or a
  // copy of the open file (fsynced, mode 0444) where the filesystem refuses
  // links (EXDEV, EPERM, EMLINK, ENOTSUP) or `allow_links` is false. DataLoss,
  // with nothing left in `dir`, if the store's name was swapped for another
  // file since the blob was verified.
  absl::StatusOr<BlobPlacement> Place(const Blob& blob, const DirHandle& dir, bool allow_links = true) const;

  // Verifies the blob file `path` in full (id and every tensor digest, and
  // no bytes after the tensors).
  static absl::StatusOr<Blob> VerifyFile(const std::filesystem::path& path);

  // Removes the blobs no scheme links any more (link count 1: only the
  // store's name) whose file is older than `min_age_seconds`, and the refs/
  // directory of earlier versions. dry_run counts without removing. Runs
  // only when no export uses the store (LockForUse), and never waits:
  // Unavailable naming the process that holds it and what to do otherwise.
  // A scheme holding a copy (not a link) never depends on the store.
  absl::StatusOr<BlobGcResult> CollectGarbage(int64_t min_age_seconds, bool dry_run) const;

 private:
  struct Verified;
  BlobStore(std::shared_ptr<const DirHandle> root, std::shared_ptr<const DirHandle> sha256)
      : root_(std::move(root)), sha256_(std::move(sha256)) {}
  // The file sha256/<id>.safetensors, verified (or as verified before) and open.
  absl::StatusOr<Blob> Load(const std::string& id) const;
  // Writes the blob `id` whose tensors are `host` (on the CPU, contiguous).
  absl::StatusOr<Blob> Write(const std::string& id, const std::vector<TensorSpec>& specs,
                             const std::map<std::string, std::string>& metadata,
                             const std::vector<torch::Tensor>& host) const;
  std::shared_ptr<const DirHandle> root_, sha256_;
};

// A blob key: the hex SHA-256 of `description` (what the blob holds, written
// so that equal descriptions mean equal bytes).
absl::StatusOr<std::string> BlobKey(absl::string_view description);

}  // namespace autoquant

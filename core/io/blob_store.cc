#include "core/io/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <ctime>
#include <limits>
#include <mutex>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/util/hash.h"
#include "core/util/mapped_file.h"
#include "core/util/status_macros.h"
#include "core/util/torch_status.h"

namespace autoquant {
namespace fs = std::filesystem;

namespace {

constexpr char kDigestPrefix[] = "sha256:";
constexpr char kUseLock[] = "use.lock";
constexpr off_t kMaxBlobBytes = std::numeric_limits<off_t>::max();

bool IsHexId(absl::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

// The id a blob file's header hashes to, with the header parsed.
absl::StatusOr<std::pair<SafetensorsHeader, std::string>> HeaderAndId(const MappedFile& m, const fs::path& path) {
  auto header = ParseSafetensorsHeader(m.view(), path.string());
  if (!header.ok()) return absl::DataLossError(header.status().message());
  ASSIGN_OR_RETURN(std::string id, Sha256Hex(m.view().substr(0, header->data_start)));
  return std::make_pair(*std::move(header), std::move(id));
}

// Verifies the open blob file `fd` in full against `id`: the header hashes to it, the tensors fill the
// data exactly (nothing unverified after them) and each matches its recorded digest.
absl::StatusOr<Blob> VerifyOpen(int fd, const std::string& id, const fs::path& shown) {
  ASSIGN_OR_RETURN(auto m, MappedFile::Map(fd, shown));
  ASSIGN_OR_RETURN(auto header_id, HeaderAndId(*m, shown));
  const auto& [header, found] = header_id;
  if (found != id) {
    return absl::DataLossError(absl::StrCat("blob ", shown.string(), ": its header hashes to ", found,
                                            ", not to its name; the file was changed after it was written"));
  }
  Blob b;
  b.id = id;
  b.path = shown;
  b.tensors = header.tensors;
  b.file_bytes = m->view().size();
  std::vector<absl::string_view> bytes;
  for (const auto& t : header.tensors) {
    auto it = header.metadata.find(kDigestPrefix + t.name);
    if (it == header.metadata.end()) {
      return absl::DataLossError(
          absl::StrCat("blob ", shown.string(), ": no recorded digest for tensor '", t.name, "'"));
    }
    b.sha256[t.name] = it->second;
    bytes.push_back(m->view().substr(header.data_start + t.begin, t.nbytes()));
    b.data_bytes += t.nbytes();
  }
  // The header rules out overlaps; with the sizes adding up, the tensors tile the data buffer.
  if (header.data_start + b.data_bytes != b.file_bytes) {
    return absl::DataLossError(absl::StrCat("blob ", shown.string(), " holds ", b.file_bytes,
                                            " bytes, its header and tensors ", header.data_start + b.data_bytes));
  }
  ASSIGN_OR_RETURN(std::vector<std::string> hex, Sha256HexEach(bytes));
  for (size_t i = 0; i < hex.size(); ++i) {
    const std::string& name = b.tensors[i].name;
    if (hex[i] != b.sha256[name]) {
      return absl::DataLossError(absl::StrCat("blob ", shown.string(), ": tensor '", name,
                                              "' does not match its recorded SHA-256 (recorded ", b.sha256[name],
                                              ", found ", hex[i], ")"));
    }
  }
  return b;
}

// Only the daemon's user may be able to change a blob it uses: a file another user owns, or that group or
// others may write, could be changed after it is checked.
absl::Status CheckOurs(const struct stat& st, const fs::path& shown) {
  if (st.st_uid != ::geteuid()) {
    return absl::DataLossError(
        absl::StrFormat("blob %s is owned by uid %d, not by this process's user (uid %d): it is not used",
                        shown.string(), st.st_uid, ::geteuid()));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return absl::DataLossError(absl::StrFormat("blob %s is writable by group or others (mode %04o): it is not used",
                                               shown.string(), st.st_mode & 07777));
  }
  return absl::OkStatus();
}

// A store directory `name` in `at` that cannot be opened: a symlink there gets what to do.
absl::Status OpenStoreError(const absl::Status& s, const DirHandle& at, const std::string& name) {
  struct stat st;
  if (::fstatat(at.fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISLNK(st.st_mode)) return s;
  const fs::path shown = at.path() / name;
  return absl::FailedPreconditionError(
      absl::StrCat("blob store: ", shown.string(),
                   " is a symbolic link, which the blob store never follows: blobs are written "
                   "only into a real directory under the models root. Remove the link (",
                   shown.string(), "); the directory is created where it is missing"));
}

}  // namespace

// Blobs this process has verified, by file (device, inode) with the stamp they had: process-wide, so that
// every export of a daemon (each opens the store anew) hashes a blob once, not once per scheme, as long
// as nothing changes the file (blob_store.h, "Verification").
struct BlobStore::Verified {
  std::mutex mu;
  std::map<std::pair<dev_t, ino_t>, Blob> by_file;  // Blob::file empty

  static Verified& Get() {
    static Verified* v = new Verified();
    return *v;
  }
  std::optional<Blob> Lookup(const FileStamp& stamp, const std::string& id) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = by_file.find({stamp.dev, stamp.ino});
    if (it == by_file.end() || !(it->second.stamp == stamp) || it->second.id != id) return std::nullopt;
    return it->second;
  }
  void Remember(const FileStamp& stamp, Blob b) {
    b.stamp = stamp;
    b.file.reset();
    std::lock_guard<std::mutex> lock(mu);
    by_file[{stamp.dev, stamp.ino}] = std::move(b);
  }
};

absl::StatusOr<std::string> BlobKey(absl::string_view description) {
  return Sha256Hex(absl::StrCat("autoquant.blob.v1\n", description));
}

absl::StatusOr<BlobStore> BlobStore::Open(const fs::path& dir, absl::string_view below, bool create) {
  std::error_code ec;
  if (create && !dir.empty()) fs::create_directories(dir, ec);  // the caller's path: symlinks in it are its own
  ASSIGN_OR_RETURN(DirHandle at, DirHandle::Open(dir, /*follow_symlink=*/true));
  auto step = [&](const std::string& name) -> absl::Status {
    absl::StatusOr<DirHandle> next = create ? at.OpenOrMakeDir(name, 0755) : at.OpenDir(name);
    if (!next.ok()) return OpenStoreError(next.status(), at, name);
    at = *std::move(next);
    return absl::OkStatus();
  };
  for (absl::string_view part : absl::StrSplit(below, '/', absl::SkipEmpty())) RETURN_IF_ERROR(step(std::string(part)));
  auto root = std::make_shared<const DirHandle>(std::move(at));
  absl::StatusOr<DirHandle> sha = create ? root->OpenOrMakeDir("sha256", 0755) : root->OpenDir("sha256");
  if (!sha.ok()) return OpenStoreError(sha.status(), *root, "sha256");
  auto sha256 = std::make_shared<const DirHandle>(*std::move(sha));
  RETURN_IF_ERROR(RemoveStaleStaging(sha256->ProcPath()).status());
  return BlobStore(std::move(root), std::move(sha256));
}

absl::StatusOr<FlockFile> BlobStore::LockForUse(const std::atomic<bool>* cancel) const {
  auto lock = FlockFile::Acquire(*root_, kUseLock, FlockFile::kShared, std::chrono::minutes(10), cancel);
  if (absl::IsUnavailable(lock.status())) {
    return absl::UnavailableError(
        absl::StrCat("the blob store ", root().string(),
                     " stayed locked for 10 minutes by `autoquant gc`: ", lock.status().message()));
  }
  return lock;
}

absl::StatusOr<Blob> BlobStore::VerifyFile(const fs::path& path) {
  const std::string stem = path.stem().string();
  if (!IsHexId(stem) || path.extension() != ".safetensors") {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), " is not named <sha256>.safetensors"));
  }
  ASSIGN_OR_RETURN(int raw, OpenRegularFile(path));
  UniqueFd fd(raw);
  return VerifyOpen(fd.get(), stem, path);
}

absl::StatusOr<Blob> BlobStore::Load(const std::string& id) const {
  const std::string name = id + ".safetensors";
  const fs::path shown = sha256_->path() / name;
  ASSIGN_OR_RETURN(UniqueFd fd, sha256_->OpenRegular(name, kMaxBlobBytes));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "cannot stat", shown);
  RETURN_IF_ERROR(CheckOurs(st, shown));
  const FileStamp stamp = FileStampOf(st);
  Blob b;
  if (std::optional<Blob> known = Verified::Get().Lookup(stamp, id)) {
    b = *std::move(known);
  } else {
    ASSIGN_OR_RETURN(b, VerifyOpen(fd.get(), id, shown));
    ASSIGN_OR_RETURN(FileStamp after, FileStampOfFd(fd.get(), shown));
    if (!(after == stamp)) {
      return absl::DataLossError(absl::StrCat("blob ", shown.string(), " changed while it was being verified"));
    }
    Verified::Get().Remember(stamp, b);
  }
  b.stamp = stamp;
  b.path = shown;
  b.file = std::make_shared<const UniqueFd>(std::move(fd));
  return b;
}

absl::StatusOr<Blob> BlobStore::Find(BlobRecords& records, const std::string& key) const {
  if (!IsHexId(key)) return absl::InvalidArgumentError(absl::StrCat("blob key '", key, "' is not a hex SHA-256"));
  ASSIGN_OR_RETURN(std::optional<BlobRecord> record, records.LookupBlob(key));
  if (!record) return absl::NotFoundError(absl::StrCat("no blob is recorded for key ", key));
  if (!IsHexId(record->id)) {
    return absl::DataLossError(
        absl::StrCat("the record of blob key ", key, " holds '", record->id, "', not a blob id"));
  }
  ASSIGN_OR_RETURN(Blob b, Load(record->id));
  if (b.file_bytes != record->bytes) {
    return absl::DataLossError(absl::StrCat("blob ", b.path.string(), " holds ", b.file_bytes, " bytes, ",
                                            record->bytes, " were recorded when it was written"));
  }
  return b;
}

absl::StatusOr<Blob> BlobStore::Write(const std::string& id, const std::vector<TensorSpec>& specs,
                                      const std::map<std::string, std::string>& metadata,
                                      const std::vector<torch::Tensor>& host) const {
  const std::string name = id + ".safetensors";
  const fs::path shown = sha256_->path() / name;
  {
    // Through the held directory: a symlink swapped in for sha256/ (or a directory above it) redirects nothing.
    ASSIGN_OR_RETURN(SafetensorsWriter writer, SafetensorsWriter::Create(sha256_->ProcPath() / name, specs, metadata));
    for (const auto& h : host) RETURN_IF_ERROR(writer.Write(h));
    RETURN_IF_ERROR(writer.Finish());
  }
  ASSIGN_OR_RETURN(UniqueFd fd, sha256_->OpenRegular(name, kMaxBlobBytes));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "cannot stat", shown);
  if (st.st_uid != ::geteuid()) {
    return absl::InternalError(absl::StrCat("blob ", shown.string(), " was replaced right after it was written"));
  }
  if (::fchmod(fd.get(), 0444) != 0) return ErrnoStatus(errno, "cannot make read-only", shown);
  // The writer serializes the same header: check that the file is named by what it holds.
  ASSIGN_OR_RETURN(auto m, MappedFile::Map(fd.get(), shown));
  ASSIGN_OR_RETURN(auto header_written, HeaderAndId(*m, shown));
  const auto& [header, written] = header_written;
  Blob b;
  b.id = id;
  b.path = shown;
  b.tensors = header.tensors;
  for (const auto& t : header.tensors) b.data_bytes += t.nbytes();
  b.file_bytes = m->view().size();
  if (written != id || header.data_start + b.data_bytes != b.file_bytes) {
    return absl::InternalError(absl::StrCat("blob ", shown.string(), " was written with a header that hashes to ",
                                            written, ", not to its name, or with bytes after its tensors"));
  }
  for (size_t i = 0; i < specs.size(); ++i) b.sha256[specs[i].name] = metadata.at(kDigestPrefix + specs[i].name);
  ASSIGN_OR_RETURN(b.stamp, FileStampOfFd(fd.get(), shown));
  Verified::Get().Remember(b.stamp, b);
  b.file = std::make_shared<const UniqueFd>(std::move(fd));
  return b;
}

absl::StatusOr<Blob> BlobStore::Put(const std::string& key, const std::vector<BlobTensor>& tensors,
                                    BlobRecords* records, bool* written, absl::Status* unrecorded) const {
  if (!IsHexId(key)) return absl::InvalidArgumentError(absl::StrCat("blob key '", key, "' is not a hex SHA-256"));
  if (written != nullptr) *written = false;
  if (unrecorded != nullptr) *unrecorded = absl::OkStatus();
  std::vector<torch::Tensor> host;
  std::vector<TensorSpec> specs;
  std::vector<absl::string_view> bytes;
  for (const auto& t : tensors) {
    ASSIGN_OR_RETURN(TensorSpec got, SpecOf(t.spec.name, t.value));
    if (got.dtype != t.spec.dtype || got.shape != t.spec.shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("blob tensor '", t.spec.name, "' does not match its planned dtype and shape"));
    }
    ASSIGN_OR_RETURN(torch::Tensor h, TorchCall([&] { return t.value.to(torch::kCPU).contiguous(); },
                                                absl::StrCat("cannot copy tensor '", t.spec.name, "' to the host")));
    bytes.emplace_back(static_cast<const char*>(h.const_data_ptr()), t.spec.nbytes());
    host.push_back(std::move(h));
    specs.push_back(t.spec);
  }
  ASSIGN_OR_RETURN(std::vector<std::string> hex, Sha256HexEach(bytes));
  std::map<std::string, std::string> metadata = {{"format", "pt"}};
  std::vector<TensorInfo> infos;
  uint64_t offset = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    metadata[kDigestPrefix + specs[i].name] = hex[i];
    infos.push_back({specs[i].name, specs[i].dtype, specs[i].shape, offset, offset + specs[i].nbytes()});
    offset += specs[i].nbytes();
  }
  ASSIGN_OR_RETURN(std::string id, Sha256Hex(SerializeSafetensorsHeader(infos, metadata)));

  // By content: a file of this id that verifies in full holds exactly these bytes. Anything else under
  // the name (damaged, another user's, a symlink, a FIFO) is replaced by the rename of a fresh file.
  absl::StatusOr<Blob> b = Load(id);
  if (!b.ok()) {
    const absl::Status& s = b.status();
    if (!absl::IsNotFound(s) && !absl::IsDataLoss(s) && !absl::IsFailedPrecondition(s)) return s;
    b = Write(id, specs, metadata, host);
    if (!b.ok()) return b.status();
    if (written != nullptr) *written = true;
  }
  if (records != nullptr) {
    absl::Status recorded = records->RecordBlob(key, {b->id, b->file_bytes});
    if (unrecorded != nullptr) *unrecorded = std::move(recorded);
  }
  return b;
}

absl::StatusOr<BlobPlacement> BlobStore::Place(const Blob& blob, const DirHandle& dir, bool allow_links) const {
  if (blob.file == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("blob ", blob.path.string(), " is not open: Place takes a blob from Find or Put"));
  }
  const int held = blob.file->get();
  const std::string src = blob.id + ".safetensors", dst = blob.FileName();
  const fs::path shown = dir.path() / dst;
  if (allow_links) {
    if (::linkat(sha256_->fd(), src.c_str(), dir.fd(), dst.c_str(), 0) == 0) {
      // The name is linked, not the open file: it must still be the file that was verified.
      struct stat linked, now;
      if (::fstatat(dir.fd(), dst.c_str(), &linked, AT_SYMLINK_NOFOLLOW) != 0) {
        return ErrnoStatus(errno, "cannot stat", shown);
      }
      if (::fstat(held, &now) != 0) return ErrnoStatus(errno, "cannot stat", blob.path);
      if (linked.st_dev != now.st_dev || linked.st_ino != now.st_ino) {
        ::unlinkat(dir.fd(), dst.c_str(), 0);
        return absl::DataLossError(absl::StrCat("blob ", blob.path.string(),
                                                " was replaced between its verification and its link into ",
                                                dir.path().string(), "; nothing was linked"));
      }
      // The link changed the file's ctime; its content is what was verified unless it was edited in the
      // window blob_store.h describes.
      const FileStamp stamp = FileStampOf(now);
      if (stamp.SameButCtime(blob.stamp)) Verified::Get().Remember(stamp, blob);
      return BlobPlacement::kLinked;
    }
    const int err = errno;
    if (err != EXDEV && err != EPERM && err != EMLINK && err != ENOTSUP && err != EOPNOTSUPP) {
      return ErrnoStatus(err, absl::StrCat("cannot link blob ", blob.path.string(), " as"), shown);
    }
  }
  ASSIGN_OR_RETURN(UniqueFd out, dir.CreateFile(dst, 0444));
  std::vector<char> buf(1 << 20);
  off_t off = 0;
  while (true) {
    const ssize_t n = ::pread(held, buf.data(), buf.size(), off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "cannot read", blob.path);
    if (n == 0) break;
    for (ssize_t done = 0; done < n;) {
      const ssize_t w = ::write(out.get(), buf.data() + done, static_cast<size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return ErrnoStatus(errno, "cannot write", shown);
      done += w;
    }
    off += n;
  }
  if (static_cast<uint64_t>(off) != blob.file_bytes) {
    return absl::DataLossError(absl::StrCat("blob ", blob.path.string(), " holds ", off, " bytes, ", blob.file_bytes,
                                            " when it was verified"));
  }
  if (::fsync(out.get()) != 0) return ErrnoStatus(errno, "cannot fsync", shown);
  return BlobPlacement::kCopied;
}

absl::StatusOr<BlobGcResult> BlobStore::CollectGarbage(int64_t min_age_seconds, bool dry_run) const {
  auto lock = FlockFile::Acquire(*root_, kUseLock, FlockFile::kExclusive, std::chrono::milliseconds(0), nullptr);
  if (absl::IsUnavailable(lock.status())) {
    return absl::UnavailableError(absl::StrCat(
        "the blob store ", root().string(), " is in use by a running export (", lock.status().message(),
        "); nothing was removed. An export links blobs it has just stored or found, which gc would otherwise "
        "remove: retry when no job runs (autoquant gc does not wait), or stop the daemon first"));
  }
  if (!lock.ok()) return lock.status();
  BlobGcResult r;
  const int64_t now = static_cast<int64_t>(::time(nullptr));
  ASSIGN_OR_RETURN(std::vector<std::string> names, sha256_->Names());
  for (const std::string& name : names) {
    if (!absl::EndsWith(name, ".safetensors") || !IsHexId(name.substr(0, name.size() - 12))) continue;
    struct stat st;
    if (::fstatat(sha256_->fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    if (st.st_nlink > 1 || now - static_cast<int64_t>(st.st_mtim.tv_sec) < min_age_seconds) {
      ++r.blobs_kept;
      continue;
    }
    if (!dry_run) RETURN_IF_ERROR(sha256_->Unlink(name, /*directory=*/false));
    ++r.blobs_removed;
    r.bytes_freed += static_cast<uint64_t>(st.st_size);
  }
  if (!dry_run) RETURN_IF_ERROR(sha256_->Fsync());
  // Earlier versions found blobs through refs/<key> files here, which anyone able to write the store
  // could plant; nothing reads them now.
  absl::StatusOr<DirHandle> refs = root_->OpenDir("refs");
  if (refs.ok()) {
    ASSIGN_OR_RETURN(std::vector<std::string> listed, refs->Names());
    r.refs_removed = listed.size();
  }
  if (!dry_run && !absl::IsNotFound(refs.status())) RETURN_IF_ERROR(root_->RemoveTree("refs"));
  return r;
}

}  // namespace autoquant

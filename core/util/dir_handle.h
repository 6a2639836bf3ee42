// Directories held by file descriptor, so that what the daemon writes and
// reads under a shared models root goes where it decided, not wherever a name
// points when the write happens: another user who can write in the root can
// rename a directory or swap it for a symbolic link between a check and a
// write, but cannot change what an open descriptor refers to.
//
//   ASSIGN_OR_RETURN(DirHandle root, DirHandle::Open(models_root));
//   ASSIGN_OR_RETURN(DirHandle scheme, root.OpenDir("top10"));           // never through a symlink
//   ASSIGN_OR_RETURN(std::string text, scheme.ReadRegular("evaluation.json", kMaxJsonBytes));
//   RETURN_IF_ERROR(scheme.WriteFileAtomic("README.md", text));
//
// Relative names are resolved beneath the handle, component by component,
// without following a symbolic link and without "..": openat2 with
// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS where the kernel has it, else openat
// with O_NOFOLLOW for each component. Files are opened as regular files only
// (a FIFO or a device would block or never end) with O_NONBLOCK until fstat
// says what they are. Messages name the path the handle was opened as.
// Torch-free. A DirHandle is movable, not copyable; its const methods are
// thread-safe.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace autoquant {

// An owned file descriptor, closed on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();
  int get() const { return fd_; }
  int release();

 private:
  int fd_ = -1;
};

// What a directory entry is, independent of its name.
struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const FileId&) const = default;
};

class DirHandle {
 public:
  // Opens the directory `path` (O_DIRECTORY, and O_NOFOLLOW on its last
  // component unless `follow_symlink`: the components of `path` are the
  // caller's, e.g. an operator's models root, which may be a symlink).
  // NotFound, FailedPrecondition for a symlink or a non-directory.
  static absl::StatusOr<DirHandle> Open(const std::filesystem::path& path, bool follow_symlink = false);

  DirHandle(DirHandle&&) noexcept = default;
  DirHandle& operator=(DirHandle&&) noexcept = default;

  int fd() const { return fd_.get(); }
  // The path it was opened as: for messages only, never for access.
  const std::filesystem::path& path() const { return path_; }
  // A path that the kernel resolves through this handle
  // ("/proc/self/fd/N"), for code that takes paths; the plain path() where
  // /proc is missing.
  std::filesystem::path ProcPath() const;

  // The names of this directory's entries, without "." and "..", in the
  // order the kernel lists them.
  absl::StatusOr<std::vector<std::string>> Names() const;

  // The directory `rel` (one or more components) beneath this one.
  absl::StatusOr<DirHandle> OpenDir(absl::string_view rel) const;
  // Creates the directory `name` (mode `mode`, the umask applies) and opens
  // it, checking that what got opened is owned by this process's user: another
  // user cannot slip in a directory of its own between the two steps.
  // AlreadyExists when it exists.
  absl::StatusOr<DirHandle> MakeDir(absl::string_view name, mode_t mode) const;
  // OpenDir(name), creating it when absent.
  absl::StatusOr<DirHandle> OpenOrMakeDir(absl::string_view name, mode_t mode) const;

  // Opens the regular file `rel` read-only. FailedPrecondition for anything
  // else (a symlink, a FIFO, a device, a directory); ResourceExhausted if it
  // is larger than `max_bytes`.
  absl::StatusOr<UniqueFd> OpenRegular(absl::string_view rel, off_t max_bytes) const;
  // Its whole content, with the same rules.
  absl::StatusOr<std::string> ReadRegular(absl::string_view rel, off_t max_bytes) const;
  // Creates the file `name` for writing: O_CREAT | O_EXCL | O_NOFOLLOW.
  absl::StatusOr<UniqueFd> CreateFile(absl::string_view name, mode_t mode) const;
  // Writes `name` atomically (a temporary file here, fsync, rename, fsync of
  // this directory).
  absl::Status WriteFileAtomic(absl::string_view name, absl::string_view data) const;

  // renameat2(this/from, to_dir/to, flags) (RENAME_NOREPLACE,
  // RENAME_EXCHANGE). Unimplemented when this filesystem cannot honour the
  // flags (then the caller chooses a fallback).
  absl::Status Rename(absl::string_view from, const DirHandle& to_dir, absl::string_view to, unsigned flags) const;
  // Removes `name` and, for a directory, everything below it, never following
  // a symbolic link (a link is removed, not what it names). A missing `name`
  // is fine.
  absl::Status RemoveTree(absl::string_view name) const;
  // Removes the empty directory or file `name`.
  absl::Status Unlink(absl::string_view name, bool directory) const;

  // FailedPrecondition naming the first entry below this directory that is
  // a symlink or anything but a regular file or a directory (a scheme never
  // holds one), checked without following any link.
  absl::Status CheckPlainTree() const;

  absl::StatusOr<FileId> Id() const;
  // The entry `name` itself (a symlink is not followed); NotFound if absent.
  absl::StatusOr<FileId> IdOf(absl::string_view name) const;
  absl::Status Fsync() const;

 private:
  DirHandle(UniqueFd fd, std::filesystem::path path) : fd_(std::move(fd)), path_(std::move(path)) {}
  // openat of `rel` beneath this directory without following any symlink.
  absl::StatusOr<UniqueFd> OpenBeneath(absl::string_view rel, int flags, mode_t mode) const;
  UniqueFd fd_;
  std::filesystem::path path_;
};

// Largest JSON document (evaluation.json, manifests, index) read from a scheme.
inline constexpr off_t kMaxSchemeJsonBytes = off_t{64} << 20;

}  // namespace autoquant

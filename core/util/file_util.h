// Small POSIX file helpers that report errors as absl::Status.
//
// Atomic publication: write to a temporary name in the same directory, fsync
// the file, rename it into place, fsync the directory. A crash at any point
// leaves either the old file or the new one, never a half-written file under
// the final name. Temporary files name their owning process (TempFilePath),
// so that RemoveStaleStaging can remove those of processes that were killed.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/util/dir_handle.h"

namespace autoquant {

// What identifies a file's current contents well enough to reuse what was
// computed from them (a digest) instead of reading them again: a rewrite
// changes the inode (rename); an edit in place changes the mtime and the
// ctime. The mtime can be set back (utimensat), the ctime cannot: the kernel
// sets it to now on every write, chmod, link and unlink, whoever asks, so an
// edit whose mtime was restored still changes the stamp. (The link count is
// not in it: a link or unlink changes the ctime too.)
struct FileStamp {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  bool operator==(const FileStamp&) const = default;
  // The same file with the same size and mtime: all a link or unlink of it
  // changes is its ctime.
  bool SameButCtime(const FileStamp& o) const {
    return dev == o.dev && ino == o.ino && size == o.size && mtime_ns == o.mtime_ns;
  }
};
absl::StatusOr<FileStamp> FileStampOf(const std::filesystem::path& path);
FileStamp FileStampOf(const struct stat& st);
// Of an open file.
absl::StatusOr<FileStamp> FileStampOfFd(int fd, const std::filesystem::path& shown);

// Opens `path` read-only if it is a regular file (symlinks to one are
// followed): O_NONBLOCK until fstat says what it is, so a FIFO or a device
// planted where a file is expected is refused at once (FailedPrecondition)
// instead of blocking open() or read() for ever. Returns the descriptor,
// which the caller closes.
absl::StatusOr<int> OpenRegularFile(const std::filesystem::path& path);

// Reads a whole file (a regular file only, OpenRegularFile). NotFound if it
// does not exist.
absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path);

// Streams a file through `consume` in chunks of up to 1 MiB (for hashing
// files too large to hold in memory).
absl::Status ReadFileChunks(const std::filesystem::path& path,
                            const std::function<void(const char* data, size_t n)>& consume);

// Writes `data` to `path` atomically (temp file + fsync + rename + dir fsync);
// the temporary file is named by TempFilePath.
absl::Status WriteFileAtomic(const std::filesystem::path& path, absl::string_view data);

// fsyncs a directory so that a rename inside it is durable.
absl::Status FsyncDir(const std::filesystem::path& dir);

// A fresh, uniquely named sibling of `target` (same filesystem, so renames are
// atomic), e.g. "/models/.top10.tmp-12345-4f2a91" (12345: this process's
// pid, so that a leftover names its creator). Not created.
std::filesystem::path TempSiblingPath(const std::filesystem::path& target);

// A fresh name for a temporary *file* next to `target`. A file cannot hold a
// marker the way a staging directory does, so its owner is in its name:
// ".NAME.tmp-PID-XXXXXX.owner-PID-START-BOOT" (the pid, its start time in clock
// ticks since boot, the first 8 hex digits of the boot id), e.g.
// "/out/.logits.safetensors.tmp-4242-4f2a91.owner-4242-918273-3f9a1c2e". Hidden and
// never ending in the target's extension, so no reader takes it for an output.
// Where the owner cannot be determined (no /proc), TempSiblingPath's form,
// which nothing ever removes. Not created.
std::filesystem::path TempFilePath(const std::filesystem::path& target);

// Creates a staging directory next to `target`, and on Commit() publishes it
// as `target`. Destroyed without Commit(), it removes the staging directory,
// so nothing half-written ever appears under the final name.
//
// The staging directory ".NAME.tmp-PID-XXXXXX" holds an owner marker and the
// scheme-to-be, NAME/, which is what gets written (path()) and published. It
// is created under a name that itself names its owner
// (".NAME.tmp-PID-XXXXXX.owner-PID-START-BOOT", TempFilePath's form) and
// renamed to its staging name only once the marker inside is complete, so a
// staging directory without a complete marker never exists, and a
// RemoveStaleStaging after a kill at any point knows whose leftover it sees
// whatever pids were reused since.
//
// The marker names its owner (pid, the process's start time and the boot id:
// a reused pid is not mistaken for the owner; the host name and pid
// namespace: a process of another machine or container sharing the volume is
// not judged by this one's pids).
//
// Confinement: the parent, the staging directory and NAME/ are held by
// descriptors (dir_handle.h). path() resolves through the handle of NAME/, so
// renaming the staging directory or swapping it for a symlink mid-export
// cannot redirect a write. Commit() checks that the staging name still refers
// to the directory created (device, inode), then renames NAME/ from the held
// staging directory, which only this user can write, onto `target` relative to
// the held parent: RENAME_NOREPLACE, or RENAME_EXCHANGE to overwrite, so what
// gets published is the directory written, never a symlink, and an existing
// `target` (or a symlink planted there) is never followed. Filesystems
// without those flags get plain renames of the same held names.
//
// Commit() fails with AlreadyExists if `target` exists and overwrite is false.
// With overwrite, the previous version ends up in the staging directory and is
// removed with it; if that removal fails, Commit() returns the error although
// the new directory is in place, so that the leftover is reported, not
// silently kept. Not thread-safe.
class StagedDir {
 public:
  static absl::StatusOr<StagedDir> Create(const std::filesystem::path& target, bool overwrite);
  StagedDir(StagedDir&& other) noexcept;
  StagedDir& operator=(StagedDir&&) = delete;
  ~StagedDir();

  // Where to write the scheme-to-be: a path resolved through the held handle
  // ("/proc/self/fd/N"; by name where /proc is missing).
  const std::filesystem::path& path() const { return write_path_; }
  // The staging directory's name, for messages and tests.
  std::filesystem::path staging() const { return parent_->path() / staging_name_; }
  const DirHandle& dir() const { return *inner_; }
  const std::filesystem::path& target() const { return target_; }
  absl::Status Commit();

 private:
  StagedDir(std::filesystem::path target, bool overwrite) : target_(std::move(target)), overwrite_(overwrite) {}
  // Renames NAME/ onto target; `previous` says whether an earlier version was
  // swapped into the staging directory.
  absl::Status Publish(bool* previous);
  // Removes the staging directory and what it holds, through the handles,
  // and its name only while it still refers to it.
  absl::Status RemoveStaging();
  std::filesystem::path target_;
  bool overwrite_ = false;
  std::unique_ptr<DirHandle> parent_;  // target's parent
  std::unique_ptr<DirHandle> outer_;   // the staging directory
  std::unique_ptr<DirHandle> inner_;   // NAME/ inside it
  std::string staging_name_;
  std::string name_;  // target's file name
  FileId outer_id_, inner_id_;
  std::filesystem::path write_path_;
  bool done_ = true;  // until Create() completes
};

// The marker file inside a staging directory (never inside what is published).
inline constexpr char kStagingMarker[] = ".autoquant-staging";

// Removes the leftovers of killed processes in `dir`: staging directories
// (".NAME.tmp-PID-XXXXXX" with a valid marker, and the owner-named directories
// StagedDir creates them as) and temporary files (regular files named by
// TempFilePath) whose owning process is gone; returns how many it removed.
// An owner-named directory without a complete marker is judged by the owner in
// its name (another boot's, or another machine's, once it is a minute old). A
// staging directory of an older version without a complete marker and holding
// nothing else is removed when the pid in its name no longer runs, else once it
// is a minute old. Never touches a live process's staging directory or
// temporary file, a staging directory whose marker names another host or pid
// namespace (it cannot tell whether that process runs), a directory holding
// anything without our marker, a file without an owner in its name, or a
// symlink. A missing `dir` counts as empty. Errors name the entry that could
// not be removed.
absl::StatusOr<int> RemoveStaleStaging(const std::filesystem::path& dir);

// Errno as a Status, naming what failed on which path.
absl::Status ErrnoStatus(int err, absl::string_view what, const std::filesystem::path& path);

}  // namespace autoquant

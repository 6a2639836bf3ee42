// An exclusive lock between processes, machines included, on a lock file:
// flock(2), which Linux also honours on NFS (v4, and v3 with lockd) and on
// CephFS. The baseline cache uses it so that two daemons sharing a models
// volume never compute the same baseline at once: the second waits, then
// reads what the first cached.
//
//   ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(dir / ".baseline-KEY.lock", cancel, on_wait));
//   ... // exclusive until `lock` is destroyed (or the process dies: the kernel frees it)
//
// The lock file exists only while held (the holder removes it as it lets go;
// one left by a killed holder is simply locked by the next). So a cache
// directory holds no lock files once nobody works in it.
//
// Not thread-safe per object; two threads of one process lock each other out
// like two processes do (each Acquire opens its own file description).
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/util/dir_handle.h"

namespace autoquant {

class FileLock {
 public:
  // Creates `path` if missing and waits until the lock is ours, polling so
  // that `cancel` (may be null) ends the wait with Cancelled. `on_wait` (may
  // be empty) is called once, before waiting, if another holder has it. The
  // filesystem's error (naming `path`) if the file cannot be opened or locked.
  static absl::StatusOr<FileLock> Acquire(const std::filesystem::path& path, const std::atomic<bool>* cancel,
                                          const std::function<void()>& on_wait);
  FileLock(FileLock&& other) noexcept : fd_(other.fd_), path_(std::move(other.path_)) { other.fd_ = -1; }
  FileLock& operator=(FileLock&&) = delete;
  // Removes the lock file, then releases the lock.
  ~FileLock();

 private:
  FileLock(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  std::filesystem::path path_;
};

// A flock(2) on a lock file that stays in place, beneath a directory the
// process holds (dir_handle.h): any number of shared holders, or one
// exclusive. The blob store uses it so that `autoquant gc` (exclusive) never
// removes blobs while an export (shared) finds, stores and links them.
//
//   ASSIGN_OR_RETURN(FlockFile use, FlockFile::Acquire(dir, "use.lock", FlockFile::kShared,
//                                                      std::chrono::minutes(5), cancel));
//   ... // shared until `use` is destroyed (or the process dies: the kernel frees it)
//
// The file is opened without following a symlink and must be a regular file
// (created, mode 0644, when missing; flock needs no write access, so a
// read-only user can lock it too). Movable; not thread-safe per object.
class FlockFile {
 public:
  enum Mode { kShared, kExclusive };
  // Locks `name` in `dir`, polling without blocking until `wait` has passed
  // (0: one try): Unavailable naming the holders (FlockHolders) when it
  // stays locked; `cancel` (may be null) ends the wait with Cancelled.
  // FailedPrecondition when `name` is a symlink or not a regular file.
  static absl::StatusOr<FlockFile> Acquire(const DirHandle& dir, absl::string_view name, Mode mode,
                                           std::chrono::milliseconds wait, const std::atomic<bool>* cancel);
  FlockFile(FlockFile&&) noexcept = default;
  FlockFile& operator=(FlockFile&&) noexcept = default;

 private:
  explicit FlockFile(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// The processes holding a flock on the file open as `fd`, as /proc/locks
// names them: "pid 4242 (autoquantd)", comma-separated; empty when none is
// listed or /proc/locks cannot be read (another pid namespace shows none).
std::string FlockHolders(int fd);

}  // namespace autoquant

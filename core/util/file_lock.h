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
#include <filesystem>
#include <functional>

#include "absl/status/statusor.h"

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

}  // namespace autoquant

#include "core/util/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "core/util/file_util.h"

namespace autoquant {

absl::StatusOr<FileLock> FileLock::Acquire(const std::filesystem::path& path, const std::atomic<bool>* cancel,
                                           const std::function<void()>& on_wait) {
  bool waited = false;
  while (true) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoStatus(errno, "cannot open lock file", path);
    FileLock lock(fd, {});  // removes nothing until the lock is ours
    // Non-blocking attempts in a loop rather than one blocking flock: a cancelled job must not stay
    // parked behind another process's minutes-long computation.
    while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno == EINTR) continue;
      if (errno != EWOULDBLOCK) return ErrnoStatus(errno, "cannot lock", path);
      if (!waited && on_wait) on_wait();
      waited = true;
      if (cancel != nullptr && cancel->load()) return absl::CancelledError("cancelled while waiting for a lock");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    // The holder before us removes the file as it lets go; if it did, we locked a file nobody else
    // will ever look at again: start over on the path's current file.
    struct stat held, now;
    if (::fstat(fd, &held) == 0 && ::stat(path.c_str(), &now) == 0 && held.st_ino == now.st_ino &&
        held.st_dev == now.st_dev) {
      lock.path_ = path;
      return lock;
    }
  }
}

FileLock::~FileLock() {
  if (fd_ < 0) return;
  // Removed before the lock is released, so that no later holder can lock this (now nameless) file while a
  // newcomer locks a fresh one: the lock file exists only while someone holds it.
  if (!path_.empty()) ::unlink(path_.c_str());
  ::close(fd_);
}

}  // namespace autoquant

#include "core/util/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "core/util/file_util.h"

namespace autoquant {

absl::StatusOr<FileLock> FileLock::Acquire(const std::filesystem::path& path, const std::atomic<bool>* cancel,
                                           const std::function<void()>& on_wait) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "cannot open lock file", path);
  FileLock lock(fd);
  bool waited = false;
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
  return lock;
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the only descriptor releases the lock
}

}  // namespace autoquant

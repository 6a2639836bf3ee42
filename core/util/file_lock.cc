#include "core/util/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"

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

absl::StatusOr<FlockFile> FlockFile::Acquire(const DirHandle& dir, absl::string_view name, Mode mode,
                                             std::chrono::milliseconds wait, const std::atomic<bool>* cancel) {
  const std::filesystem::path shown = dir.path() / std::string(name);
  // Opened read-only without following a symlink, regular files only; created when missing (O_EXCL, so a
  // symlink planted meanwhile is never followed either), and opened again if another process won the race.
  absl::StatusOr<UniqueFd> fd = dir.OpenRegular(name, /*max_bytes=*/4096);
  if (absl::IsNotFound(fd.status())) {
    fd = dir.CreateFile(name, 0644);
    if (absl::IsAlreadyExists(fd.status())) fd = dir.OpenRegular(name, 4096);
  }
  if (!fd.ok()) return fd.status();
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (::flock(fd->get(), (mode == kShared ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) return ErrnoStatus(errno, "cannot lock", shown);
    if (cancel != nullptr && cancel->load()) return absl::CancelledError("cancelled while waiting for a lock");
    if (std::chrono::steady_clock::now() >= deadline) {
      const std::string holders = FlockHolders(fd->get());
      return absl::UnavailableError(
          absl::StrCat(shown.string(), " is locked by ", holders.empty() ? "another process" : holders));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return FlockFile(*std::move(fd));
}

std::string FlockHolders(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return "";
  const std::string id =
      absl::StrFormat("%02x:%02x:%lu", major(st.st_dev), minor(st.st_dev), static_cast<unsigned long>(st.st_ino));
  std::ifstream locks("/proc/locks");
  std::vector<std::string> holders;
  std::string line;
  while (std::getline(locks, line)) {
    // "1: FLOCK  ADVISORY  READ  4242 00:2f:123456 0 EOF"; a waiter's line has "->" after the number.
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (f.size() < 6 || f[1] != "FLOCK" || f[5] != id) continue;
    std::string comm;
    std::ifstream in(absl::StrCat("/proc/", f[4], "/comm"));
    std::getline(in, comm);
    std::string holder = absl::StrCat("pid ", f[4]);
    if (!comm.empty()) absl::StrAppend(&holder, " (", absl::StripAsciiWhitespace(comm), ")");
    holders.push_back(std::move(holder));
  }
  return absl::StrJoin(holders, ", ");
}

}  // namespace autoquant

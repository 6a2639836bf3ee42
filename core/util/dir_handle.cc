#include "core/util/dir_handle.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace fs = std::filesystem;

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

int UniqueFd::release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

namespace {

// A symlink met where none may be followed, or a FIFO where a file was
// expected, is the caller's precondition failing, not an internal error.
absl::Status OpenError(int err, const fs::path& shown) {
  if (err == ELOOP) {
    return absl::FailedPreconditionError(
        absl::StrCat(shown.string(), " is or passes through a symbolic link, which is never followed here"));
  }
  if (err == EXDEV) {
    return absl::FailedPreconditionError(absl::StrCat(shown.string(), " leads outside the directory it is read in"));
  }
  return ErrnoStatus(err, "cannot open", shown);
}

// The components of a relative name: InvalidArgument for an absolute name,
// an empty component, "." or "..".
absl::StatusOr<std::vector<std::string>> Components(absl::string_view rel) {
  std::vector<std::string> parts = absl::StrSplit(rel, '/');
  if (rel.empty() || rel.front() == '/') {
    return absl::InvalidArgumentError(absl::StrCat("'", rel, "' is not a relative path"));
  }
  for (const std::string& p : parts) {
    if (p.empty() || p == "." || p == "..") {
      return absl::InvalidArgumentError(absl::StrCat("'", rel, "' is not a plain relative path"));
    }
  }
  return parts;
}

absl::Status OneComponent(absl::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not one path component"));
  }
  return absl::OkStatus();
}

// -1: not yet known; 0: absent (old kernel, or a seccomp filter that refuses it); 1: present.
std::atomic<int> openat2_state{-1};

int Openat2(int dirfd, const char* rel, int flags, mode_t mode) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags);
  how.mode = (flags & O_CREAT) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(::syscall(SYS_openat2, dirfd, rel, &how, sizeof(how)));
}

// The names in the directory open as `fd` (without "." and ".."), read through a duplicate descriptor so
// that closing the listing leaves `fd` open.
absl::StatusOr<std::vector<std::string>> NamesAt(int fd, const fs::path& shown) {
  const int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return ErrnoStatus(errno, "cannot list", shown);
  DIR* d = ::fdopendir(dup);
  if (d == nullptr) {
    const int err = errno;
    ::close(dup);
    return ErrnoStatus(err, "cannot list", shown);
  }
  ::rewinddir(d);  // the duplicate shares the offset of `fd`, which an earlier listing may have moved
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) return ErrnoStatus(err, "cannot list", shown);
  return names;
}

absl::Status RemoveTreeAt(int dirfd, const std::string& name, const fs::path& shown, int depth) {
  if (depth > 256) return absl::FailedPreconditionError(absl::StrCat(shown.string(), " is nested too deeply"));
  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? absl::OkStatus() : ErrnoStatus(errno, "cannot stat", shown);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) return ErrnoStatus(errno, "cannot remove", shown);
    return absl::OkStatus();
  }
  UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, "cannot open", shown);
  // Listed first, removed after: removing entries while reading the directory may skip some.
  ASSIGN_OR_RETURN(std::vector<std::string> children, NamesAt(fd.get(), shown));
  absl::Status status;
  for (const std::string& child : children) {
    status.Update(RemoveTreeAt(fd.get(), child, shown / child, depth + 1));
  }
  fd = UniqueFd();
  RETURN_IF_ERROR(status);
  if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, "cannot remove", shown);
  }
  return absl::OkStatus();
}

absl::Status CheckPlainTreeAt(int fd, const fs::path& shown, int depth) {
  if (depth > 16) return absl::FailedPreconditionError(absl::StrCat(shown.string(), " is nested too deeply"));
  ASSIGN_OR_RETURN(std::vector<std::string> names, NamesAt(fd, shown));
  absl::Status status;
  for (const std::string& name : names) {
    struct stat st;
    if (::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
    if (S_ISREG(st.st_mode)) continue;
    if (!S_ISDIR(st.st_mode)) {
      status = absl::FailedPreconditionError(
          absl::StrCat((shown / name).string(), S_ISLNK(st.st_mode) ? " is a symbolic link" : " is not a regular file",
                       "; a scheme directory holds only regular files and directories"));
      break;
    }
    int sub = ::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) {
      status = OpenError(errno, shown / name);
      break;
    }
    status = CheckPlainTreeAt(sub, shown / name, depth + 1);
    ::close(sub);
    if (!status.ok()) break;
  }
  return status;
}

}  // namespace

absl::Status DirHandle::CheckPlainTree() const { return CheckPlainTreeAt(fd_.get(), path_, 0); }

absl::StatusOr<std::vector<std::string>> DirHandle::Names() const { return NamesAt(fd_.get(), path_); }

absl::StatusOr<DirHandle> DirHandle::Open(const fs::path& path, bool follow_symlink) {
  int fd =
      ::open(path.empty() ? "." : path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow_symlink ? 0 : O_NOFOLLOW));
  if (fd < 0) {
    const int err = errno;
    struct stat st;
    // O_DIRECTORY | O_NOFOLLOW on a symlink says ENOTDIR.
    if (err == ELOOP || (err == ENOTDIR && ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))) {
      return OpenError(ELOOP, path);
    }
    if (err == ENOTDIR && ::lstat(path.c_str(), &st) == 0) {
      return absl::FailedPreconditionError(absl::StrCat(path.string(), " is not a directory"));
    }
    return ErrnoStatus(err, "cannot open directory", path);
  }
  return DirHandle(UniqueFd(fd), path);
}

fs::path DirHandle::ProcPath() const {
  static const bool has_proc = ::access("/proc/self/fd", X_OK) == 0;
  if (!has_proc) return path_;
  return fs::path("/proc/self/fd") / std::to_string(fd_.get());
}

absl::StatusOr<UniqueFd> DirHandle::OpenBeneath(absl::string_view rel, int flags, mode_t mode) const {
  ASSIGN_OR_RETURN(std::vector<std::string> parts, Components(rel));
  const fs::path shown = path_ / std::string(rel);
  flags |= O_CLOEXEC | O_NOFOLLOW;
  if (openat2_state.load(std::memory_order_relaxed) != 0) {
    const std::string r(rel);
    int fd = Openat2(fd_.get(), r.c_str(), flags, mode);
    if (fd >= 0) {
      openat2_state.store(1, std::memory_order_relaxed);
      return UniqueFd(fd);
    }
    if (errno != ENOSYS && !(errno == EPERM && openat2_state.load() == -1)) return OpenError(errno, shown);
    openat2_state.store(0, std::memory_order_relaxed);
  }
  // One component at a time, none of them followed if it is a symlink.
  UniqueFd dir;
  int at = fd_.get();
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    int fd = ::openat(at, parts[i].c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return OpenError(errno, shown);
    dir = UniqueFd(fd);
    at = fd;
  }
  int fd = ::openat(at, parts.back().c_str(), flags, mode);
  if (fd < 0) return OpenError(errno, shown);
  return UniqueFd(fd);
}

absl::StatusOr<DirHandle> DirHandle::OpenDir(absl::string_view rel) const {
  auto fd = OpenBeneath(rel, O_RDONLY | O_DIRECTORY, 0);
  if (!fd.ok() && fd.status().code() == absl::StatusCode::kNotFound) {
    // ENOTDIR lands here too: a file where a directory was expected.
    struct stat st;
    const std::string r(rel);
    if (::fstatat(fd_.get(), r.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat((path_ / r).string(), " is not a directory"));
    }
  }
  if (!fd.ok()) return fd.status();
  return DirHandle(*std::move(fd), path_ / std::string(rel));
}

absl::StatusOr<DirHandle> DirHandle::MakeDir(absl::string_view name, mode_t mode) const {
  RETURN_IF_ERROR(OneComponent(name));
  const std::string n(name);
  if (::mkdirat(fd_.get(), n.c_str(), mode) != 0) return ErrnoStatus(errno, "cannot create", path_ / n);
  ASSIGN_OR_RETURN(DirHandle dir, OpenDir(name));
  struct stat st;
  if (::fstat(dir.fd(), &st) != 0) return ErrnoStatus(errno, "cannot stat", dir.path());
  if (st.st_uid != ::geteuid()) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir.path().string(), " was replaced by another user's directory right after it was created"));
  }
  return dir;
}

absl::StatusOr<DirHandle> DirHandle::OpenOrMakeDir(absl::string_view name, mode_t mode) const {
  auto made = MakeDir(name, mode);
  if (made.ok() || made.status().code() != absl::StatusCode::kAlreadyExists) return made;
  return OpenDir(name);
}

absl::StatusOr<UniqueFd> DirHandle::OpenRegular(absl::string_view rel, off_t max_bytes) const {
  const fs::path shown = path_ / std::string(rel);
  // O_NONBLOCK: opening a FIFO must not wait for a writer.
  ASSIGN_OR_RETURN(UniqueFd fd, OpenBeneath(rel, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "cannot stat", shown);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(shown.string(), " is not a regular file"));
  }
  if (st.st_size > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat(shown.string(), " holds ", st.st_size, " bytes, more than the ", max_bytes, " read here"));
  }
  int fl = ::fcntl(fd.get(), F_GETFL);
  if (fl < 0 || ::fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK) != 0) return ErrnoStatus(errno, "cannot set up", shown);
  return fd;
}

absl::StatusOr<std::string> DirHandle::ReadRegular(absl::string_view rel, off_t max_bytes) const {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenRegular(rel, max_bytes));
  const fs::path shown = path_ / std::string(rel);
  std::string out;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "cannot read", shown);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    // The file may grow after the fstat.
    if (static_cast<off_t>(out.size()) > max_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat(shown.string(), " holds more than the ", max_bytes, " bytes read here"));
    }
  }
  return out;
}

absl::StatusOr<UniqueFd> DirHandle::CreateFile(absl::string_view name, mode_t mode) const {
  RETURN_IF_ERROR(OneComponent(name));
  const std::string n(name);
  int fd = ::openat(fd_.get(), n.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoStatus(errno, "cannot create", path_ / n);
  return UniqueFd(fd);
}

absl::Status DirHandle::WriteFileAtomic(absl::string_view name, absl::string_view data) const {
  RETURN_IF_ERROR(OneComponent(name));
  const std::string n(name);
  const std::string tmp = TempFilePath(fs::path(n)).filename().string();
  ASSIGN_OR_RETURN(UniqueFd fd, CreateFile(tmp, 0644));
  absl::Status status;
  size_t off = 0;
  while (status.ok() && off < data.size()) {
    ssize_t w = ::write(fd.get(), data.data() + off, data.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0)
      status = ErrnoStatus(errno, "cannot write", path_ / tmp);
    else
      off += static_cast<size_t>(w);
  }
  if (status.ok() && ::fsync(fd.get()) != 0) status = ErrnoStatus(errno, "cannot fsync", path_ / tmp);
  if (status.ok() && ::renameat(fd_.get(), tmp.c_str(), fd_.get(), n.c_str()) != 0) {
    status = ErrnoStatus(errno, "cannot rename into place", path_ / n);
  }
  if (!status.ok()) {
    ::unlinkat(fd_.get(), tmp.c_str(), 0);
    return status;
  }
  return Fsync();
}

absl::Status DirHandle::Rename(absl::string_view from, const DirHandle& to_dir, absl::string_view to,
                               unsigned flags) const {
  RETURN_IF_ERROR(OneComponent(from));
  RETURN_IF_ERROR(OneComponent(to));
  const std::string f(from), t(to);
  if (::renameat2(fd_.get(), f.c_str(), to_dir.fd(), t.c_str(), flags) == 0) return absl::OkStatus();
  const int err = errno;
  if (flags != 0 && (err == EINVAL || err == ENOSYS)) {
    return absl::UnimplementedError(
        absl::StrCat("the filesystem of ", to_dir.path().string(), " has no atomic no-replace or exchange rename"));
  }
  return ErrnoStatus(err, absl::StrCat("cannot rename ", (path_ / f).string(), " to"), to_dir.path() / t);
}

absl::Status DirHandle::RemoveTree(absl::string_view name) const {
  RETURN_IF_ERROR(OneComponent(name));
  return RemoveTreeAt(fd_.get(), std::string(name), path_ / std::string(name), 0);
}

absl::Status DirHandle::Unlink(absl::string_view name, bool directory) const {
  RETURN_IF_ERROR(OneComponent(name));
  const std::string n(name);
  if (::unlinkat(fd_.get(), n.c_str(), directory ? AT_REMOVEDIR : 0) != 0) {
    return ErrnoStatus(errno, "cannot remove", path_ / n);
  }
  return absl::OkStatus();
}

absl::StatusOr<FileId> DirHandle::Id() const {
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return ErrnoStatus(errno, "cannot stat", path_);
  return FileId{st.st_dev, st.st_ino};
}

absl::StatusOr<FileId> DirHandle::IdOf(absl::string_view name) const {
  RETURN_IF_ERROR(OneComponent(name));
  const std::string n(name);
  struct stat st;
  if (::fstatat(fd_.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return ErrnoStatus(errno, "cannot stat", path_ / n);
  return FileId{st.st_dev, st.st_ino};
}

absl::Status DirHandle::Fsync() const {
  if (::fsync(fd_.get()) != 0 && errno != EINVAL) return ErrnoStatus(errno, "cannot fsync directory", path_);
  return absl::OkStatus();
}

}  // namespace autoquant

#include "core/util/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace fs = std::filesystem;

absl::Status ErrnoStatus(int err, absl::string_view what, const fs::path& path) {
  std::string msg = absl::StrCat(what, " ", path.string(), ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case EEXIST:
    case ENOTEMPTY:
      return absl::AlreadyExistsError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::Status ReadFileChunks(const fs::path& path, const std::function<void(const char*, size_t)>& consume) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "cannot open", path);
  std::vector<char> buf(1 << 20);
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return ErrnoStatus(err, "cannot read", path);
    }
    if (n == 0) break;
    consume(buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const fs::path& path) {
  std::string out;
  RETURN_IF_ERROR(ReadFileChunks(path, [&out](const char* data, size_t n) { out.append(data, n); }));
  return out;
}

fs::path TempSiblingPath(const fs::path& target) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  fs::path name = target.filename();
  if (name.empty()) name = target.parent_path().filename();
  return target.parent_path() /
         absl::StrFormat(".%s.tmp-%06x", name.string(), static_cast<uint32_t>(rng() & 0xffffff));
}

absl::Status FsyncDir(const fs::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "cannot open directory", dir);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) return ErrnoStatus(err, "cannot fsync directory", dir);
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const fs::path& path, absl::string_view data) {
  fs::path tmp = TempSiblingPath(path);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "cannot create", tmp);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return ErrnoStatus(err, "cannot write", tmp);
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return ErrnoStatus(err, "cannot fsync", tmp);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoStatus(err, "cannot rename into place", path);
  }
  return FsyncDir(path.parent_path());
}

absl::StatusOr<StagedDir> StagedDir::Create(const fs::path& target, bool overwrite) {
  std::error_code ec;
  if (!overwrite && fs::exists(target, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "output directory ", target.string(), " already exists; pass --overwrite to replace it"));
  }
  fs::path parent = target.parent_path();
  if (!parent.empty()) {
    fs::create_directories(parent, ec);
    if (ec) return ErrnoStatus(ec.value(), "cannot create directory", parent);
  }
  fs::path staging = TempSiblingPath(target);
  if (::mkdir(staging.c_str(), 0755) != 0) return ErrnoStatus(errno, "cannot create", staging);
  return StagedDir(staging, target, overwrite);
}

StagedDir::StagedDir(StagedDir&& other) noexcept
    : staging_(std::move(other.staging_)),
      target_(std::move(other.target_)),
      overwrite_(other.overwrite_),
      done_(other.done_) {
  other.done_ = true;
}

StagedDir::~StagedDir() {
  if (done_) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);
}

absl::Status StagedDir::Commit() {
  if (done_) return absl::FailedPreconditionError("staged directory already committed");
  RETURN_IF_ERROR(FsyncDir(staging_));
  std::error_code ec;
  fs::path aside;
  if (fs::exists(target_, ec)) {
    if (!overwrite_) {
      return absl::AlreadyExistsError(absl::StrCat("output directory ", target_.string(),
                                                   " already exists; pass --overwrite to replace it"));
    }
    aside = TempSiblingPath(target_);
    if (::rename(target_.c_str(), aside.c_str()) != 0) {
      return ErrnoStatus(errno, "cannot move aside", target_);
    }
  }
  if (::rename(staging_.c_str(), target_.c_str()) != 0) {
    int err = errno;
    if (!aside.empty()) ::rename(aside.c_str(), target_.c_str());
    return ErrnoStatus(err, "cannot rename into place", target_);
  }
  done_ = true;
  RETURN_IF_ERROR(FsyncDir(target_.parent_path()));
  if (!aside.empty()) fs::remove_all(aside, ec);
  return absl::OkStatus();
}

}  // namespace autoquant

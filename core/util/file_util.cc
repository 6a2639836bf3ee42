#include "core/util/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <random>
#include <regex>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace fs = std::filesystem;

absl::Status ErrnoStatus(int err, absl::string_view what, const fs::path& path) {
  std::string msg = absl::StrCat(what, " ", path.string(), ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR:  // a path component is a file: the path does not exist
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case EEXIST:
    case ENOTEMPTY:
      return absl::AlreadyExistsError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(absl::StrCat(
          msg, " (the disk is full", err == EDQUOT ? " for this user's quota" : "",
          "; free space on that filesystem and retry)"));
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

absl::StatusOr<FileStamp> FileStampOf(const std::filesystem::path& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "cannot stat", path);
  return FileStamp{st.st_dev, st.st_ino, st.st_size, int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec};
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
  return target.parent_path() / absl::StrFormat(".%s.tmp-%d-%06x", name.string(), static_cast<long>(::getpid()),
                                                static_cast<uint32_t>(rng() & 0xffffff));
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
  fs::path tmp = TempFilePath(path);
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

namespace {

// Who owns a staging directory: enough to tell, after a crash, whether that
// process still runs (a pid alone may have been reused by another process).
struct StagingOwner {
  long pid = 0;
  std::string start_time;  // /proc/<pid>/stat field 22, clock ticks since boot
  std::string boot_id;
  // Directory markers only (empty in older markers and in temporary files' names): the machine and
  // the pid namespace the pid belongs to. Daemons of a fleet share a models volume from several
  // machines or containers, where a pid (and a boot id) of another one means nothing here.
  std::string host;
  std::string pid_ns;
};

std::string BootId() {
  auto id = ReadFile("/proc/sys/kernel/random/boot_id");
  return id.ok() ? std::string(absl::StripAsciiWhitespace(*id)) : "";
}

// Field 22 of /proc/<pid>/stat; empty if the process does not exist. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
std::string ProcessStartTime(long pid) {
  auto stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok()) return "";
  size_t close = stat->rfind(')');
  if (close == std::string::npos) return "";
  std::vector<std::string> fields = absl::StrSplit(stat->substr(close + 1), ' ', absl::SkipEmpty());
  // fields[0] is field 3 (state); field 22 is fields[19].
  return fields.size() > 19 ? fields[19] : "";
}

std::string HostName() {
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0) return "";
  return host;
}

// "pid:[4026531836]": which pid namespace this process's pids are numbered in.
std::string PidNamespace() {
  std::error_code ec;
  fs::path ns = fs::read_symlink("/proc/self/ns/pid", ec);
  return ec ? "" : ns.string();
}

// This process, as a marker or a temporary file's name records it.
StagingOwner Me() {
  return {static_cast<long>(::getpid()), ProcessStartTime(::getpid()), BootId(), HostName(), PidNamespace()};
}

// A temporary file's name holds only a prefix of the boot id.
constexpr size_t kBootIdInName = 8;

std::string MarkerText(const StagingOwner& o) {
  return absl::StrCat("pid ", o.pid, "\nstart ", o.start_time, "\nboot ", o.boot_id, "\nhost ", o.host, "\npidns ",
                      o.pid_ns, "\n");
}

std::optional<StagingOwner> ParseMarker(const std::string& text) {
  StagingOwner o;
  bool has_pid = false;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits(' ', 1));
    if (kv.first == "pid") has_pid = absl::SimpleAtoi(kv.second, &o.pid);
    if (kv.first == "start") o.start_time = kv.second;
    if (kv.first == "boot") o.boot_id = kv.second;
    if (kv.first == "host") o.host = kv.second;
    if (kv.first == "pidns") o.pid_ns = kv.second;
  }
  if (!has_pid || o.pid <= 0 || o.start_time.empty()) return std::nullopt;
  return o;
}

// Written in place (no temporary name): a process killed while writing it
// leaves an empty or partial marker, which RemoveStaleStaging handles like a
// missing one.
absl::Status WriteMarker(const fs::path& dir) {
  const std::string text = MarkerText(Me());
  const fs::path path = dir / kStagingMarker;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "cannot create", path);
  ssize_t n = ::write(fd, text.data(), text.size());
  int err = errno;
  if (n != static_cast<ssize_t>(text.size()) || ::fsync(fd) != 0) {
    err = n < 0 ? err : errno;
    ::close(fd);
    return ErrnoStatus(err == 0 ? EIO : err, "cannot write", path);
  }
  ::close(fd);
  return absl::OkStatus();
}

// A process killed between creating a staging directory and completing its
// marker leaves a directory that holds nothing but (at most) that marker:
// removing it loses nothing once its creator is gone. The pid in the name
// says who that was; when that pid runs (perhaps reused), or the name has
// none, the directory is removed only once it is old enough that no live
// process can still be about to write its marker.
constexpr auto kUnmarkedGrace = std::chrono::seconds(60);

bool UnmarkedAndEmpty(const fs::path& dir, long name_pid) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().filename() != kStagingMarker) return false;
  }
  if (ec) return false;
  if (name_pid > 0 && fs::exists("/proc/self/stat") && ProcessStartTime(name_pid).empty()) return true;
  auto mtime = fs::last_write_time(dir, ec);
  if (ec) return false;
  return fs::file_time_type::clock::now() - mtime > kUnmarkedGrace;
}

bool OwnerAlive(const StagingOwner& o) {
  // Another machine's or container's process (a fleet daemon on a shared volume) cannot be looked up
  // here: keep what it owns rather than delete a live export from under it.
  if (!o.host.empty() && o.host != HostName()) return true;
  if (!o.pid_ns.empty() && o.pid_ns != PidNamespace()) return true;
  const std::string boot = BootId();
  // A temporary file's name holds a prefix of the boot id, a marker all of it.
  if (!boot.empty() && !o.boot_id.empty() && !absl::StartsWith(boot, o.boot_id)) return false;  // rebooted since
  if (boot.empty() && !fs::exists("/proc/self/stat")) return true;  // no /proc: cannot tell, keep it
  return ProcessStartTime(o.pid) == o.start_time;
}

// ".NAME.tmp-PID-XXXXXX", as TempSiblingPath names them (".NAME.tmp-XXXXXX"
// before the pid was added). Returns whether it is one, and the pid (0: none).
bool IsStagingName(const std::string& name, long* pid) {
  static const std::regex kName(R"(^\..+\.tmp-(?:([0-9]+)-)?[0-9a-f]{6}$)");
  std::smatch m;
  if (!std::regex_match(name, m, kName)) return false;
  *pid = 0;
  if (m[1].matched && !absl::SimpleAtoi(m[1].str(), pid)) *pid = 0;
  return true;
}

// The owner in a name written by TempFilePath; nullopt for any other name.
std::optional<StagingOwner> TempFileOwner(const std::string& name) {
  static const std::regex kName(R"(^\..+\.tmp-(?:[0-9]+-)?[0-9a-f]{6}\.owner-([0-9]+)-([0-9]+)-([0-9a-f]*)$)");
  std::smatch m;
  if (!std::regex_match(name, m, kName)) return std::nullopt;
  StagingOwner o;
  if (!absl::SimpleAtoi(m[1].str(), &o.pid) || o.pid <= 0) return std::nullopt;
  o.start_time = m[2].str();
  o.boot_id = m[3].str();
  return o;
}

// Removes `p` if it is a temporary file of a dead process; true if it did.
absl::StatusOr<bool> RemoveIfStaleTempFile(const fs::path& p) {
  std::optional<StagingOwner> owner = TempFileOwner(p.filename().string());
  if (!owner) return false;
  std::error_code ec;
  if (!fs::is_regular_file(fs::symlink_status(p, ec))) return false;  // never a symlink or a directory
  if (OwnerAlive(*owner)) return false;
  if (!fs::remove(p, ec) && ec) return ErrnoStatus(ec.value(), "cannot remove stale temporary file", p);
  return !ec;
}

}  // namespace

fs::path TempFilePath(const fs::path& target) {
  const fs::path base = TempSiblingPath(target);
  const StagingOwner me = Me();
  if (me.start_time.empty()) return base;
  std::string boot;
  for (char c : me.boot_id) {
    if (boot.size() == kBootIdInName) break;
    if (absl::ascii_isxdigit(c)) boot.push_back(absl::ascii_tolower(c));
  }
  return base.parent_path() / absl::StrCat(base.filename().string(), ".owner-", me.pid, "-", me.start_time, "-", boot);
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
  StagedDir out(staging, target, overwrite);
  RETURN_IF_ERROR(WriteMarker(staging));
  return out;
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
  // A failure here leaves the marked directory for RemoveStaleStaging.
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
    // If we die before removing it, RemoveStaleStaging finds it by this marker.
    if (absl::Status s = WriteMarker(aside); !s.ok()) {
      return RestoreAside(aside, absl::InternalError(absl::StrCat("cannot mark ", aside.string(), ": ", s.message())));
    }
  }
  if (::rename(staging_.c_str(), target_.c_str()) != 0) {
    int err = errno;
    return RestoreAside(aside, ErrnoStatus(err, "cannot rename into place", target_));
  }
  done_ = true;
  // The marker made sense only while staged; a leftover inside a published
  // output is harmless, so a failure to remove it is not worth failing for.
  ::unlink((target_ / kStagingMarker).c_str());
  RETURN_IF_ERROR(FsyncDir(target_.parent_path()));
  if (!aside.empty()) {
    fs::remove_all(aside, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("the new ", target_.string(),
                                              " is in place, but its previous version, moved aside to ",
                                              aside.string(), ", could not be removed: ", ec.message(),
                                              "; remove it by hand"));
    }
  }
  return absl::OkStatus();
}

absl::Status StagedDir::RestoreAside(const fs::path& aside, absl::Status failure) {
  if (aside.empty()) return failure;
  if (::rename(aside.c_str(), target_.c_str()) != 0) {
    return absl::Status(failure.code(), absl::StrCat(failure.message(), "; restoring the previous ",
                                                     target_.string(), " also failed (", std::strerror(errno),
                                                     "): it is at ", aside.string()));
  }
  ::unlink((target_ / kStagingMarker).c_str());
  return failure;
}

absl::StatusOr<int> RemoveStaleStaging(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  int removed = 0;
  fs::directory_iterator it(dir, ec);
  if (ec) return ErrnoStatus(ec.value(), "cannot list", dir);
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const fs::path p = it->path();
    ASSIGN_OR_RETURN(bool removed_file, RemoveIfStaleTempFile(p));
    if (removed_file) {
      ++removed;
      continue;
    }
    const std::string name = p.filename().string();
    long name_pid = 0;
    if (!IsStagingName(name, &name_pid)) continue;
    std::error_code sec;
    if (!fs::is_directory(fs::symlink_status(p, sec))) continue;  // never follow a symlink out
    auto text = ReadFile(p / kStagingMarker);
    std::optional<StagingOwner> owner;
    if (text.ok()) owner = ParseMarker(*text);
    if (owner ? OwnerAlive(*owner) : !UnmarkedAndEmpty(p, name_pid)) continue;
    fs::remove_all(p, sec);
    if (sec) return ErrnoStatus(sec.value(), "cannot remove stale staging directory", p);
    ++removed;
  }
  if (ec) return ErrnoStatus(ec.value(), "cannot list", dir);
  return removed;
}

}  // namespace autoquant

#include "core/util/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdio.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <random>
#include <regex>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
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
      return absl::ResourceExhaustedError(absl::StrCat(msg, " (the disk is full",
                                                       err == EDQUOT ? " for this user's quota" : "",
                                                       "; free space on that filesystem and retry)"));
    default:
      return absl::InternalError(msg);
  }
}

absl::StatusOr<int> OpenRegularFile(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "cannot open", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus(err, "cannot stat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(path.string(), " is not a regular file"));
  }
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus(err, "cannot set up", path);
  }
  return fd;
}

absl::Status ReadFileChunks(const fs::path& path, const std::function<void(const char*, size_t)>& consume) {
  ASSIGN_OR_RETURN(int fd, OpenRegularFile(path));
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

FileStamp FileStampOf(const struct stat& st) {
  return FileStamp{st.st_dev, st.st_ino, st.st_size, int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec,
                   int64_t{st.st_ctim.tv_sec} * 1000000000 + st.st_ctim.tv_nsec};
}

absl::StatusOr<FileStamp> FileStampOf(const std::filesystem::path& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "cannot stat", path);
  return FileStampOf(st);
}

absl::StatusOr<FileStamp> FileStampOfFd(int fd, const std::filesystem::path& shown) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, "cannot stat", shown);
  return FileStampOf(st);
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

// Written in place (no temporary name), before the directory gets its staging
// name: a process killed while writing it leaves an owner-named directory
// with an empty or partial marker, which RemoveStaleStaging judges by its name.
absl::Status WriteMarker(const DirHandle& dir) {
  const std::string text = MarkerText(Me());
  ASSIGN_OR_RETURN(UniqueFd fd, dir.CreateFile(kStagingMarker, 0644));
  const fs::path path = dir.path() / kStagingMarker;
  ssize_t n = ::write(fd.get(), text.data(), text.size());
  int err = errno;
  if (n != static_cast<ssize_t>(text.size()) || ::fsync(fd.get()) != 0) {
    err = n < 0 ? err : errno;
    return ErrnoStatus(err == 0 ? EIO : err, "cannot write", path);
  }
  return absl::OkStatus();
}

// ".owner-PID-START-BOOT": who made a temporary file or an owner-named
// directory; empty where that cannot be told (no /proc).
std::string OwnerSuffix() {
  const StagingOwner me = Me();
  if (me.start_time.empty()) return "";
  std::string boot;
  for (char c : me.boot_id) {
    if (boot.size() == kBootIdInName) break;
    if (absl::ascii_isxdigit(c)) boot.push_back(absl::ascii_tolower(c));
  }
  return absl::StrCat(".owner-", me.pid, "-", me.start_time, "-", boot);
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

bool OlderThanGrace(const fs::path& p) {
  std::error_code ec;
  auto mtime = fs::last_write_time(p, ec);
  return !ec && fs::file_time_type::clock::now() - mtime > kUnmarkedGrace;
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

// Whether the owner an owner-named staging directory's name gives still runs.
// A name holds no host or pid namespace; another boot id (a reboot, or
// another machine sharing the volume) leaves only the directory's age.
bool NameOwnerAlive(const StagingOwner& o, const fs::path& dir) {
  const std::string boot = BootId();
  if (!boot.empty() && !o.boot_id.empty() && !absl::StartsWith(boot, o.boot_id)) return !OlderThanGrace(dir);
  return OwnerAlive(o);
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
  return base.parent_path() / absl::StrCat(base.filename().string(), OwnerSuffix());
}

namespace {
// Where Commit() moves a previous version when the filesystem cannot exchange.
constexpr char kPrevious[] = ".autoquant-previous";
}  // namespace

absl::StatusOr<StagedDir> StagedDir::Create(const fs::path& target, bool overwrite) {
  const std::string name = target.filename().string();
  if (name.empty() || name == "." || name == "..") {
    return absl::InvalidArgumentError(absl::StrCat("output directory ", target.string(), " names no directory"));
  }
  fs::path parent = target.parent_path();
  std::error_code ec;
  if (!parent.empty()) {
    fs::create_directories(parent, ec);
    if (ec) return ErrnoStatus(ec.value(), "cannot create directory", parent);
  }
  StagedDir out(target, overwrite);
  out.name_ = name;
  // The parent is the caller's (an operator's models root may be a symlink); everything below it is held.
  ASSIGN_OR_RETURN(DirHandle parent_dir, DirHandle::Open(parent.empty() ? fs::path(".") : parent,
                                                         /*follow_symlink=*/true));
  out.parent_ = std::make_unique<DirHandle>(std::move(parent_dir));
  if (!overwrite && out.parent_->IdOf(name).ok()) {
    return absl::AlreadyExistsError(
        absl::StrCat("output directory ", target.string(), " already exists; pass --overwrite to replace it"));
  }
  const std::string staging = TempSiblingPath(target).filename().string();
  // Created under a name that names its owner, and given its staging name only once its marker is
  // complete: see the class comment.
  out.staging_name_ = staging + OwnerSuffix();
  ASSIGN_OR_RETURN(DirHandle outer, out.parent_->MakeDir(out.staging_name_, 0755));
  out.outer_ = std::make_unique<DirHandle>(std::move(outer));
  ASSIGN_OR_RETURN(out.outer_id_, out.outer_->Id());
  out.done_ = false;  // from here on the destructor removes what was made
  RETURN_IF_ERROR(WriteMarker(*out.outer_));
  ASSIGN_OR_RETURN(DirHandle inner, out.outer_->MakeDir(name, 0755));
  out.inner_ = std::make_unique<DirHandle>(std::move(inner));
  ASSIGN_OR_RETURN(out.inner_id_, out.inner_->Id());
  if (out.staging_name_ != staging) {
    absl::Status s = out.parent_->Rename(out.staging_name_, *out.parent_, staging, RENAME_NOREPLACE);
    if (absl::IsUnimplemented(s)) s = out.parent_->Rename(out.staging_name_, *out.parent_, staging, 0);
    RETURN_IF_ERROR(s);
    out.staging_name_ = staging;
  }
  auto id = out.parent_->IdOf(out.staging_name_);
  if (!id.ok() || *id != out.outer_id_) {
    return absl::FailedPreconditionError(
        absl::StrCat("the staging directory ", out.staging().string(), " was replaced while it was being created"));
  }
  out.write_path_ = out.inner_->ProcPath();
  if (out.write_path_ == out.inner_->path()) out.write_path_ = out.staging() / name;  // no /proc: by name
  return out;
}

StagedDir::StagedDir(StagedDir&& other) noexcept
    : target_(std::move(other.target_)),
      overwrite_(other.overwrite_),
      parent_(std::move(other.parent_)),
      outer_(std::move(other.outer_)),
      inner_(std::move(other.inner_)),
      staging_name_(std::move(other.staging_name_)),
      name_(std::move(other.name_)),
      outer_id_(other.outer_id_),
      inner_id_(other.inner_id_),
      write_path_(std::move(other.write_path_)),
      done_(other.done_) {
  other.done_ = true;
}

StagedDir::~StagedDir() {
  if (done_) return;
  // A failure here leaves the marked directory for RemoveStaleStaging.
  (void)RemoveStaging();
}

absl::Status StagedDir::RemoveStaging() {
  absl::Status status = outer_->RemoveTree(name_);
  status.Update(outer_->RemoveTree(kPrevious));
  RETURN_IF_ERROR(status);
  auto id = parent_->IdOf(staging_name_);
  if (!id.ok() || *id != outer_id_) {
    // Moved or replaced by someone else: its name is not ours to remove; empty it through the handle.
    return outer_->RemoveTree(kStagingMarker);
  }
  // Back to an owner-named name before the marker goes, so that a kill in between still leaves a
  // directory whose owner can be told.
  const std::string suffix = OwnerSuffix();
  const std::string doomed = staging_name_ + suffix;
  if (!absl::EndsWith(staging_name_, suffix) && parent_->Rename(staging_name_, *parent_, doomed, 0).ok())
    staging_name_ = doomed;
  RETURN_IF_ERROR(outer_->RemoveTree(kStagingMarker));
  id = parent_->IdOf(staging_name_);
  if (!id.ok() || *id != outer_id_) return absl::OkStatus();
  absl::Status rmdir = parent_->Unlink(staging_name_, /*directory=*/true);
  return absl::IsNotFound(rmdir) ? absl::OkStatus() : rmdir;
}

absl::Status StagedDir::Publish(bool* previous) {
  auto existing = parent_->IdOf(name_);
  if (!existing.ok() && !absl::IsNotFound(existing.status())) return existing.status();
  const absl::Status exists_error = absl::AlreadyExistsError(
      absl::StrCat("output directory ", target_.string(), " already exists; pass --overwrite to replace it"));
  if (!existing.ok()) {
    absl::Status s = outer_->Rename(name_, *parent_, name_, RENAME_NOREPLACE);
    if (absl::IsUnimplemented(s)) s = outer_->Rename(name_, *parent_, name_, 0);
    if (!absl::IsAlreadyExists(s)) return s;
    if (!overwrite_) return exists_error;  // it appeared meanwhile
  } else if (!overwrite_) {
    return exists_error;
  }
  // Whatever is at the target, a directory or a symlink planted there, changes places with ours and is
  // removed from inside the staging directory, never followed.
  absl::Status s = outer_->Rename(name_, *parent_, name_, RENAME_EXCHANGE);
  if (s.ok()) *previous = true;
  if (!absl::IsUnimplemented(s)) return s;
  RETURN_IF_ERROR(parent_->Rename(name_, *outer_, kPrevious, 0));
  *previous = true;
  s = outer_->Rename(name_, *parent_, name_, 0);
  if (s.ok()) return s;
  if (absl::Status back = outer_->Rename(kPrevious, *parent_, name_, 0); !back.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat(s.message(), "; restoring the previous ", target_.string(), " also failed (",
                                     back.message(), "): it is at ", (staging() / kPrevious).string()));
  }
  *previous = false;
  return s;
}

absl::Status StagedDir::Commit() {
  if (done_) return absl::FailedPreconditionError("staged directory already committed");
  RETURN_IF_ERROR(inner_->Fsync());
  auto outer_now = parent_->IdOf(staging_name_);
  auto inner_now = outer_->IdOf(name_);
  if (!outer_now.ok() || *outer_now != outer_id_ || !inner_now.ok() || *inner_now != inner_id_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the staging directory ", staging().string(),
        " was moved or replaced during the export (by another user who can write in ", parent_->path().string(),
        "?); nothing was published. Make the models root writable by the daemon's user only"));
  }
  bool previous = false;
  RETURN_IF_ERROR(Publish(&previous));
  done_ = true;
  RETURN_IF_ERROR(parent_->Fsync());
  absl::Status removed = RemoveStaging();
  if (!removed.ok() && previous) {
    return absl::InternalError(absl::StrCat("the new ", target_.string(), " is in place, but its previous version, in ",
                                            staging().string(), ", could not be removed: ", removed.message(),
                                            "; remove it by hand"));
  }
  return absl::OkStatus();
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
    std::optional<StagingOwner> name_owner = TempFileOwner(name);
    if (!name_owner && !IsStagingName(name, &name_pid)) continue;
    std::error_code sec;
    if (!fs::is_directory(fs::symlink_status(p, sec))) continue;  // never follow a symlink out
    auto text = ReadFile(p / kStagingMarker);
    std::optional<StagingOwner> owner;
    if (text.ok()) owner = ParseMarker(*text);
    if (owner ? OwnerAlive(*owner) : name_owner ? NameOwnerAlive(*name_owner, p) : !UnmarkedAndEmpty(p, name_pid)) {
      continue;
    }
    fs::remove_all(p, sec);
    if (sec) return ErrnoStatus(sec.value(), "cannot remove stale staging directory", p);
    ++removed;
  }
  if (ec) return ErrnoStatus(ec.value(), "cannot list", dir);
  return removed;
}

}  // namespace autoquant

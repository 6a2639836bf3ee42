#include "core/util/path_guard.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"

namespace autoquant {
namespace fs = std::filesystem;

namespace {

struct FileId {
  dev_t dev;
  ino_t ino;
  bool operator==(const FileId& o) const { return dev == o.dev && ino == o.ino; }
};

std::optional<FileId> IdOf(const fs::path& p) {
  struct stat st;
  if (::stat(p.c_str(), &st) != 0) return std::nullopt;
  return FileId{st.st_dev, st.st_ino};
}

// Absolute, symlinks in the existing prefix resolved, "." and ".." folded.
fs::path Resolve(const fs::path& p) {
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec);
  if (ec) abs = p;
  fs::path canon = fs::weakly_canonical(abs, ec);
  if (ec) canon = abs.lexically_normal();
  // A trailing separator would make "a/" and "a" compare unequal.
  if (canon.has_filename() || canon == canon.root_path()) return canon;
  return canon.parent_path();
}

// `p` and each of its ancestors, `p` first.
std::vector<fs::path> SelfAndAncestors(const fs::path& p) {
  std::vector<fs::path> out;
  for (fs::path cur = p;; cur = cur.parent_path()) {
    out.push_back(cur);
    if (cur == cur.parent_path() || cur.empty()) break;
  }
  return out;
}

// True if `a` is `b` or lies inside it: by resolved path, and by the identity
// of `b` against every existing ancestor of `a` (catches bind mounts and hard
// links that path comparison misses).
bool IsOrInside(const fs::path& a, const fs::path& b) {
  const fs::path ra = Resolve(a), rb = Resolve(b);
  std::optional<FileId> idb = IdOf(rb);
  for (const fs::path& anc : SelfAndAncestors(ra)) {
    if (anc == rb) return true;
    if (idb) {
      std::optional<FileId> ida = IdOf(anc);
      if (ida && *ida == *idb) return true;
    }
  }
  return false;
}

absl::Status Hit(const fs::path& out, absl::string_view what, const ProtectedInput& in, absl::string_view how) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, " ", out.string(), " ", how, " ", in.what, " (", in.path.string(),
                   "); inputs are never written, whatever --overwrite says: choose an output outside it"));
}

}  // namespace

absl::Status CheckNotInside(const fs::path& dir, absl::string_view what, const std::vector<ProtectedInput>& inputs) {
  for (const ProtectedInput& in : inputs) {
    if (in.path.empty()) continue;
    if (IsOrInside(dir, in.path)) return Hit(dir, what, in, "is or lies inside");
  }
  return absl::OkStatus();
}

namespace {

// The nearest existing ancestor must be a directory we may create entries in.
absl::Status CheckParentWritable(const fs::path& out, absl::string_view what) {
  fs::path parent = Resolve(out).parent_path();
  for (const fs::path& anc : SelfAndAncestors(parent)) {
    std::error_code ec;
    fs::file_status st = fs::status(anc, ec);
    if (ec && ec != std::errc::no_such_file_or_directory) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot inspect ", anc.string(), " for ", what, " ", out.string(), ": ", ec.message()));
    }
    if (!fs::exists(st)) continue;
    if (!fs::is_directory(st)) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, " ", out.string(), ": ", anc.string(), " is not a directory; choose another location"));
    }
    if (::access(anc.c_str(), W_OK | X_OK) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(what, " ", out.string(), ": cannot write into ", anc.string(),
                                                        " (", std::strerror(errno), "); choose a writable location"));
    }
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(what, " ", out.string(), ": no existing parent directory"));
}

}  // namespace

absl::Status CheckDisjoint(const fs::path& path, absl::string_view what, const std::vector<ProtectedInput>& inputs) {
  for (const auto& in : inputs) {
    if (in.path.empty()) continue;
    if (IsOrInside(path, in.path)) {
      const bool same =
          Resolve(path) == Resolve(in.path) || (IdOf(Resolve(path)) && IdOf(Resolve(path)) == IdOf(Resolve(in.path)));
      return Hit(path, what, in, same ? "is" : "lies inside");
    }
    if (IsOrInside(in.path, path)) return Hit(path, what, in, "contains");
  }
  return absl::OkStatus();
}

absl::Status CheckOutputPath(const OutputTarget& out, const std::vector<ProtectedInput>& inputs) {
  if (out.path.empty()) return absl::InvalidArgumentError(absl::StrCat(out.what, " is required"));
  if (auto s = CheckDisjoint(out.path, out.what, inputs); !s.ok()) return s;

  std::error_code ec;
  // symlink_status: a dangling symlink still occupies the name.
  fs::file_status lst = fs::symlink_status(out.path, ec);
  if (fs::exists(lst)) {
    if (!out.overwrite) {
      return absl::AlreadyExistsError(
          absl::StrCat(out.what, " ", out.path.string(), " already exists; pass --overwrite to replace it"));
    }
    fs::file_status st = fs::status(out.path, ec);
    const bool want_dir = out.kind == OutputKind::kDirectory;
    const bool kind_ok = want_dir ? fs::is_directory(st) : fs::is_regular_file(st);
    if (!kind_ok) {
      return absl::FailedPreconditionError(absl::StrCat(
          out.what, " ", out.path.string(), " exists and is not a ", want_dir ? "directory" : "regular file",
          "; --overwrite only replaces a previous output of ours: choose another path"));
    }
    if (!out.is_ours) {
      return absl::FailedPreconditionError(
          absl::StrCat(out.what, " ", out.path.string(), " exists and cannot be recognised as ours"));
    }
    if (absl::Status s = out.is_ours(out.path); !s.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          out.what, " ", out.path.string(), " exists and is not a previous output of autoquant (", s.message(),
          "); --overwrite only replaces our own outputs: remove it yourself or choose another path"));
    }
  }
  return CheckParentWritable(out.path, out.what);
}

}  // namespace autoquant

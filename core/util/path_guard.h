// The one rule for where any command or job may write.
//
// Users keep one base checkpoint and one calibration set and derive
// everything else from them, so writing over either destroys work that cannot
// be regenerated. Every output of every command (CLI and daemon) is checked
// here before anything is computed:
//
//   1. An output never is, contains, or lies inside a protected input (the
//      base model directory, the calibration file, the baseline cache),
//      whatever --overwrite says. Paths are compared after resolving symlinks
//      and "..", and by (device, inode), so a symlink, a bind mount or a hard
//      link to an input is refused too.
//   2. An existing output is replaced only with overwrite, and only when it is
//      the same kind (a file is never replaced by a directory or the reverse)
//      and the caller's recogniser says it is a previous output of ours. A
//      foreign directory or file is never replaced.
//   3. The output's parent directory exists or can be created, and is
//      writable.
//
//   RETURN_IF_ERROR(CheckOutputPath({.path = out, .kind = OutputKind::kDirectory,
//                                    .overwrite = overwrite, .what = "output directory",
//                                    .is_ours = RecogniseScheme},
//                                   {{model_dir, "the base model directory"},
//                                    {calib, "the calibration file"}}));
//
// Thread-safe (reads the filesystem only). Torch-free.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace autoquant {

struct ProtectedInput {
  std::filesystem::path path;  // may not exist yet (a baseline cache)
  std::string what;            // "the base model directory", named in errors
};

enum class OutputKind { kDirectory, kFile };

struct OutputTarget {
  std::filesystem::path path;
  OutputKind kind = OutputKind::kDirectory;
  bool overwrite = false;
  std::string what = "output";  // "output directory", "--output", named in errors
  // OK if the existing `path` is a previous output of ours; otherwise a
  // Status whose message says what it is instead. Required when overwrite is
  // set; called only for an existing path of the right kind.
  std::function<absl::Status(const std::filesystem::path&)> is_ours;
};

// Rule 1 alone, for paths that are written into but never replaced (a
// baseline cache must not lie inside the base model either). InvalidArgument
// naming both paths on a hit.
absl::Status CheckDisjoint(const std::filesystem::path& path, absl::string_view what,
                           const std::vector<ProtectedInput>& inputs);

// Rule 1 for a directory that outputs are written into but that is no output
// itself (the models root, where the daemon also keeps its job store): it
// must not be an input nor lie inside one; it may contain one (a base model
// kept under the models root). InvalidArgument naming both paths on a hit.
absl::Status CheckNotInside(const std::filesystem::path& dir, absl::string_view what,
                            const std::vector<ProtectedInput>& inputs);

// Rules 1-3. InvalidArgument when the output hits an input (or is empty),
// AlreadyExists for an existing output without overwrite, FailedPrecondition
// for an existing output that is not ours or not of this kind, and for a
// parent that is not a writable directory.
absl::Status CheckOutputPath(const OutputTarget& out, const std::vector<ProtectedInput>& inputs);

}  // namespace autoquant

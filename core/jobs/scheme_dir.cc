#include "core/jobs/scheme_dir.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "core/quant/scheme_name.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace fs = std::filesystem;

absl::StatusOr<fs::path> ExistingSchemeDir(const fs::path& models_root, const std::string& scheme) {
  RETURN_IF_ERROR(ValidateSchemeName(scheme));
  const fs::path dir = models_root / scheme;
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("no scheme '", scheme, "' under the models root ", models_root.string(),
                                            ": submit it first (with evaluate to do both)"));
  }
  if (S_ISLNK(st.st_mode) || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir.string(), " is not a scheme directory (", S_ISLNK(st.st_mode) ? "a symbolic link" : "not a directory",
        "); the daemon reads only real directories under ", models_root.string()));
  }
  return dir;
}

}  // namespace autoquant

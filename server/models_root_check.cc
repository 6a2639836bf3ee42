#include "server/models_root_check.h"

#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/file_util.h"

namespace autoquant {

absl::Status CheckOnlyOwnerWrites(const std::filesystem::path& dir, absl::string_view what) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return ErrnoStatus(errno, "cannot stat", dir);
  const bool others_write = (st.st_mode & (S_IWGRP | S_IWOTH)) != 0;
  const bool foreign = st.st_uid != ::geteuid();
  if (!others_write && !foreign) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "%s %s is %s (mode %04o, owner uid %d, this daemon runs as uid %d): another user could swap or plant what "
      "the daemon writes and reads there. %s, or pass --insecure-models-root to start anyway",
      what, dir.string(), foreign ? "owned by another user" : "writable by group or others", st.st_mode & 07777,
      st.st_uid, ::geteuid(),
      foreign ? absl::StrCat("Run the daemon as its owner or `chown ", ::geteuid(), " ", dir.string(), "`")
              : absl::StrCat("`chmod go-w ", dir.string(), "`")));
}

}  // namespace autoquant

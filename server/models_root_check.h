// Who may write the models root: the daemon's own user only, the way sshd's
// StrictModes treats ~/.ssh. Another user who can create, rename or remove
// entries in the models root (or in its .autoquant/, which holds the job
// store, the baselines and the blobs) can race the daemon's checks, plant
// what it reads and swap what it publishes; the daemon holds its directories
// by descriptor (dir_handle.h) to narrow that, and refuses to start in such a
// root unless told --insecure-models-root.
#pragma once

#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace autoquant {

// FailedPrecondition naming `dir` (called `what`), its owner and mode, and
// the fix (chmod go-w / chown, or --insecure-models-root) when it is writable
// by group or others or owned by a user other than this process's effective
// user; NotFound when it does not exist. Symlinks are followed: the
// directory itself is what matters.
absl::Status CheckOnlyOwnerWrites(const std::filesystem::path& dir, absl::string_view what);

}  // namespace autoquant

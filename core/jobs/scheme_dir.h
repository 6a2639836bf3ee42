// Where a scheme named in a request lives under the models root, for reading
// it (evaluation, reports). Torch-free.
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"

namespace autoquant {

// The existing scheme directory `scheme` names under `models_root`, for
// reading it (evaluation, reports): InvalidArgument for a name that is not one
// plain path component, NotFound when absent, FailedPrecondition for a symbolic
// link or a non-directory (never followed out of the root).
absl::StatusOr<std::filesystem::path> ExistingSchemeDir(const std::filesystem::path& models_root,
                                                        const std::string& scheme);

}  // namespace autoquant

// What a scheme may be called. The name becomes part of file names inside
// the scheme directory (layer-sensitivity/<scheme>_quant_manifest.json), so
// it must be one plain path component: a name like "../../evil" would write
// manifests outside the scheme.
//
// Accepted: 1 to 128 characters from [A-Za-z0-9._+-], not starting with a
// dot ("." / ".." and hidden names are refused, and staging directories are
// hidden names) nor with '-' (the name becomes an argument on command lines,
// where it would read as an option).
//
// Torch-free; thread-safe.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace autoquant {

inline constexpr size_t kMaxSchemeNameLength = 128;

// InvalidArgument naming the problem and the accepted form.
absl::Status ValidateSchemeName(absl::string_view name);

}  // namespace autoquant

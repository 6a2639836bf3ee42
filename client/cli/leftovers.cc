#include "client/cli/leftovers.h"

#include "absl/status/statusor.h"
#include "core/util/file_util.h"

namespace autoquant::cli {

void RemoveLeftoversBeside(const std::filesystem::path& out, std::ostream& log) {
  const std::filesystem::path parent = std::filesystem::absolute(out).lexically_normal().parent_path();
  absl::StatusOr<int> removed = RemoveStaleStaging(parent);
  if (!removed.ok()) {
    log << "autoquant: warning: " << removed.status().message() << "\n";
  } else if (*removed > 0) {
    log << "removed " << *removed << (*removed == 1 ? " leftover" : " leftovers")
        << " of interrupted runs (staging directories, temporary files) in " << parent.string() << "\n";
  }
}

}  // namespace autoquant::cli

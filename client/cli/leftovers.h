// Removing what killed runs left next to an output, before writing it.
//
// Every command that writes an output first clears the leftovers of dead
// processes in the directory it writes into: staging directories of killed
// exports and temporary files of killed atomic writes (RemoveStaleStaging,
// file_util.h). Cleaning up is a courtesy: a failure is a warning on `log`,
// never a reason to stop the command.
//
//   RemoveLeftoversBeside(options.out, std::cerr);
#pragma once

#include <filesystem>
#include <ostream>

namespace autoquant::cli {

// Clears the leftovers in `out`'s parent directory; reports what it removed,
// or why it could not, on `log`.
void RemoveLeftoversBeside(const std::filesystem::path& out, std::ostream& log);

}  // namespace autoquant::cli

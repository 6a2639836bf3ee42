#include "client/cli/diff_command.h"

#include <iostream>

#include "core/quant/diversity.h"
#include "core/util/status_macros.h"

namespace autoquant::cli {

absl::Status RunDiff(const DiffOptions& o, std::ostream& out) {
  std::vector<std::filesystem::path> dirs(o.dirs.begin(), o.dirs.end());
  ASSIGN_OR_RETURN(DiversityReport r, CheckDiversity(dirs));
  out << (o.json ? r.ToJson().dump(2) + "\n" : r.ToText());
  if (!r.ok()) {
    return absl::FailedPreconditionError("schemes are identical or disagree with their manifests (see report)");
  }
  return absl::OkStatus();
}

void AddDiffCommand(CLI::App& app, absl::Status* status) {
  auto o = std::make_shared<DiffOptions>();
  CLI::App* cmd = app.add_subcommand("diff", "Check that scheme directories really differ and match their manifests");
  cmd->add_option("dirs", o->dirs, "scheme directories")->required()->expected(1, -1);
  cmd->add_flag("--json", o->json, "machine-readable report");
  cmd->callback([o, status] { *status = RunDiff(*o, std::cout); });
}

}  // namespace autoquant::cli

#include "client/cli/diff_command.h"

#include <iostream>

#include "core/scheme/integrity.h"
#include "core/scheme/scheme_diff.h"
#include "core/util/status_macros.h"

namespace autoquant::cli {

absl::Status RunDiff(const DiffOptions& o, std::ostream& out) {
  std::vector<std::filesystem::path> dirs(o.dirs.begin(), o.dirs.end());
  // A manifest says what the bytes must be; bytes that changed since export
  // would make every comparison below meaningless.
  for (const auto& d : dirs) RETURN_IF_ERROR(VerifySchemeIntegrity(d));
  ASSIGN_OR_RETURN(SchemeDiffReport r, DiffSchemes(dirs));
  out << (o.json ? r.ToJson().dump(2) + "\n" : r.ToText());
  if (!r.ok()) {
    // A failed check, not a bad request: exit 1.
    return absl::DataLossError("schemes are identical or disagree with their manifests (see report)");
  }
  return absl::OkStatus();
}

void AddDiffCommand(CLI::App& app, absl::Status* status) {
  auto o = std::make_shared<DiffOptions>();
  CLI::App* cmd = app.add_subcommand(
      "diff", "Verify schemes' tensor digests, and that they really differ and match their manifests");
  cmd->add_option("dirs", o->dirs, "scheme directories")->required()->expected(1, -1)->check(CLI::ExistingDirectory);
  cmd->add_flag("--json", o->json, "machine-readable report");
  cmd->callback([o, status] { *status = RunDiff(*o, std::cout); });
}

}  // namespace autoquant::cli

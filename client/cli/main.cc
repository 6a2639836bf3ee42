// The `autoquant` command line. Each subcommand lives in its own file and
// reports an absl::Status; this file only parses argv and maps the Status to
// a message on stderr and an exit code (exit_codes.h).
#include <functional>
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "client/cli/calib_command.h"
#include "client/cli/diff_command.h"
#include "client/cli/exit_codes.h"
#include "client/cli/gc_command.h"
#include "client/cli/inspect_command.h"
#include "client/cli/model_command.h"
#include "client/cli/numerics_command.h"
#include "client/cli/quantize_command.h"
#include "client/cli/remote/remote_commands.h"
#include "client/cli/report_command.h"
#include "core/util/allocator_env.h"

int main(int argc, char** argv) {
  autoquant::PreferExpandableCudaSegments();
  using namespace autoquant::cli;
  CLI::App app{"autoquant: mixed-precision (NVFP4, FP8) AutoQuant schemes for Qwen2.5-VL"};
  app.set_version_flag("--version", std::string("autoquant ") + AUTOQUANT_VERSION);
  app.require_subcommand(1);
  app.footer(kExitCodesHelp);
  // Subcommands inherit this: every --help shows each option's default.
  app.option_defaults()->always_capture_default();
  absl::Status status;
  AddInspectCommand(app, &status);
  AddNumericsCommand(app, &status);
  AddModelCommand(app, &status);
  AddCalibCommand(app, &status);
  AddQuantizeCommand(app, &status);
  AddDiffCommand(app, &status);
  AddGcCommand(app, &status);
  bool asked_daemon = false;
  AddReportCommand(app, &status, &asked_daemon);
  bool remote = false;
  AddRemoteCommands(app, &status, &remote);
  // Every subcommand's --help states the exit codes too, after its own footer,
  // once (a subcommand may have inherited them with its parent's footer).
  std::function<void(CLI::App*)> add_exit_codes = [&](CLI::App* a) {
    for (CLI::App* sub : a->get_subcommands([](CLI::App*) { return true; })) {
      const std::string footer = sub->get_footer();
      if (footer.find(kExitCodesHelp) == std::string::npos) {
        sub->footer(footer.empty() ? kExitCodesHelp : footer + "\n" + kExitCodesHelp);
      }
      add_exit_codes(sub);
    }
  };
  add_exit_codes(&app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version come here too, with exit code 0.
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  if (!status.ok()) {
    std::cerr << "autoquant: error: " << status.message() << "\n";
    return remote || asked_daemon ? RemoteExitCodeFor(status) : ExitCodeFor(status);
  }
  return kExitOk;
}

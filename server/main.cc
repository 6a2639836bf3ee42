// autoquantd: the GPU-resident AutoQuant daemon. See server/daemon.h.
// Exit codes: 0 clean shutdown, 1 failure to start, 2 bad flags.
#include <iostream>

#include "CLI/CLI.hpp"
#include "autoquant/v1/autoquant.pb.h"
#include "core/util/allocator_env.h"
#include "core/util/build_info.h"
#include "server/daemon.h"
#include "server/daemon_options.h"

int main(int argc, char** argv) {
  autoquant::PreferExpandableCudaSegments();
  CLI::App app{"autoquantd: GPU-resident AutoQuant daemon (gRPC service autoquant.v1.AutoQuant)"};
  app.footer(
      "Every flag can also be set in the environment (Env: above); the command line wins, then --config.\n"
      "Exit codes: 0 clean shutdown (SIGTERM/SIGINT), 1 failure to start, 2 bad flags.");
  app.set_version_flag("--version", autoquant::BuildInfoString(autoquant::GetBuildInfo()) + " [api " +
                                        autoquant::v1::Job::descriptor()->file()->package() + "]");
  autoquant::DaemonOptions options;
  autoquant::AddDaemonOptions(app, &options);
  autoquant::AddDaemonEnvNames(app);  // after every flag, so none is missed
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  absl::Status s = autoquant::FinishDaemonOptions(&options);
  if (!s.ok()) {
    std::cerr << "autoquantd: error: " << s.message() << "\n";
    return 2;
  }
  return autoquant::RunDaemon(options);
}

// autoquantd entry point. The service itself arrives with the daemon issue;
// for now it reports its version and what it was built against, which is what
// deployment checks need to verify a build.
#include <iostream>

#include "CLI/CLI.hpp"
#include "autoquant/v1/autoquant.pb.h"
#include "core/util/build_info.h"

int main(int argc, char** argv) {
  CLI::App app{"autoquantd: GPU-resident AutoQuant daemon"};
  bool version = false;
  app.add_flag("--version", version, "print version and build information");
  CLI11_PARSE(app, argc, argv);
  std::cout << autoquant::BuildInfoString(autoquant::GetBuildInfo()) << " [api "
            << autoquant::v1::Job::descriptor()->file()->package() << "]\n";
  return 0;
}

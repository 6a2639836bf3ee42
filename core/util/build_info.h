// What this binary was built with and what it sees at run time. Torch-free
// header, so gRPC-side code (which must not see torch's include directory:
// it ships its own protobuf and fmt headers) can report it.
#pragma once

#include <string>

namespace autoquant {

struct BuildInfo {
  std::string version;         // autoquant
  std::string torch_version;   // LibTorch the binary links
  bool cuda_compiled = false;  // LibTorch built with CUDA
  long cuda_runtime = 0;       // CUDA runtime version LibTorch was built against
  int cuda_devices = 0;        // devices visible now
};

BuildInfo GetBuildInfo();
std::string BuildInfoString(const BuildInfo& info);

}  // namespace autoquant

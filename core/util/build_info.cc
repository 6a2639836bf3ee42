#include "core/util/build_info.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include "absl/strings/str_cat.h"

namespace autoquant {

BuildInfo GetBuildInfo() {
  BuildInfo info;
  info.version = AUTOQUANT_VERSION;
  info.torch_version = TORCH_VERSION;
  // The CUDA hooks are registered only when libtorch_cuda is linked in; the
  // stand-in hooks throw. cudaRuntimeGetVersion needs no device.
  try {
    info.cuda_runtime = at::detail::getCUDAHooks().versionCUDART();
    info.cuda_compiled = info.cuda_runtime > 0;
  } catch (...) {
    info.cuda_compiled = false;
  }
  info.cuda_devices = static_cast<int>(torch::cuda::device_count());
  return info;
}

std::string BuildInfoString(const BuildInfo& info) {
  return absl::StrCat("autoquant ", info.version, " (torch ", info.torch_version, ", ",
                      info.cuda_compiled ? absl::StrCat("CUDA runtime ", info.cuda_runtime) : std::string("no CUDA"),
                      ", cuda devices ", info.cuda_devices, ")");
}

}  // namespace autoquant

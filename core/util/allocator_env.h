// The CUDA caching allocator's configuration, set before CUDA is first used.
#pragma once

#include <cstdlib>

namespace autoquant {

// Asks for expandable segments unless the user configured the allocator
// (PYTORCH_CUDA_ALLOC_CONF or PYTORCH_ALLOC_CONF): scoring alternates
// multi-GB head buffers with per-layer ones, and fixed-size segments left
// gigabytes of a 7B model's peak as fragmentation. Call at the start of main.
inline void PreferExpandableCudaSegments() {
  if (std::getenv("PYTORCH_CUDA_ALLOC_CONF") == nullptr && std::getenv("PYTORCH_ALLOC_CONF") == nullptr) {
    ::setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True", /*overwrite=*/0);
  }
}

}  // namespace autoquant

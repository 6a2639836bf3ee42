// What the CUDA caching allocator and the driver say about a device's memory:
// the one place that reads them (the engine's metrics and peaks, the scoring
// pass's choice of how much autograd graph to keep). Every function returns 0
// / does nothing for a CPU device. Thread-safe, and none throws: a read that
// torch or the driver refuses (a device in an error state) gives zeros, so that
// a caller on a thread of its own (autoquantd's metrics sampler) cannot be
// ended by an exception.
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace autoquant {

struct DeviceMemoryStats {
  int64_t total = 0;          // the device's memory
  int64_t allocated = 0;      // held by live tensors
  int64_t reserved = 0;       // held by the caching allocator (allocated + cached)
  int64_t peak_reserved = 0;  // since the last ResetPeakReserved
};

DeviceMemoryStats DeviceMemoryNow(const torch::Device& device);

// What a new allocation could still get: the driver's free memory plus what
// the caching allocator holds unused.
int64_t AvailableDeviceBytes(const torch::Device& device);

void ResetPeakReserved(const torch::Device& device);

}  // namespace autoquant

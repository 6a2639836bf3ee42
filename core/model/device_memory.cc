#include "core/model/device_memory.h"

#include <ATen/cuda/CUDAContextLight.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>

#include "core/util/torch_status.h"

namespace autoquant {
namespace {

c10::DeviceIndex Index(const torch::Device& d) { return d.index() < 0 ? 0 : d.index(); }

}  // namespace

DeviceMemoryStats DeviceMemoryNow(const torch::Device& device) {
  if (!device.is_cuda()) return {};
  absl::StatusOr<DeviceMemoryStats> read = TorchCall([&] {
    DeviceMemoryStats m;
    const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(Index(device));
    m.total = static_cast<int64_t>(at::cuda::getDeviceProperties(Index(device))->totalGlobalMem);
    m.allocated = stats.allocated_bytes[agg].current;
    m.reserved = stats.reserved_bytes[agg].current;
    m.peak_reserved = stats.reserved_bytes[agg].peak;
    return m;
  });
  return read.ok() ? *read : DeviceMemoryStats{};
}

int64_t AvailableDeviceBytes(const torch::Device& device) {
  if (!device.is_cuda()) return 0;
  absl::StatusOr<int64_t> free_bytes = TorchCall([&]() -> int64_t {
    c10::cuda::CUDAGuard guard(Index(device));
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) != cudaSuccess) {
      cudaGetLastError();  // clear it: the next CUDA call must not see this error as its own
      return 0;
    }
    return static_cast<int64_t>(free);
  });
  if (!free_bytes.ok() || *free_bytes == 0) return 0;
  const DeviceMemoryStats m = DeviceMemoryNow(device);
  return *free_bytes + (m.reserved - m.allocated);
}

void ResetPeakReserved(const torch::Device& device) {
  if (!device.is_cuda()) return;
  TorchCall([&] { c10::cuda::CUDACachingAllocator::resetPeakStats(Index(device)); }).IgnoreError();
}

}  // namespace autoquant

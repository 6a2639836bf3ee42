// Page-locked host buffers, kept for reuse across exports.
//
// A standalone export on the GPU copies every FP8 weight back into page-locked
// memory (asynchronous copies need it). Allocating it per weight through
// torch's caching host allocator cost 6 ms a weight on the GPU machine under
// the writers' load (export-trace.txt in bench/results/2026-11-24-h200-export):
// more than quantizing. Here buffers come from free lists by size class (powers
// of two from 64 KiB); a tensor's deleter returns its buffer, and free buffers
// beyond `keep_bytes` are given back to the driver.
//
//   ASSIGN_OR_RETURN(torch::Tensor host, PinnedPool::Shared().Empty(q.sizes(), q.scalar_type()));
//   host.copy_(q, /*non_blocking=*/true);   // then synchronize the stream before reading it
//
// Thread-safe. Needs a CUDA device (cudaHostAlloc); ResourceExhausted when the
// driver refuses the memory.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"

namespace autoquant {

class PinnedPool {
 public:
  explicit PinnedPool(uint64_t keep_bytes) : keep_bytes_(keep_bytes) {}
  ~PinnedPool();
  PinnedPool(const PinnedPool&) = delete;
  PinnedPool& operator=(const PinnedPool&) = delete;

  // The process's pool (1 GiB of free buffers kept); never destroyed, since
  // tensors from it may outlive static destruction.
  static PinnedPool& Shared();

  // An uninitialized host tensor in page-locked memory.
  absl::StatusOr<torch::Tensor> Empty(c10::IntArrayRef sizes, c10::ScalarType dtype);

  uint64_t free_bytes() const;
  uint64_t allocations() const;  // buffers obtained from the driver so far

 private:
  static uint64_t SizeClass(uint64_t nbytes);
  void Release(void* p, uint64_t size_class);

  const uint64_t keep_bytes_;
  mutable std::mutex mu_;
  std::map<uint64_t, std::vector<void*>> free_;  // size class -> buffers
  uint64_t free_bytes_ = 0;
  uint64_t allocations_ = 0;
};

}  // namespace autoquant

#include "core/quant/pinned_pool.h"

#include <cuda_runtime_api.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace autoquant {

PinnedPool::~PinnedPool() {
  for (auto& [_, buffers] : free_) {
    for (void* p : buffers) cudaFreeHost(p);
  }
}

PinnedPool& PinnedPool::Shared() {
  static PinnedPool* pool = new PinnedPool(1ull << 30);
  return *pool;
}

uint64_t PinnedPool::SizeClass(uint64_t nbytes) {
  uint64_t c = 64 << 10;
  while (c < nbytes) c <<= 1;
  return c;
}

absl::StatusOr<torch::Tensor> PinnedPool::Empty(c10::IntArrayRef sizes, c10::ScalarType dtype) {
  uint64_t nbytes = c10::elementSize(dtype);
  for (int64_t s : sizes) nbytes *= static_cast<uint64_t>(s);
  const uint64_t size_class = SizeClass(nbytes);
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(size_class);
    if (it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      free_bytes_ -= size_class;
    }
  }
  if (p == nullptr) {
    const cudaError_t err = cudaHostAlloc(&p, size_class, cudaHostAllocDefault);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error state of this thread
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", size_class,
                                                       " bytes of page-locked host memory: ",
                                                       cudaGetErrorString(err)));
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++allocations_;
  }
  return torch::from_blob(
      p, sizes, [this, size_class](void* q) { Release(q, size_class); },
      torch::TensorOptions().dtype(dtype).device(torch::kCPU));
}

void PinnedPool::Release(void* p, uint64_t size_class) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_bytes_ + size_class <= keep_bytes_) {
      free_[size_class].push_back(p);
      free_bytes_ += size_class;
      return;
    }
  }
  cudaFreeHost(p);
}

uint64_t PinnedPool::free_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return free_bytes_;
}

uint64_t PinnedPool::allocations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return allocations_;
}

}  // namespace autoquant

#include "core/model/layers/fused_kernels.h"

#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>

namespace autoquant {

bool FusedKernelApplies(std::initializer_list<const torch::Tensor*> tensors) {
  if (!kernels::Enabled() || tensors.size() == 0) return false;
  const torch::Tensor& first = **tensors.begin();
  if (!first.defined() || !first.is_cuda()) return false;
  const auto dtype = first.scalar_type();
  if (dtype != torch::kFloat32 && dtype != torch::kBFloat16 && dtype != torch::kFloat16) return false;
  const bool grad = torch::GradMode::is_enabled();
  for (const torch::Tensor* t : tensors) {
    if (!t->defined() || t->device() != first.device() || t->scalar_type() != dtype || !t->is_contiguous()) {
      return false;
    }
    if (grad && t->requires_grad()) return false;
  }
  return true;
}

kernels::DType KernelDType(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kBFloat16:
      return kernels::DType::kBFloat16;
    case torch::kFloat16:
      return kernels::DType::kFloat16;
    default:
      return kernels::DType::kFloat32;
  }
}

void* KernelStream(const torch::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

void CheckKernelLaunch(const std::string& error) { TORCH_CHECK(error.empty(), "CUDA kernel ", error); }

}  // namespace autoquant

// The torch side of core/kernels: when a fused CUDA kernel may stand in for
// its reference composition of torch ops, and the arguments it takes.
//
// A kernel applies only where it computes exactly what the reference does
// for these tensors and nothing else is lost: kernels on (kernels::Enabled()),
// every tensor on one CUDA device, contiguous, of one dtype among float32,
// bfloat16 and float16, and no gradient to record (the kernels have no
// backward: with grad mode on and an input that requires grad, the
// reference runs and autograd sees its ops).
#pragma once

#include <torch/types.h>

#include <initializer_list>
#include <string>

#include "core/kernels/kernels.h"

namespace autoquant {

bool FusedKernelApplies(std::initializer_list<const torch::Tensor*> tensors);
kernels::DType KernelDType(const torch::Tensor& t);
// The current CUDA stream of t's device, as the launchers take it.
void* KernelStream(const torch::Tensor& t);
// Throws c10::Error with the launch's message (callers run under TorchCall,
// which turns it into an absl::Status).
void CheckKernelLaunch(const std::string& error);

}  // namespace autoquant

#include "core/quant/fp8.h"

#include <ATen/ATen.h>

#include "core/model/layers/fused_kernels.h"

namespace autoquant {

torch::Tensor Amax(const torch::Tensor& x) {
  if (x.numel() == 0) return torch::zeros({}, x.options().dtype(torch::kFloat32));
  return x.detach().abs().amax().to(torch::kFloat32);
}

void AccumulateAmax(const torch::Tensor& x, torch::Tensor* acc) {
  torch::NoGradGuard no_grad;
  if (!acc->defined()) *acc = torch::zeros({}, x.options().dtype(torch::kFloat32));
  if (FusedKernelApplies({&x}) && acc->device() == x.device() && acc->is_contiguous()) {
    CheckKernelLaunch(
        kernels::AccumulateAbsMax(x.data_ptr(), x.numel(), KernelDType(x), acc->data_ptr<float>(), KernelStream(x)));
    return;
  }
  acc->copy_(torch::maximum(*acc, Amax(x)));
}

torch::Tensor Fp8ScaleFromAmax(const torch::Tensor& amax) {
  torch::Tensor a = amax.to(torch::kFloat32);
  torch::Tensor ok = torch::isfinite(a) & (a > 0);
  return torch::where(ok, a / kFp8E4M3Max, torch::ones_like(a));
}

torch::Tensor QuantizeFp8(const torch::Tensor& x, const torch::Tensor& scale) {
  torch::Tensor s = scale.to(x.device(), torch::kFloat32);
  if (s.numel() == 1 && FusedKernelApplies({&x})) {
    // One pass instead of four, without the float32 copy of x.
    s = s.contiguous();
    torch::Tensor q = torch::empty(x.sizes(), x.options().dtype(torch::kFloat8_e4m3fn));
    CheckKernelLaunch(kernels::QuantizeFp8(x.data_ptr(), q.data_ptr(), x.numel(), KernelDType(x), s.data_ptr<float>(),
                                           KernelStream(x)));
    return q;
  }
  return (x.to(torch::kFloat32) / s).clamp(-kFp8E4M3Max, kFp8E4M3Max).to(torch::kFloat8_e4m3fn);
}

torch::Tensor DequantizeFp8(const torch::Tensor& q, const torch::Tensor& scale) {
  return q.to(torch::kFloat32) * scale.to(q.device(), torch::kFloat32);
}

torch::Tensor FakeQuantFp8(const torch::Tensor& x, const torch::Tensor& amax) {
  torch::Tensor a = amax.to(x.device(), torch::kFloat32);
  if (a.numel() == 1 && FusedKernelApplies({&x})) {
    // One pass instead of the ten ops below; the same arithmetic (kernels.h).
    a = a.contiguous();
    torch::Tensor y = torch::empty_like(x);
    CheckKernelLaunch(kernels::FakeQuantFp8(x.data_ptr(), y.data_ptr(), x.numel(), KernelDType(x), a.data_ptr<float>(),
                                            KernelStream(x)));
    return y;
  }
  a = torch::where(torch::isfinite(a) & (a > 5.9604644775390625e-08f), a, torch::ones_like(a));
  torch::Tensor s = kFp8E4M3Max / a;
  torch::Tensor q = (x.to(torch::kFloat32) * s).clamp(-kFp8E4M3Max, kFp8E4M3Max).to(torch::kFloat8_e4m3fn);
  return (q.to(torch::kFloat32) * (1.0f / s)).to(x.scalar_type());
}

}  // namespace autoquant

#include "core/model/layers/rotary.h"

#include <ATen/ATen.h>

#include "core/model/layers/fused_kernels.h"

namespace autoquant {

torch::Tensor RotateHalf(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

torch::Tensor RopeInvFreq(int64_t dim, double base) {
  // transformers: 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
  // Python's `1.0 / t` is t.reciprocal() * 1.0, and `base ** t` is pow(Scalar, t)
  // computed in t's dtype; mirror both so the values match to the bit.
  torch::Tensor exponent = torch::arange(0, dim, 2, torch::dtype(torch::kFloat32)) / dim;
  return at::pow(c10::Scalar(base), exponent).reciprocal();
}

std::pair<torch::Tensor, torch::Tensor> ApplyRotaryFloat32(const torch::Tensor& q, const torch::Tensor& k,
                                                           const torch::Tensor& cos, const torch::Tensor& sin) {
  torch::Tensor qf = q.to(torch::kFloat32), kf = k.to(torch::kFloat32);
  torch::Tensor c = cos.unsqueeze(-2).to(torch::kFloat32), s = sin.unsqueeze(-2).to(torch::kFloat32);
  torch::Tensor q_out = qf * c + RotateHalf(qf) * s;
  torch::Tensor k_out = kf * c + RotateHalf(kf) * s;
  return {q_out.to(q.scalar_type()), k_out.to(k.scalar_type())};
}

namespace {

// The fused kernel on x [B, H, S, D] laid out as [B, S, H, D] (the projection's output, transposed), with
// cos / sin [B, 1, S, D]; an undefined tensor where it does not apply.
torch::Tensor FusedRotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  if (x.dim() != 4 || cos.dim() != 4 || cos.sizes() != sin.sizes() || cos.size(0) != x.size(0) || cos.size(1) != 1 ||
      cos.size(2) != x.size(2) || cos.size(3) != x.size(3) || x.size(3) % 2 != 0) {
    return {};
  }
  torch::Tensor bshd = x.transpose(1, 2);
  if (!FusedKernelApplies({&bshd, &cos, &sin})) return {};
  torch::Tensor out = torch::empty_like(bshd);
  CheckKernelLaunch(kernels::Rotary(bshd.data_ptr(), cos.data_ptr(), sin.data_ptr(), out.data_ptr(), bshd.size(0),
                                    bshd.size(1), bshd.size(2), bshd.size(3), KernelDType(out), KernelStream(out)));
  return out.transpose(1, 2);
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> ApplyRotaryInDtype(const torch::Tensor& q, const torch::Tensor& k,
                                                           const torch::Tensor& cos, const torch::Tensor& sin) {
  torch::Tensor qf = FusedRotary(q, cos, sin), kf = FusedRotary(k, cos, sin);
  if (qf.defined() && kf.defined()) return {qf, kf};
  return {q * cos + RotateHalf(q) * sin, k * cos + RotateHalf(k) * sin};
}

}  // namespace autoquant

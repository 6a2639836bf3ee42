#include "core/quant/nvfp4.h"

#include <ATen/ATen.h>

#include "core/model/layers/fused_kernels.h"
#include "core/quant/fp8.h"

namespace autoquant {
namespace {

constexpr float kNvfp4AmaxToGlobal = kE2M1Max * kFp8E4M3Max;  // 2688

// [..., n] -> [..., n / 16, 16]
torch::Tensor Blocks(const torch::Tensor& x) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  TORCH_CHECK(!shape.empty() && shape.back() % kNvfp4Block == 0, "NVFP4 needs the last dimension (",
              shape.empty() ? 0 : shape.back(), ") to be a multiple of ", kNvfp4Block);
  shape.back() /= kNvfp4Block;
  shape.push_back(kNvfp4Block);
  return x.reshape(shape);
}

torch::Tensor Unblocks(const torch::Tensor& x) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end() - 1);
  shape.back() *= kNvfp4Block;
  return x.reshape(shape);
}

// max |x| per block, float32 [..., n / 16, 1].
torch::Tensor BlockAmax(const torch::Tensor& blocks) {
  return std::get<0>(blocks.abs().max(-1, /*keepdim=*/true)).to(torch::kFloat32);
}

const torch::Tensor& Bounds(const torch::Device& d) {
  thread_local torch::Tensor cpu = torch::tensor({0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f});
  thread_local torch::Tensor cached;
  if (!cached.defined() || cached.device() != d) cached = cpu.to(d);
  return cached;
}

const torch::Tensor& Values(const torch::Device& d) {
  thread_local torch::Tensor cpu =
      torch::tensor({0.f, 0.5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f, -0.f, -0.5f, -1.f, -1.5f, -2.f, -3.f, -4.f, -6.f});
  thread_local torch::Tensor cached;
  if (!cached.defined() || cached.device() != d) cached = cpu.to(d);
  return cached;
}

// The E2M1 magnitude nearest |scaled| (ties to the even code), float32.
torch::Tensor RoundMagnitude(const torch::Tensor& abs_scaled) { return E2M1Values(E2M1Codes(abs_scaled)); }

}  // namespace

torch::Tensor E2M1Codes(const torch::Tensor& scaled) {
  torch::Tensor a = scaled.abs();
  const torch::Tensor& b = Bounds(a.device());
  // Bounds strictly below |x| count; a tie at an odd bound (0.75, 1.75, 3.5) rounds up to the even code.
  torch::Tensor ord = torch::searchsorted(b, a.contiguous(), /*out_int32=*/true).to(torch::kUInt8);
  torch::Tensor tie_up = (a == 0.75f) | (a == 1.75f) | (a == 3.5f);
  ord = ord + tie_up.to(torch::kUInt8);
  return ord + (scaled < 0).to(torch::kUInt8) * 8;
}

torch::Tensor E2M1Values(const torch::Tensor& codes) { return Values(codes.device()).index({codes.to(torch::kLong)}); }

torch::Tensor PackE2M1(const torch::Tensor& codes) {
  using torch::indexing::Slice;
  torch::Tensor even = codes.index({"...", Slice(0, torch::indexing::None, 2)});
  torch::Tensor odd = codes.index({"...", Slice(1, torch::indexing::None, 2)});
  return torch::bitwise_or(torch::bitwise_left_shift(odd, 4), even).contiguous();
}

torch::Tensor UnpackE2M1(const torch::Tensor& packed) {
  torch::Tensor lo = torch::bitwise_and(packed, 0x0F);
  torch::Tensor hi = torch::bitwise_right_shift(packed, 4);
  std::vector<int64_t> shape(packed.sizes().begin(), packed.sizes().end());
  shape.back() *= 2;
  return torch::stack({lo, hi}, -1).reshape(shape);
}

torch::Tensor Nvfp4GlobalScaleFromAmax(const torch::Tensor& amax) {
  return amax.to(torch::kFloat32) / kNvfp4AmaxToGlobal;
}

Nvfp4Tensor QuantizeNvfp4(const torch::Tensor& w, const torch::Tensor& amax) {
  torch::Tensor g = Nvfp4GlobalScaleFromAmax(amax.to(w.device()));
  torch::Tensor blocks = Blocks(w);
  // ModelOpt: per_block_amax / (6 * g); an all-zero block gets scale 1; clamp to E4M3's range before the cast.
  torch::Tensor s = BlockAmax(blocks) / (kE2M1Max * g);
  s = torch::where(s == 0, torch::ones_like(s), s);
  torch::Tensor s8 = s.clamp(1.0f / 512.0f, kFp8E4M3Max).to(torch::kFloat8_e4m3fn);
  torch::Tensor scaled = blocks.to(torch::kFloat32) / (s8.to(torch::kFloat32) * g);
  Nvfp4Tensor q;
  q.packed = PackE2M1(E2M1Codes(Unblocks(scaled)));
  q.block_scale = s8.squeeze(-1).contiguous();
  q.global_scale = g;
  return q;
}

torch::Tensor DequantizeNvfp4(const Nvfp4Tensor& q) {
  torch::Tensor v = Blocks(E2M1Values(UnpackE2M1(q.packed)));
  torch::Tensor s = q.block_scale.to(torch::kFloat32).unsqueeze(-1) * q.global_scale.to(q.packed.device());
  return Unblocks(v * s);
}

torch::Tensor FakeQuantNvfp4(const torch::Tensor& x, const torch::Tensor& amax) {
  // ModelOpt's fake quantizer (fp4_fake_quant_block): g = amax / 2688 (1e-12 when not positive);
  // s = e4m3(min(block_amax / (6 g), 448)) * g, 1 where below 1e-5; y = sign(x) e2m1(|x| / s) s.
  TORCH_CHECK(x.dim() > 0 && x.size(-1) % kNvfp4Block == 0, "NVFP4 needs the last dimension to be a multiple of ",
              kNvfp4Block);
  torch::Tensor a = amax.to(x.device(), torch::kFloat32);
  if (a.numel() == 1 && x.is_contiguous() && FusedKernelApplies({&x})) {
    // One pass instead of the dozen ops below; the same arithmetic (kernels.h).
    a = a.contiguous();
    torch::Tensor y = torch::empty_like(x);
    CheckKernelLaunch(kernels::FakeQuantNvfp4(x.data_ptr(), y.data_ptr(), x.numel(), KernelDType(x),
                                              a.data_ptr<float>(), KernelStream(x)));
    return y;
  }
  torch::Tensor g = Nvfp4GlobalScaleFromAmax(amax.to(x.device()));
  g = torch::where(g > 0, g, torch::full_like(g, 1e-12f));
  torch::Tensor blocks = Blocks(x).to(torch::kFloat32);
  torch::Tensor s = (BlockAmax(blocks) / (kE2M1Max * g)).clamp_max(kFp8E4M3Max);
  s = s.to(torch::kFloat8_e4m3fn).to(torch::kFloat32) * g;
  s = torch::where(s >= 1e-5f, s, torch::ones_like(s));
  torch::Tensor r = RoundMagnitude(blocks.abs() / s) * s;
  return Unblocks(torch::where(blocks >= 0, r, -r)).to(x.scalar_type());
}

torch::Tensor QuantDequantNvfp4Input(const torch::Tensor& x, const torch::Tensor& global_scale) {
  // vLLM's ref_nvfp4_quant and the dequantization in run_nvfp4_emulations.
  auto reciprocal = [](const torch::Tensor& t) { return torch::where(t == 0, torch::zeros_like(t), 1.0 / t); };
  torch::Tensor gs = global_scale.to(x.device(), torch::kFloat32);
  torch::Tensor blocks = Blocks(x);
  torch::Tensor scale = gs * (BlockAmax(blocks) * (1.0 / 6.0));
  scale = scale.clamp(-kFp8E4M3Max, kFp8E4M3Max).to(torch::kFloat8_e4m3fn).to(torch::kFloat32);
  torch::Tensor out_scale = reciprocal(scale * reciprocal(gs));
  torch::Tensor clipped = (blocks.to(torch::kFloat32) * out_scale).clamp(-kE2M1Max, kE2M1Max);
  torch::Tensor q = RoundMagnitude(clipped.abs()) * torch::sign(clipped);
  return Unblocks(q * (scale / gs)).to(x.scalar_type());
}

torch::Tensor DequantizeNvfp4AsVllm(const torch::Tensor& packed, const torch::Tensor& block_scale,
                                    const torch::Tensor& global_scale, torch::ScalarType dtype) {
  torch::Tensor v = Blocks(E2M1Values(UnpackE2M1(packed)));
  torch::Tensor sf = block_scale.to(torch::kFloat32) / global_scale.to(packed.device(), torch::kFloat32);
  return Unblocks(v * sf.unsqueeze(-1)).to(dtype);
}

}  // namespace autoquant

"""NVFP4 as the other tools compute it, for tests/python/test_nvfp4.py and bench/nvfp4.

- ModelOpt's export (NVFP4QTensor, imported from the installed nvidia-modelopt): `modelopt_export`.
- ModelOpt's fake quantizer: on CUDA its own Triton kernel (`fp4_fake_quant_block`); no CPU path
  exists in ModelOpt (its dynamic block quantizer asserts a CUDA amax), so on the CPU
  `modelopt_fake_quant_restated` restates that kernel's arithmetic line by line
  (modelopt/torch/kernels/quantization/gemm/fp4_kernel_hopper.py, common/nvfp4_quant.py).
- vLLM's activation quantization (vllm nvfp4_emulation_utils.ref_nvfp4_quant and
  run_nvfp4_emulations), restated: vLLM is not installed on the CPU test machine.
- compressed-tensors' run-time activation quantization in transformers, restated (it rounds
  block max / 6 to the activation dtype before the global scale and the E4M3 cast).
"""
import torch

E2M1_BOUNDS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
E2M1_VALUES = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6])


def modelopt_export(w: torch.Tensor, amax: torch.Tensor):
    """(packed uint8, block scale e4m3, weight_scale_2 float32) as ModelOpt's export writes them for a
    weight with (per-tensor, calibrated) amax: get_weights_scaling_factor + quantize."""
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor
    wsf2 = amax.float().reshape(()) / (6.0 * 448.0)
    wsf, _ = NVFP4QTensor.get_weights_scaling_factor(w, 16, wsf2)
    q, wsf, wsf2 = NVFP4QTensor.quantize(w, 16, wsf, wsf2)
    return q._quantized_data, wsf, wsf2


def modelopt_dequant(packed, block_scale, wsf2, shape):
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor
    q = NVFP4QTensor(torch.Size(shape), torch.float32, packed)
    return q.dequantize(dtype=torch.float32, scale=block_scale, double_scale=wsf2, block_sizes={-1: 16})


def _round_magnitude(a: torch.Tensor) -> torch.Tensor:
    """fp4_round_magnitude: <=0.25 -> 0, <0.75 -> 0.5, <=1.25 -> 1, <1.75 -> 1.5, <=2.5 -> 2,
    <3.5 -> 3, <=5 -> 4, else 6."""
    out = torch.full_like(a, 6.0)
    for bound, value, inclusive in reversed([(0.25, 0.0, True), (0.75, 0.5, False), (1.25, 1.0, True),
                                             (1.75, 1.5, False), (2.5, 2.0, True), (3.5, 3.0, False),
                                             (5.0, 4.0, True)]):
        out = torch.where(a <= bound if inclusive else a < bound, torch.full_like(a, value), out)
    return out


def modelopt_fake_quant(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """ModelOpt's NVFP4 fake quantizer on x's device: its Triton kernel on CUDA, the restatement on the CPU."""
    if x.is_cuda:
        from modelopt.torch.kernels.quantization.gemm.fp4_kernel_hopper import fp4_fake_quant_block
        return fp4_fake_quant_block(x, amax.to(x.device))
    return modelopt_fake_quant_restated(x, amax)


def modelopt_fake_quant_restated(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    g = amax.float().reshape(()).to(x.device) / (6.0 * 448.0)
    g = torch.where(g > 0, g, torch.full_like(g, 1e-12))
    b = x.float().reshape(*x.shape[:-1], -1, 16)
    bmax = b.abs().amax(-1, keepdim=True)
    s = torch.minimum(bmax / (6.0 * g), torch.tensor(448.0, device=x.device))
    s = s.to(torch.float8_e4m3fn).float() * g
    s = torch.where(s >= 1e-5, s, torch.ones_like(s))
    r = _round_magnitude(b.abs() / s) * s
    return torch.where(b >= 0, r, -r).reshape(x.shape).to(x.dtype)


def vllm_quant_dequant_input(x: torch.Tensor, global_scale: torch.Tensor) -> torch.Tensor:
    """vLLM's ref_nvfp4_quant then the dequantization of run_nvfp4_emulations (x 2-D)."""
    def recip(t):
        return torch.where(t == 0, torch.zeros_like(t), 1.0 / t)
    m, n = x.shape
    gs = global_scale.float().reshape(())
    xb = x.reshape(m, n // 16, 16)
    vec_max = xb.abs().amax(-1, keepdim=True).float()
    scale = gs * (vec_max * (1.0 / 6.0))
    scale = scale.clamp(-448, 448).to(torch.float8_e4m3fn).float()
    out_scale = recip(scale * recip(gs))
    clipped = (xb.float() * out_scale).clamp(-6.0, 6.0)
    q = _round_magnitude(clipped.abs()) * torch.sign(clipped)
    return (q * (scale / gs)).reshape(m, n).to(x.dtype)

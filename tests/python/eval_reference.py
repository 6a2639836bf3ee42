"""The independent computation the evaluation tests compare autoquantd against: transformers'
Qwen2.5-VL forward (float32) with each FP8 Linear of a scheme computed as vLLM runs it (per-tensor
static FP8: fused q/k/v and gate/up shards re-quantized to the shard-max weight scale, shard-max
input scale, y = (q(x / s_x) @ q(w)^T) * s_x * s_w + b), and the metrics of docs/evaluation.md
written out with plain torch."""
import torch

import quant_helpers as qh

E4M3_MAX = 448.0
FUSED = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up"}


def _fp8(x):
    return x.float().clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def deployed_fp8_model(base_dir, scheme_dir):
    """The base model in transformers with the scheme's FP8 Linears as vLLM computes them (and its NVFP4
    ones as vLLM's emulation does)."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32).eval()
    tensors = qh.read_checkpoint(scheme_dir)
    modules = dict(model.named_modules())
    names = sorted(qh.fp8_modules(tensors))
    scales = {n: (qh.to_tensor(tensors[n + ".weight_scale"]).float().reshape(()),
                  qh.to_tensor(tensors[n + ".input_scale"]).float().reshape(())) for n in names}
    fused = {}
    for n in names:
        parent, _, leaf = n.rpartition(".")
        if leaf in FUSED:
            fused.setdefault((parent, FUSED[leaf]), []).append(n)
    shared = dict(scales)
    for members in fused.values():
        ws = max(scales[m][0] for m in members)
        xs = max(scales[m][1] for m in members)
        for m in members:
            shared[m] = (ws, xs)
    for n in names:
        w = qh.to_tensor(tensors[n + ".weight"])
        ws, xs = shared[n]
        if ws != scales[n][0]:
            w = _fp8(w.float() * scales[n][0] / ws)
        w32 = w.float()
        lin = modules[qh.hf_module_name(n)]

        def forward(x, lin=lin, w32=w32, ws=ws, xs=xs):
            xq = _fp8(x.float() / xs).float()
            y = (xq @ w32.t()) * (xs * ws)
            return y + lin.bias.float() if lin.bias is not None else y

        lin.forward = forward
    _deploy_nvfp4(model, tensors)
    return model


def _deploy_nvfp4(model, tensors):
    """The scheme's NVFP4 Linears (compressed-tensors encoding) as vLLM's emulation computes them:
    weights e2m1 * (block scale / weight_global_scale) in the model dtype, inputs through vLLM's
    activation quantization with input_global_scale (nvfp4_reference.vllm_quant_dequant_input)."""
    import nvfp4_reference as nr
    modules = dict(model.named_modules())
    for n in sorted(k[:-len(".weight_packed")] for k in tensors if k.endswith(".weight_packed")):
        packed = qh.to_tensor(tensors[n + ".weight_packed"])
        codes = torch.stack([packed & 0x0F, packed >> 4], -1).reshape(packed.shape[0], -1).long()
        block = qh.to_tensor(tensors[n + ".weight_scale"]).float()
        wg = qh.to_tensor(tensors[n + ".weight_global_scale"]).float().reshape(())
        w = (nr.E2M1_VALUES[codes].reshape(packed.shape[0], -1, 16) * (block / wg).unsqueeze(-1))
        lin = modules[qh.hf_module_name(n)]
        w = w.reshape(lin.weight.shape).to(lin.weight.dtype)
        ig = tensors.get(n + ".input_global_scale")
        ig = qh.to_tensor(ig).float().reshape(()) if ig is not None else None

        def forward(x, lin=lin, w=w, ig=ig):
            x2 = x.reshape(-1, x.shape[-1])
            if ig is not None:
                x2 = nr.vllm_quant_dequant_input(x2, ig)
            y = torch.matmul(x2.to(w.dtype), w.t())
            if lin.bias is not None:
                y = y + lin.bias
            return y.reshape(*x.shape[:-1], w.shape[0])

        lin.forward = forward


def sample_inputs(calib: dict, i: int) -> dict:
    """Sample i of a calibration-format file (its tensors), padding stripped."""
    mask = calib["attention_mask"][i].bool()
    ids = calib["input_ids"][i][mask].unsqueeze(0)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    io, po = calib["sample_image_offsets"], calib["sample_patch_offsets"]
    if "pixel_values" in calib and io[i + 1] > io[i]:
        out["pixel_values"] = calib["pixel_values"][po[i]:po[i + 1]]
        out["image_grid_thw"] = calib["image_grid_thw"][io[i]:io[i + 1]]
    return out


def sample_numbers(model, inputs: dict, skip_ids) -> tuple:
    """(nll sum over text targets, target count, last-token logits) of one sample."""
    with torch.no_grad():
        logits = model(**inputs).logits[0].float()
    ids = inputs["input_ids"][0]
    target = ids[1:]
    keep = torch.ones_like(target, dtype=torch.bool)
    for s in skip_ids:
        keep &= target != s
    nll = torch.nn.functional.cross_entropy(logits[:-1], target, reduction="none").double()
    return float(nll[keep].sum()), int(keep.sum()), logits[-1]


def mse_kl(base_last, scheme_last) -> tuple:
    mse = float(((scheme_last - base_last) ** 2).double().mean())
    lp, lq = torch.log_softmax(base_last, -1), torch.log_softmax(scheme_last, -1)
    kl = float((lp.exp() * (lp - lq)).sum().double())
    return mse, kl

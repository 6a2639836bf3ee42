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
    """The base model in transformers with the scheme's FP8 Linears as vLLM computes them."""
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
    return model


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

"""ModelOpt's own AutoQuant sensitivity scores (gradient method, FP8_DEFAULT_CFG vs NONE)
for a transformers Qwen2.5-VL checkpoint and one of our calibration files
(`autoquant.calib.v1`, docs/calibration-format.md).

    python tests/python/modelopt_reference.py --model DIR --calib FILE --out scores.json \
        [--steps N] [--device cpu|cuda] [--dtype float32|bfloat16] [--details details.json] [--check]

What it runs (see docs/modelopt-comparison.md):
  mtq.auto_quantize(Qwen2_5_VLForConditionalGeneration, constraints={"effective_bits": eb},
      quantization_formats=[mtq.FP8_DEFAULT_CFG], data_loader=<first N samples, batch 1, in order>,
      forward_step=model(**batch), loss_func=output.loss (token-mean next-token CE, labels = input_ids,
      padding -> -100), num_calib_steps=N, num_score_steps=N, method="gradient",
      disabled_layers=["*visual*"])
It is called on the full model so that lm_head is scored; the leading "model." of every key is then
stripped, which gives exactly the keys of a call on the inner `model.model` (Qwen2_5_VLModel), e.g.
`language_model.layers.0.mlp.gate_proj.quant_recipe`, plus `lm_head.quant_recipe`.

--out gets {key: FP8 score} (the score after ModelOpt's monotone min with the scores of more
aggressive formats, which for a single format is the raw score). --details gets everything else:
versions, settings, per-key FP8/NONE scores and costs, the solver's choice.
"""
import argparse
import contextlib
import fnmatch
import json
import math
import pathlib
import sys
import time
import warnings

import torch
from safetensors import safe_open

DISABLED_LAYERS = ["*visual*"]


def load_calib(path: str) -> list:
    """One dict of tensors per sample (batch size 1), in file order."""
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        t = {k: f.get_tensor(k) for k in names}
        meta = f.metadata() or {}
    if meta.get("autoquant.format") not in (None, "autoquant.calib.v1"):
        raise ValueError(f"{path}: unexpected autoquant.format {meta.get('autoquant.format')!r}")
    ids, mask = t["input_ids"].long(), t["attention_mask"].long()
    img_off, patch_off = t["sample_image_offsets"].long(), t["sample_patch_offsets"].long()
    samples = []
    for i in range(ids.shape[0]):
        s = {"input_ids": ids[i:i + 1], "attention_mask": mask[i:i + 1]}
        a, b = int(img_off[i]), int(img_off[i + 1])
        if b > a:
            s["image_grid_thw"] = t["image_grid_thw"][a:b].long()
            s["pixel_values"] = t["pixel_values"][int(patch_off[i]):int(patch_off[i + 1])].float()
        samples.append(s)
    return samples


def make_batches(samples: list, n: int, image_token_id: int, device, dtype, batch_size: int = 1) -> list:
    """The first n * batch_size samples, in file order, as n batches of model kwargs (labels = input_ids,
    padding -> -100). A batch of several samples concatenates them: input_ids / attention_mask along
    the batch dimension (every sample of a calibration file has the same padded length), pixel_values
    and image_grid_thw along their first dimension, in sample order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n * batch_size > len(samples):
        raise ValueError(f"asked for {n} steps of batch size {batch_size} but the calibration set has "
                         f"{len(samples)} samples")
    out = []
    for i in range(n):
        group = samples[i * batch_size:(i + 1) * batch_size]
        if len({tuple(s["input_ids"].shape) for s in group}) != 1:
            raise ValueError(f"batch {i}: samples of different lengths cannot be concatenated")
        b = {k: torch.cat([s[k] for s in group]) for k in ("input_ids", "attention_mask")}
        with_images = [s for s in group if "pixel_values" in s]
        if with_images:
            b["pixel_values"] = torch.cat([s["pixel_values"] for s in with_images])
            b["image_grid_thw"] = torch.cat([s["image_grid_thw"] for s in with_images])
        b = {k: v.to(device) for k, v in b.items()}
        if "pixel_values" in b:
            b["pixel_values"] = b["pixel_values"].to(dtype)
        labels = b["input_ids"].clone()
        labels[b["attention_mask"] == 0] = -100
        b["labels"] = labels
        # transformers 5.x computes the 3D M-RoPE positions only when mm_token_type_ids is given.
        b["mm_token_type_ids"] = (b["input_ids"] == image_token_id).int()
        out.append(b)
    return out


def load_model(model_dir, device, dtype):
    """The transformers Qwen2.5-VL model (sdpa, eval mode) in `dtype` (a name: float32, bfloat16) on `device`."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(
        str(model_dir), dtype=getattr(torch, dtype), attn_implementation="sdpa").to(device).eval()


def load_model_and_batches(model_dir, calib, steps, device, dtype, batch_size=1):
    """The transformers model (sdpa) and the first `steps` batches of `batch_size` calibration samples."""
    model = load_model(model_dir, device, dtype)
    samples = load_calib(calib)
    steps = steps or len(samples) // batch_size
    return model, samples, steps, make_batches(samples, steps, model.config.image_token_id, device,
                                               getattr(torch, dtype), batch_size)


def _weight_numel(model, disabled) -> tuple:
    """(all quantizable-weight numel, numel of disabled ones): Linear and Conv weights."""
    total = dis = 0
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            n = m.weight.numel()
            total += n
            if any(fnmatch.fnmatch(name, p) for p in disabled):
                dis += n
    return total, dis


def strip_key(key: str) -> str:
    return key[len("model."):] if key.startswith("model.") else key


@contextlib.contextmanager
def nvfp4_on_cpu():
    """ModelOpt's NVFP4 fake quantizer has no CPU path (its dynamic block quantizer asserts a CUDA
    amax and runs a Triton kernel): on CPU tensors, run its line-by-line restatement
    (nvfp4_reference.modelopt_fake_quant_restated) instead; CUDA tensors keep ModelOpt's own kernel.
    Everything else of auto_quantize (calibration, scoring, search) is ModelOpt's."""
    import modelopt.torch.quantization.tensor_quant as tq
    import nvfp4_reference as nr
    original = tq.dynamic_block_quantize_op

    def op(inputs, block_size, amax, num_bits, exponent_bits, scale_num_bits, scale_exponent_bits):
        if inputs.is_cuda or (num_bits, exponent_bits, scale_num_bits, scale_exponent_bits) != (4, 2, 8, 4):
            return original(inputs, block_size, amax, num_bits, exponent_bits, scale_num_bits, scale_exponent_bits)
        assert block_size == 16
        return nr.modelopt_fake_quant_restated(inputs, amax.float().amax())

    tq.dynamic_block_quantize_op = op
    try:
        yield
    finally:
        tq.dynamic_block_quantize_op = original


def run_reference(model_dir, calib, steps=None, device="cpu", dtype="float32", effective_bits=None,
                  disabled_layers=None, verbose=False, formats=("FP8_DEFAULT_CFG",)) -> dict:
    """Runs mtq.auto_quantize over `formats` (ModelOpt config names) and returns a dict with
    'scores' ({key: FP8 score}), 'scores_by_format' ({config name: {key: score}}) and details."""
    import modelopt
    import modelopt.torch.quantization as mtq
    import transformers

    disabled_layers = list(disabled_layers or DISABLED_LAYERS)
    model, samples, steps, batches = load_model_and_batches(model_dir, calib, steps, device, dtype)

    # Effective-bits target: scores do not depend on it; pick the midpoint between the smallest
    # feasible value (every searchable group FP8, disabled ones at 16 bits) and 16.
    total, dis = _weight_numel(model, ["model." + p if not p.startswith("*") else p for p in disabled_layers])
    min_bits = 4.5 if any(f.startswith("NVFP4") or f.startswith("W4A16_NVFP4") for f in formats) else 8.0
    min_eb = 16.0 * (min_bits / 16.0 * (total - dis) + dis) / total
    eb = effective_bits if effective_bits is not None else round((min_eb + 16.0) / 2, 3)

    def forward_step(m, batch):
        return m(**batch)

    def loss_func(output, batch):
        return output.loss

    t0 = time.time()
    with warnings.catch_warnings(), nvfp4_on_cpu():
        warnings.simplefilter("ignore")
        model, state = mtq.auto_quantize(
            model,
            constraints={"effective_bits": eb},
            quantization_formats=[getattr(mtq, f) for f in formats],
            data_loader=batches,
            forward_step=forward_step,
            loss_func=loss_func,
            num_calib_steps=steps,
            num_score_steps=steps,
            method="gradient",
            disabled_layers=disabled_layers,
            verbose=verbose,
        )
    seconds = time.time() - t0

    scores, groups = {}, {}
    by_format = {f: {} for f in formats}
    for key, st in state["candidate_stats"].items():
        names = [str(f) for f in st["formats"]]
        entry = {
            "formats": names,
            "scores": [float(s) for s in st["scores"]],
            "costs": [float(c) for c in st["costs"]],
            "module_names": [strip_key(n) for n in st.get("module_names", [])],
        }
        groups[strip_key(key)] = entry
        fp8 = [i for i, n in enumerate(names) if n.startswith("FP8_DEFAULT_CFG")]
        if fp8:
            scores[strip_key(key)] = entry["scores"][fp8[0]]
        for f in formats:
            at = [i for i, n in enumerate(names) if n.startswith(f + "(")]
            if at:
                by_format[f][strip_key(key)] = entry["scores"][at[0]]
    best = state.get("best", {})
    return {
        "scores": scores,
        "scores_by_format": by_format,
        "groups": groups,
        "best": {
            "recipe": {strip_key(k): str(v) for k, v in best.get("recipe", {}).items()},
            "constraints": {k: float(v) for k, v in best.get("constraints", {}).items()},
            "score": float(best.get("score", math.nan)),
            "is_satisfied": bool(best.get("is_satisfied", False)),
        },
        "settings": {
            "model": str(model_dir), "calib": str(calib), "steps": steps, "batch_size": 1,
            "device": device, "dtype": dtype, "effective_bits": eb, "min_feasible_effective_bits": min_eb,
            "disabled_layers": disabled_layers, "method": "gradient", "formats": list(formats),
            "loss": "HF output.loss: token-mean next-token CE, labels = input_ids, padding -> -100",
            "called_on": "Qwen2_5_VLForConditionalGeneration (keys: leading 'model.' stripped)",
        },
        "versions": {"modelopt": modelopt.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": sys.version.split()[0]},
        "seconds": seconds,
    }


def _fp8_fake_quant(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """modelopt.torch.quantization.tensor_quant._fp8_eager (also what the CUDA kernel computes)."""
    amax = amax.to(torch.float32)
    safe = torch.where(amax <= 1.0 / (1 << 24), torch.ones_like(amax), amax)
    scale = 448.0 / safe
    inv = 1 / scale
    y = (x.to(torch.float32) * scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return (y.to(torch.float32) * inv).to(x.dtype)


_GROUP_RULES = [r"^(.*?)\.(q_proj|k_proj|v_proj)$", r"^(.*?)\.(gate_proj|up_proj)$"]


def torch_reference_scores(model_dir, calib, steps=None, device="cpu", dtype="float32",
                           disabled_layers=None) -> dict:
    """The same FP8 scores computed in plain torch, without ModelOpt: a statement of what ModelOpt
    computes. Calibration: amax_in = max|x| of each Linear's input over the first `steps` samples
    (unquantized network), amax_w = max|W|. Scoring, per sample, on the unquantized network:
    g = dL/dY, dY = linear(fq(x, amax_in), fq(W, amax_w), b) - Y with x the unquantized input,
    score += sum((g * dY).clamp(+-1e10)^2) in fp32; a group's score is the sum over its members."""
    import re

    disabled_layers = list(disabled_layers or DISABLED_LAYERS)
    model, samples, steps, batches = load_model_and_batches(model_dir, calib, steps, device, dtype)
    lins = {n: m for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and not any(fnmatch.fnmatch(n, p) for p in disabled_layers)}
    amax_in = {n: torch.zeros((), device=device) for n in lins}

    def calib_hook(m, i, o, n):
        amax_in[n] = torch.maximum(amax_in[n], i[0].detach().abs().amax().float())

    hooks = [m.register_forward_hook(lambda m, i, o, n=n: calib_hook(m, i, o, n)) for n, m in lins.items()]
    with torch.no_grad():
        for b in batches:
            model(**b)
    for h in hooks:
        h.remove()
    amax_w = {n: m.weight.detach().abs().amax().float() for n, m in lins.items()}

    score = {n: torch.zeros((), dtype=torch.float32, device=device) for n in lins}
    store = {}

    def score_hook(m, i, o, n):
        o.retain_grad()
        store[n] = (i[0].detach(), o)

    hooks = [m.register_forward_hook(lambda m, i, o, n=n: score_hook(m, i, o, n)) for n, m in lins.items()]
    for b in batches:
        store.clear()
        model.zero_grad(set_to_none=True)
        model(**b).loss.backward()
        with torch.no_grad():
            for n, (x, y) in store.items():
                m = lins[n]
                dy = torch.nn.functional.linear(_fp8_fake_quant(x, amax_in[n]),
                                                _fp8_fake_quant(m.weight, amax_w[n]), m.bias) - y
                score[n] += (y.grad.float() * dy.float()).clamp(-1e10, 1e10).square().sum()
    for h in hooks:
        h.remove()

    keys = {}  # group name -> key of its first member (named_modules order)
    out = {}
    for n in lins:
        group = n
        for rule in _GROUP_RULES:
            mt = re.match(rule, n)
            if mt:
                group = mt.group(1)
                break
        key = keys.setdefault(group, strip_key(n) + ".quant_recipe")
        out[key] = out.get(key, 0.0) + float(score[n])
    return out


def ranking(scores: dict) -> list:
    return sorted(scores.items(), key=lambda kv: -kv[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="transformers Qwen2.5-VL checkpoint dir")
    ap.add_argument("--calib", required=True, help="autoquant.calib.v1 .safetensors file")
    ap.add_argument("--out", required=True, help="JSON {key: FP8 score}")
    ap.add_argument("--details", help="JSON with everything (settings, versions, all formats, costs)")
    ap.add_argument("--steps", type=int, help="num_calib_steps = num_score_steps (default: all samples)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--effective-bits", type=float)
    ap.add_argument("--disabled-layers", nargs="*", default=DISABLED_LAYERS)
    ap.add_argument("--formats", nargs="+", default=["FP8_DEFAULT_CFG"],
                    help="ModelOpt config names searched, e.g. NVFP4_DEFAULT_CFG FP8_DEFAULT_CFG")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--check", action="store_true",
                    help="also compute the scores in plain torch (torch_reference_scores) and compare")
    args = ap.parse_args(argv)

    res = run_reference(args.model, args.calib, args.steps, args.device, args.dtype, args.effective_bits,
                        args.disabled_layers, args.verbose, tuple(args.formats))
    pathlib.Path(args.out).write_text(json.dumps(res["scores"], indent=1, sort_keys=True) + "\n")
    if args.details:
        pathlib.Path(args.details).write_text(json.dumps(res, indent=1) + "\n")
    print(f"ModelOpt {res['versions']['modelopt']} auto_quantize ({res['seconds']:.1f} s): "
          f"{len(res['scores'])} scored groups, settings {json.dumps(res['settings'])}")
    for rank, (k, v) in enumerate(ranking(res["scores"]), 1):
        print(f"{rank:3d}  {v:.6e}  {k}  -> {res['best']['recipe'].get(k, '?')}")
    print(f"best: {json.dumps({k: v for k, v in res['best'].items() if k != 'recipe'})}")
    if args.device.startswith("cuda"):
        import torch
        print(f"peak CUDA memory reserved: {torch.cuda.max_memory_reserved() / 2**30:.2f} GiB, "
              f"allocated: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    if args.check:
        plain = torch_reference_scores(args.model, args.calib, args.steps, args.device, args.dtype,
                                       args.disabled_layers)
        if set(plain) != set(res["scores"]):
            print(f"plain-torch check: key sets differ: {sorted(set(plain) ^ set(res['scores']))}")
            return 1
        rel = max(abs(plain[k] - v) / max(abs(v), 1e-30) for k, v in res["scores"].items())
        print(f"plain-torch check: max relative difference {rel:.3e} over {len(plain)} groups")
        res["plain_torch_scores"], res["plain_torch_max_rel_diff"] = plain, rel
        if args.details:
            pathlib.Path(args.details).write_text(json.dumps(res, indent=1) + "\n")
        if rel > 1e-4:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

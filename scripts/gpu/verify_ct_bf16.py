"""On the GPU: a default-format (compressed-tensors) scheme loads and runs in bf16 on CUDA with the
machine's transformers (5.17 on the H200 box), as the seeds' eval scripts load it, and its logits
agree with our own bf16 forward of the same scheme far better than with the base model's.

    python verify_ct_bf16.py --autoquant BIN --model BASE --calib CALIB --work DIR --out OUT

Makes a coverage-0.5 scheme with `autoquant quantize` (default format), a one-sample input with
`autoquant calib synth`, runs `autoquant model forward` (ours) and
Qwen2_5_VLForConditionalGeneration.from_pretrained(dtype=bfloat16) on cuda (transformers) for the
scheme and the base, writes ct-bf16.json to OUT and exits 1 when a check fails."""
import argparse
import json
import pathlib
import subprocess
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "python"))
import forward_helpers as fh  # noqa: E402


def run(*cmd):
    t = time.time()
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    print(f"[{time.time() - t:.1f} s rc={p.returncode}] {' '.join(map(str, cmd[:3]))}", flush=True)
    if p.returncode != 0:
        sys.exit(f"failed: {p.stderr[-3000:]}")
    return p


def hf_logits(model_dir, inputs, device, dtype=torch.bfloat16):
    from transformers import Qwen2_5_VLForConditionalGeneration
    t = time.time()
    model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        model_dir, dtype=dtype, output_loading_info=True)
    model = model.to(device)  # not device_map: that needs accelerate, which the GPU machine may lack
    logits = fh.hf_logits(model.eval(), {k: v.to(device) for k, v in inputs.items()}).cpu()
    problems = {k: sorted(v)[:10] for k, v in info.items() if v}
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    print(f"[{time.time() - t:.1f} s] transformers {model_dir}", flush=True)
    return logits, problems


def main():
    ap = argparse.ArgumentParser()
    for a in ("--autoquant", "--model", "--calib", "--work", "--out"):
        ap.add_argument(a, required=True, type=pathlib.Path)
    ap.add_argument("--device", default="cuda", help="cuda; cpu for a smoke test of this script")
    # The checkpoint's own dtype. float32 needs a float32 checkpoint with transformers 5.17: a bf16
    # compressed-tensors checkpoint loaded as float32 there leaves the decompressed layers in bf16
    # and fails in lm_head (the newest transformers handles it).
    ap.add_argument("--dtypes", default="bfloat16")
    a = ap.parse_args()
    from safetensors.torch import load_file
    import transformers
    try:
        import compressed_tensors
        ct = compressed_tensors.__version__
    except ImportError:
        ct = None
    a.work.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    scheme = a.work / "ct-top50"
    run(a.autoquant, "quantize", "--model", a.model, "--calib", a.calib, "--coverage", "0.5", "--out", scheme,
        "--device", a.device, "--overwrite", "--baseline-cache", a.work / "baseline-cache")
    inp = a.work / "one-sample.safetensors"
    run(a.autoquant, "calib", "synth", "--model", a.model, "--out", inp, "--samples", "1", "--seq-len", "512",
        "--images-per-sample", "1", "--image-size", "448x448", "--seed", "7", "--overwrite")
    inputs = {k: v for k, v in load_file(inp).items()
              if k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")}
    mask = inputs["attention_mask"].bool()

    def mean_abs(x, y):
        return float((x - y).abs()[mask].mean())

    def cosine(x, y):
        x, y = x[mask].flatten().double(), y[mask].flatten().double()
        return float(x @ y / (x.norm() * y.norm()))

    r = {"device": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu",
         "transformers": transformers.__version__, "compressed_tensors": ct, "torch": torch.__version__}
    failures = []
    for dtype in a.dtypes.split(","):
        ours = {}
        for name, d in (("scheme", scheme), ("base", a.model)):
            out = a.work / f"ours-{name}-{dtype}.safetensors"
            run(a.autoquant, "model", "forward", "--model", d, "--input", inp, "--output", out, "--device", a.device,
                "--dtype", dtype, "--overwrite")
            ours[name] = load_file(out)["logits"].float()
        hf_scheme, problems = hf_logits(scheme, inputs, a.device, getattr(torch, dtype))
        hf_base, _ = hf_logits(a.model, inputs, a.device, getattr(torch, dtype))
        # The FP8 effect as each implementation sees it: in bf16 on random weights the two
        # implementations' kernels differ by as much as the effect itself, so compare the effects.
        q = {"load_problems": problems, "finite": bool(torch.isfinite(hf_scheme).all()),
             "mean_abs_hf_scheme_vs_ours_scheme": mean_abs(hf_scheme, ours["scheme"]),
             "mean_abs_hf_scheme_vs_hf_base": mean_abs(hf_scheme, hf_base),
             "mean_abs_hf_base_vs_ours_base": mean_abs(hf_base, ours["base"]),
             "cosine_fp8_effect_hf_vs_ours": cosine(hf_scheme - hf_base, ours["scheme"] - ours["base"]),
             "max_abs_logit": float(hf_base.abs()[mask].max())}
        q["ratio_base_over_ours"] = q["mean_abs_hf_scheme_vs_hf_base"] / max(q["mean_abs_hf_scheme_vs_ours_scheme"],
                                                                             1e-12)
        r[dtype] = q
        if problems:
            failures.append(f"{dtype}: load problems {problems}")
        if not q["finite"]:
            failures.append(f"{dtype}: non-finite logits")
        if q["cosine_fp8_effect_hf_vs_ours"] < 0.5:
            failures.append(f"{dtype}: transformers' FP8 effect does not follow ours")
        if dtype == "float32" and q["ratio_base_over_ours"] < 10:
            failures.append("float32: transformers' scheme logits are not far nearer ours than the base's")
    r["failures"] = failures
    (a.out / "ct-bf16.json").write_text(json.dumps(r, indent=1))
    print(json.dumps(r, indent=1))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

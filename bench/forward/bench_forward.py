#!/usr/bin/env python3
"""Forward-pass timing: `autoquant model bench` (LibTorch) vs transformers (sdpa).

Qwen2.5-VL-3B random weights (`autoquant model init --preset qwen2.5-vl-3b`),
one 448x448 image + 512 text tokens per sample, batch 1 and 8, bf16 on CUDA.
Both sides get inputs of the same shape (same synthetic layout: text,
<vision_start>, 256 image tokens, <vision_end>, text); the numbers are
median wall ms per forward (CUDA-synchronised) and tokens/s.

Usage (on a GPU host, from the repo root, after scripts/build.sh):
  python bench/forward/bench_forward.py --model /models/rand-3b [--init] [--iters 10] \
      [--out bench/results/forward-<date>.json]
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

import torch

REPO = pathlib.Path(__file__).resolve().parents[2]


def run(cmd):
    print("+", " ".join(map(str, cmd)), file=sys.stderr)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def hf_inputs(config, batch, text_tokens, h, w, device):
    patch, merge = config.vision_config.patch_size, config.vision_config.spatial_merge_size
    gh, gw = h // patch, w // patch
    n_img = gh * gw // (merge * merge)
    seq = text_tokens + n_img + 2
    ids = torch.randint(0, config.vision_start_token_id, (batch, seq))
    p = text_tokens // 2
    ids[:, p] = config.vision_start_token_id
    ids[:, p + 1:p + 1 + n_img] = config.image_token_id
    ids[:, p + 1 + n_img] = config.vision_end_token_id
    dim = 3 * config.vision_config.temporal_patch_size * patch * patch
    return dict(
        input_ids=ids.to(device),
        attention_mask=torch.ones_like(ids).to(device),
        pixel_values=torch.randn(batch * gh * gw, dim).to(device),
        image_grid_thw=torch.tensor([[1, gh, gw]] * batch).to(device),
        mm_token_type_ids=(ids == config.image_token_id).int().to(device),
    ), seq


def bench_hf(model_dir, batch, text_tokens, h, w, iters, warmup):
    from transformers import Qwen2_5_VLForConditionalGeneration
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    inputs, seq = hf_inputs(model.config, batch, text_tokens, h, w, "cuda")
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(**inputs)
            torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    del model
    torch.cuda.empty_cache()
    med = statistics.median(times)
    return dict(impl="transformers-sdpa", batch=batch, seq_len=seq, median_ms=med, min_ms=min(times),
                tokens_per_s=batch * seq / (med / 1000), samples_ms=times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--init", action="store_true", help="write the random 3B checkpoint first")
    ap.add_argument("--binary", default=str(REPO / "build/bin/autoquant"))
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--image", default="448x448")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.init:
        run([args.binary, "model", "init", "--preset", "qwen2.5-vl-3b", "--out", args.model, "--overwrite"])
    h, w = map(int, args.image.split("x"))
    results = []
    for b in map(int, args.batches.split(",")):
        ours = json.loads(run([args.binary, "model", "bench", "--model", args.model, "--device", "cuda",
                               "--dtype", "bfloat16", "--batch", str(b), "--text-tokens", str(args.text_tokens),
                               "--image", args.image, "--iters", str(args.iters), "--warmup", str(args.warmup)]))
        ours["impl"] = "autoquant-libtorch"
        results.append(ours)
        results.append(bench_hf(args.model, b, args.text_tokens, h, w, args.iters, args.warmup))
    report = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, results=results)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    for r in results:
        print(f"{r['impl']:>20}  batch {r['batch']}  seq {r['seq_len']}  median {r['median_ms']:.1f} ms  "
              f"{r['tokens_per_s']:.0f} tok/s", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Prefill timing: `autoquant model bench` (LibTorch) vs transformers (sdpa), same run.

Qwen2.5-VL random weights (`autoquant model init --preset qwen2.5-vl-3b`), one
448x448 image + 512 text tokens per sample (text, <vision_start>, 256 image
tokens, <vision_end>, text: 770 tokens), batch 1 and 8, bf16 on CUDA. Both
sides get inputs of the same shape; the numbers are the median wall ms of one
full forward (logits for every position; CUDA-synchronised before and after)
and tokens/s = batch * seq_len / median. Ours runs in its own process (one per
batch size) before transformers loads, so the two never share GPU memory.

Also recorded: the device, versions, a bf16 GEMM ceiling measured in the same
run, and a matmul FLOP count of the forward, giving each side's achieved
TFLOP/s (how far each is from the compute floor).

Usage (GPU host, repo root; the binary from $AUTOQUANT_BUILD_DIR, else build/):
  python bench/forward/bench_forward.py --model /tmp/rand-3b [--init] [--iters 20] \
      [--out bench/results/forward-<date>.json]
Dry run on the CPU (tiny preset): --device cpu --dtype float32 --preset tiny --init
"""
import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("AUTOQUANT_BUILD_DIR", REPO / "build"))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, env=None):
    log("+", " ".join(map(str, cmd)))
    proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        log(proc.stderr)
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}")
    return proc.stdout


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def hf_inputs(config, batch, text_tokens, h, w, device):
    patch, merge = config.vision_config.patch_size, config.vision_config.spatial_merge_size
    gh, gw = h // patch, w // patch
    n_img = gh * gw // (merge * merge)
    seq = text_tokens + n_img + 2
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, min(config.vision_start_token_id, config.image_token_id), (batch, seq), generator=gen)
    p = text_tokens // 2
    ids[:, p] = config.vision_start_token_id
    ids[:, p + 1:p + 1 + n_img] = config.image_token_id
    ids[:, p + 1 + n_img] = config.vision_end_token_id
    dim = 3 * config.vision_config.temporal_patch_size * patch * patch
    return dict(
        input_ids=ids.to(device),
        attention_mask=torch.ones_like(ids).to(device),
        pixel_values=torch.randn(batch * gh * gw, dim, generator=gen).to(device),
        image_grid_thw=torch.tensor([[1, gh, gw]] * batch).to(device),
        mm_token_type_ids=(ids == config.image_token_id).int().to(device),
    ), seq


def summarize(times, batch, seq):
    med = statistics.median(times)
    return dict(batch=batch, seq_len=seq, median_ms=med, min_ms=min(times), max_ms=max(times),
                tokens_per_s=batch * seq / (med / 1000), samples_ms=times)


def bench_hf(model_dir, batches, text_tokens, h, w, iters, warmup, device, dtype):
    from transformers import Qwen2_5_VLForConditionalGeneration
    t0 = time.perf_counter()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        model_dir, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    load_s = time.perf_counter() - t0
    out = []
    for batch in batches:
        inputs, seq = hf_inputs(model.config, batch, text_tokens, h, w, device)
        times = []
        with torch.inference_mode():
            for i in range(warmup + iters):
                sync(device)
                t0 = time.perf_counter()
                model(**inputs)
                sync(device)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1000)
        r = summarize(times, batch, seq)
        r.update(impl="transformers-sdpa", load_s=load_s)
        if device == "cuda":
            r["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        out.append(r)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def forward_flops(cfg, batch, seq, n_img_tokens):
    """Matmul FLOPs of one forward (2 per multiply-add): linear layers, lm_head
    for every position, attention scores and values; norms etc. ignored."""
    t, v = cfg["text_config"] if "text_config" in cfg else cfg, cfg["vision_config"]
    hd = t["hidden_size"] // t["num_attention_heads"]
    kv = t["num_key_value_heads"] * hd
    per_tok = (t["hidden_size"] * (t["hidden_size"] + 2 * kv) + t["hidden_size"] * t["hidden_size"]
               + 3 * t["hidden_size"] * t["intermediate_size"])
    tokens = batch * seq
    text = 2 * tokens * per_tok * t["num_hidden_layers"] + 2 * tokens * t["hidden_size"] * t["vocab_size"]
    text += t["num_hidden_layers"] * 2 * 2 * batch * seq * seq / 2 * t["hidden_size"]  # causal QK^T + PV
    merge2 = v["spatial_merge_size"] ** 2
    patches = batch * n_img_tokens * merge2
    vh = v["hidden_size"]
    patch_dim = 3 * v["temporal_patch_size"] * v["patch_size"] ** 2
    vis = 2 * patches * (patch_dim * vh + v["depth"] * (4 * vh * vh + 3 * vh * v["intermediate_size"]))
    vis += 2 * (patches // merge2) * (vh * merge2) * (vh * merge2 + v["out_hidden_size"])
    win = (v["window_size"] // v["patch_size"]) ** 2  # patches per window (interior)
    full = len(v.get("fullatt_block_indexes", []))
    per_img = n_img_tokens * merge2
    vis += 2 * 2 * vh * patches * (full * per_img + (v["depth"] - full) * win)
    return text + vis, text, vis


def gemm_ceiling(device, dtype, n=8192, reps=10):
    if device != "cuda":
        return None
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / reps
    return dict(n=n, ms=ms, tflops=2 * n ** 3 / (ms / 1000) / 1e12)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--init", action="store_true", help="write the random checkpoint first (timed)")
    ap.add_argument("--preset", default="qwen2.5-vl-3b")
    ap.add_argument("--binary", default=str(BUILD / "bin/autoquant"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--image", default="448x448")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-varlen-batch", type=int, default=0,
                    help="also time ours at this batch with AUTOQUANT_DISABLE_VARLEN=1 (per-window SDPA loop)")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    dtype = dict(bfloat16=torch.bfloat16, float32=torch.float32)[args.dtype]
    h, w = map(int, args.image.split("x"))
    batches = [int(b) for b in args.batches.split(",")]
    report = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  device=args.device, dtype=args.dtype, preset=args.preset, image=args.image,
                  text_tokens=args.text_tokens, iters=args.iters, warmup=args.warmup)
    if args.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        report.update(gpu=p.name, sm_count=p.multi_processor_count, cuda=torch.version.cuda)
        try:
            report["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                              capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    import transformers
    report.update(torch=torch.__version__, transformers=transformers.__version__)
    rev = BUILD / "REVISION"
    report["autoquant_revision"] = rev.read_text().strip() if rev.exists() else None

    if args.init:
        t0 = time.perf_counter()
        run([args.binary, "model", "init", "--preset", args.preset, "--out", args.model, "--overwrite",
             "--dtype", "bfloat16"])
        report["init_s"] = time.perf_counter() - t0
        report["checkpoint_bytes"] = sum(f.stat().st_size for f in pathlib.Path(args.model).iterdir())
        log(f"init: {report['init_s']:.1f} s, {report['checkpoint_bytes'] / 1e9:.2f} GB")

    def save():  # after every step, so that a run cut short still leaves its numbers
        if args.out:
            pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            pathlib.Path(args.out).write_text(json.dumps(dict(report, results=results), indent=2) + "\n")

    results = []
    save()
    cfg = json.loads((pathlib.Path(args.model) / "config.json").read_text())
    report["gemm_ceiling"] = gemm_ceiling(args.device, dtype)
    common = ["--model", args.model, "--device", args.device, "--dtype", args.dtype,
              "--text-tokens", args.text_tokens, "--image", args.image, "--iters", args.iters,
              "--warmup", args.warmup]
    for b in batches:
        t0 = time.perf_counter()
        ours = json.loads(run([args.binary, "model", "bench", "--batch", b] + common))
        ours.update(impl="autoquant-libtorch", process_s=time.perf_counter() - t0)
        results.append(ours)
        save()
    if args.no_varlen_batch:
        env = dict(os.environ, AUTOQUANT_DISABLE_VARLEN="1")
        ours = json.loads(run([args.binary, "model", "bench", "--batch", args.no_varlen_batch] + common, env=env))
        ours["impl"] = "autoquant-libtorch-novarlen"
        results.append(ours)
        save()
    if not args.skip_hf:
        results += bench_hf(args.model, batches, args.text_tokens, h, w, args.iters, args.warmup, args.device, dtype)

    v = cfg["vision_config"]
    n_img = (h // v["patch_size"]) * (w // v["patch_size"]) // v["spatial_merge_size"] ** 2
    for r in results:
        total, text, vis = forward_flops(cfg, r["batch"], r["seq_len"], n_img)
        r["gflop"] = total / 1e9
        r["achieved_tflops"] = total / (r["median_ms"] / 1000) / 1e12
        if report["gemm_ceiling"]:
            r["floor_ms"] = total / (report["gemm_ceiling"]["tflops"] * 1e12) * 1000
    by = {(r["impl"], r["batch"]): r for r in results}
    report["speedup"] = {str(b): by[("transformers-sdpa", b)]["median_ms"] / by[("autoquant-libtorch", b)]["median_ms"]
                         for b in batches if ("transformers-sdpa", b) in by}
    save()
    if args.out:
        log(f"wrote {args.out}")
    print(f"{'impl':<28} {'batch':>5} {'seq':>5} {'median ms':>10} {'min ms':>8} {'tok/s':>9} {'TFLOP/s':>8}"
          f" {'floor ms':>8}")
    for r in results:
        print(f"{r['impl']:<28} {r['batch']:>5} {r['seq_len']:>5} {r['median_ms']:>10.2f} {r['min_ms']:>8.2f} "
              f"{r['tokens_per_s']:>9.0f} {r['achieved_tflops']:>8.1f} {r.get('floor_ms', float('nan')):>8.2f}")
    for b, s in report["speedup"].items():
        print(f"speedup (transformers / ours) at batch {b}: {s:.2f}x")


if __name__ == "__main__":
    main()

"""Submits a coverage sweep to autoquantd, waits with progress bars, loads each checkpoint with
transformers and prints one row per scheme: groups quantized, effective bits, FP8 Linears, and the
mean |logit difference| from the base model on a fixed random prompt (a smoke signal, not an eval
metric: plug your own evaluation in `score`).

    python examples/eval_sweep.py --server 127.0.0.1:PORT --base BASE_DIR --coverages top10,top50,top100

The daemon must be able to write the schemes (its --models-root); this script reads them from the
paths the daemon reports, so run it on the same machine or volume."""
import argparse

import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from autoquant_client import Client


def load(path):
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()


def score(model, input_ids):
    # input_ids: [1, tokens] -> logits [1, tokens, vocab]
    with torch.inference_mode():
        return model(input_ids=input_ids).logits


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", help="host:port (default $AUTOQUANT_SERVER)")
    ap.add_argument("--base", required=True, help="the daemon's base model directory, for the comparison")
    ap.add_argument("--coverages", default="top10,top50,top100", help="comma-separated; each names its scheme")
    ap.add_argument("--prefix", default="", help="prepended to every scheme name")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()

    with Client(args.server) as aq:
        points = [{"scheme": args.prefix + c, "coverage": c} for c in args.coverages.split(",")]
        jobs = aq.wait_all(aq.submit_sweep(points).jobs, progress=not args.no_progress, check=True)

    base = load(args.base)
    input_ids = torch.randint(0, base.config.text_config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    base_logits = score(base, input_ids)
    print(f"{'scheme':<20} {'groups':>9} {'eff.bits':>8} {'fp8 linears':>11} {'mean|dlogit|':>12}")
    for job in jobs:
        model = load(job.result.output_dir)
        fp8 = sum(isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.float8_e4m3fn for m in model.modules())
        delta = (score(model, input_ids) - base_logits).abs().mean().item()
        print(f"{job.scheme:<20} {job.result.groups_quantized:>4}/{job.result.groups_total:<4} "
              f"{job.result.effective_bits:>8.3f} {fp8:>11} {delta:>12.3e}")


if __name__ == "__main__":
    main()

"""Evaluation on the GPU (issue 10): autoquantd evaluates a three-point sweep of the 3B preset
against its resident base model, once with FP8 Linears on torch::_scaled_mm and once emulated,
and this script compares the two and writes the timings.

    python eval_bench.py merge OUT.safetensors A.safetensors B.safetensors   (concatenate eval sets)
    python eval_bench.py compare --scaled DIR --emulated DIR --jobs JOBS.json --out OUT_DIR

compare reads each scheme's evaluation.json from both runs (DIR/<scheme>.json) and the jobs of the
evaluated sweep (the `autoquant sweep --wait --json` output), and writes eval-bench.{json,md}."""
import argparse
import json
import pathlib
import statistics

import torch
from safetensors.torch import load_file, save_file


def merge(out, parts):
    sets = [load_file(p) for p in parts]
    merged = {"input_ids": torch.cat([s["input_ids"] for s in sets]),
              "attention_mask": torch.cat([s["attention_mask"] for s in sets])}
    pixels = [s["pixel_values"] for s in sets if "pixel_values" in s]
    if pixels:
        merged["pixel_values"] = torch.cat(pixels)
        merged["image_grid_thw"] = torch.cat([s["image_grid_thw"] for s in sets if "image_grid_thw" in s])
    for key in ("sample_image_offsets", "sample_patch_offsets"):
        offsets, base = [torch.zeros(1, dtype=torch.int64)], 0
        for s in sets:
            offsets.append(s[key][1:] + base)
            base += int(s[key][-1])
        merged[key] = torch.cat(offsets)
    n, length = merged["input_ids"].shape
    save_file(merged, out, metadata={"format": "pt", "autoquant.format": "autoquant.calib.v1",
                                     "samples": str(n), "seq_len": str(length)})


def rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def compare(args):
    jobs = json.loads(pathlib.Path(args.jobs).read_text())["jobs"]
    rows, out = [], {"schemes": {}}
    for job in jobs:
        name = job["scheme"]
        s = json.loads((pathlib.Path(args.scaled) / f"{name}.json").read_text())
        e = json.loads((pathlib.Path(args.emulated) / f"{name}.json").read_text())
        assert s["execution"]["fp8_matmul"] == "scaled_mm", s["execution"]
        assert e["execution"]["fp8_matmul"] == "emulated", e["execution"]
        per = list(zip(s["per_sample"], e["per_sample"]))
        kl_abs = [abs(a["logit_kl_last_token"] - b["logit_kl_last_token"]) for a, b in per]
        kl_rel = [rel(a["logit_kl_last_token"], b["logit_kl_last_token"]) for a, b in per]
        mse_rel = [rel(a["logit_mse_last_token"], b["logit_mse_last_token"]) for a, b in per]
        nll_rel = [rel(a["nll_scheme"], b["nll_scheme"]) for a, b in per]
        gs, ge = s["generation"], e["generation"]
        same_tokens = sum(p["scheme_tokens"] == q["scheme_tokens"] for p, q in zip(gs["prompts"], ge["prompts"]))
        m = job["result"]["metrics"]
        entry = {
            "coverage": s["scheme_info"]["coverage"], "effective_bits": s["scheme_info"]["effective_bits"],
            "quantized_linears": s["scheme_info"]["quantized_linears"],
            "scaled_mm_linears": s["execution"]["scaled_mm_linears"],
            "summary_scaled_mm": s["summary"], "summary_emulated": e["summary"],
            "kl_per_sample_abs_diff_max": max(kl_abs), "kl_per_sample_rel_diff_median": statistics.median(kl_rel),
            "mse_per_sample_rel_diff_max": max(mse_rel), "nll_per_sample_rel_diff_max": max(nll_rel),
            "kl_mean_rel_diff": rel(s["summary"]["logit_kl_last_token"]["mean"],
                                    e["summary"]["logit_kl_last_token"]["mean"]),
            "ppl_rel_diff": rel(s["summary"]["perplexity"]["scheme"], e["summary"]["perplexity"]["scheme"]),
            "generation_prompts_identical": f"{same_tokens}/{len(gs['prompts'])}",
            "eval_seconds_scaled_mm": s["seconds"], "eval_seconds_emulated": e["seconds"],
            "tokens_per_second_base": gs["base_tokens_per_second"],
            "tokens_per_second_scheme_scaled_mm": gs["scheme_tokens_per_second"],
            "tokens_per_second_scheme_emulated": ge["scheme_tokens_per_second"],
            "generation_all_finite": gs["all_finite"] and ge["all_finite"],
            "job_metrics": m,
        }
        out["schemes"][name] = entry
        rows.append((name, entry))
    pathlib.Path(args.out, "eval-bench.json").write_text(json.dumps(out, indent=2) + "\n")
    md = ["| scheme | cov | eff. bits | KL (scaled_mm) | KL (emulated) | KL mean rel. diff | per-sample KL: max abs. diff, median rel. diff "
          "| ppl rel. diff | gen. identical | eval s (scaled_mm / emulated) | tok/s base / scheme |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in rows:
        md.append(f"| {name} | {e['coverage']:.2f} | {e['effective_bits']:.2f} | "
                  f"{e['summary_scaled_mm']['logit_kl_last_token']['mean']:.4g} | "
                  f"{e['summary_emulated']['logit_kl_last_token']['mean']:.4g} | {e['kl_mean_rel_diff']:.2e} | "
                  f"{e['kl_per_sample_abs_diff_max']:.2e}, {e['kl_per_sample_rel_diff_median']:.2e} | {e['ppl_rel_diff']:.2e} | "
                  f"{e['generation_prompts_identical']} | {e['eval_seconds_scaled_mm']['total']:.1f} / "
                  f"{e['eval_seconds_emulated']['total']:.1f} | {e['tokens_per_second_base']:.1f} / "
                  f"{e['tokens_per_second_scheme_scaled_mm']:.1f} |")
    pathlib.Path(args.out, "eval-bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge")
    m.add_argument("out")
    m.add_argument("parts", nargs="+")
    c = sub.add_parser("compare")
    for flag in ("--scaled", "--emulated", "--jobs", "--out"):
        c.add_argument(flag, required=True)
    args = p.parse_args()
    if args.cmd == "merge":
        merge(args.out, args.parts)
    else:
        compare(args)


if __name__ == "__main__":
    main()

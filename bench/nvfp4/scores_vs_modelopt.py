"""Sensitivity scores for NVFP4 + FP8 against ModelOpt 0.47's own auto_quantize on the same model, data
and device (on CUDA ModelOpt uses its Triton NVFP4 kernel): Spearman per format, both times, and ours
at FP8 alone for the cost of the second format. Prints and writes one JSON.

    python bench/nvfp4/scores_vs_modelopt.py --autoquant BIN --model DIR --calib FILE --steps N \\
        --device cuda --dtype bfloat16 --work DIR --out FILE.json [--skip-modelopt]"""
import argparse
import json
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "python"))
import modelopt_reference as mr  # noqa: E402
from test_modelopt_scores import spearman  # noqa: E402


def ours(args, formats, selection, name):
    out = pathlib.Path(args.work) / name
    cmd = [args.autoquant, "quantize", "--model", args.model, "--calib", args.calib, "--out", str(out),
           "--formats", formats, *selection, "--score-steps", str(args.steps), "--calib-steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--device", args.device, "--dtype", args.dtype,
           "--baseline-cache", str(pathlib.Path(args.work) / f"cache-{name}"), "--overwrite", "--json"]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout)
    manifest = json.loads((out / "layer-sensitivity" / f"{name}_quant_manifest.json").read_text())
    return {"summary": summary, "wall_seconds": time.time() - t0, "groups": manifest["groups"],
            "effective_bits": manifest["effective_bits"]}


def main():
    ap = argparse.ArgumentParser()
    for a in ("--autoquant", "--model", "--calib", "--work", "--out"):
        ap.add_argument(a, required=True)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--skip-modelopt", action="store_true")
    args = ap.parse_args()
    pathlib.Path(args.work).mkdir(parents=True, exist_ok=True)
    fp8 = ours(args, "fp8", ["--coverage", "1"], "fp8")
    mixed = ours(args, "nvfp4,fp8", ["--effective-bits", "6"], "mixed")
    res = {"settings": vars(args),
           "ours": {"fp8_baseline_seconds": fp8["summary"].get("baseline_seconds"),
                    "mixed_baseline_seconds": mixed["summary"].get("baseline_seconds"),
                    "fp8_peak_device_bytes": fp8["summary"].get("baseline_peak_device_bytes"),
                    "mixed_peak_device_bytes": mixed["summary"].get("baseline_peak_device_bytes"),
                    "mixed_effective_bits": mixed["effective_bits"]}}
    res["ours"]["two_formats_over_fp8"] = res["ours"]["mixed_baseline_seconds"] / res["ours"]["fp8_baseline_seconds"]
    print(json.dumps(res["ours"]))
    if not args.skip_modelopt:
        t0 = time.time()
        ref = mr.run_reference(args.model, args.calib, steps=args.steps, device=args.device, dtype=args.dtype,
                               formats=("NVFP4_DEFAULT_CFG", "FP8_DEFAULT_CFG"))
        res["modelopt"] = {"seconds": ref["seconds"], "wall_seconds": time.time() - t0, "versions": ref["versions"]}
        for o, m in (("NVFP4", "NVFP4_DEFAULT_CFG"), ("FP8", "FP8_DEFAULT_CFG")):
            theirs = ref["scores_by_format"][m]
            mine = {k: float(g["scores"][o]) for k, g in mixed["groups"].items() if o in g.get("scores", {})}
            keys = sorted(set(theirs) & set(mine))
            a, b = [theirs[k] for k in keys], [mine[k] for k in keys]
            res[o] = {"spearman": spearman(a, b), "groups": len(keys),
                      "only_modelopt": sorted(set(theirs) - set(mine)), "only_ours": sorted(set(mine) - set(theirs)),
                      "median_rel_diff": sorted(abs(x - y) / abs(x) for x, y in zip(a, b) if x)[len(keys) // 2]}
            print(o, json.dumps({k: v for k, v in res[o].items() if k != "only_modelopt"}))
    pathlib.Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()

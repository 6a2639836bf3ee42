"""The vLLM check's table (scripts/gpu/verify_vllm.sh compare): for every checkpoint, what vLLM made of it
against what autoquant meant and computed.

    python3 compare.py --work VW --models M --results R --schemes "base ct-top10 ..." \
        --damaged DAMAGED:ORIGINAL --out DIR

Per checkpoint:
- loaded, or vLLM's own error;
- Linear-method agreement: every Linear vLLM built is quantized (any method but UnquantizedLinearMethod)
  exactly where the scheme's quant manifest put FP8 (the base: nowhere); a fused layer (qkv_proj,
  gate_up_proj) agrees when all its shards do;
- greedy generations: all logprobs finite; tokens equal to the base's in vLLM (agreement, informative);
- prompt log-probabilities on the evaluation set against autoquant's own logits of the same checkpoint
  (`autoquant model forward`, as deployed): mean |Δ log p| of the actual next token, and KL(vLLM ‖ ours)
  over vLLM's top-k tokens plus the rest as one bucket (a lower bound of the full KL). The base's
  vLLM-vs-ours difference is the noise floor; a scheme agrees when both means stay within 2x the floor
  (decided before any run). The damaged copy is compared with the ORIGINAL scheme's logits and must
  exceed that bound.
- vLLM's own spread (added after the first run, 2026-12-06, showed top100 differing from ours by 7x the
  base's floor): the same scheme's bytes through vLLM's two FP8 loaders (compressed-tensors `ct-topXX`
  against modelopt `mo-topXX`), mean |Δ log p| of the actual token. Where vLLM disagrees with itself by
  as much as it disagrees with us, the base's floor is not the noise floor of that scheme; the
  `x own spread` column divides by max(base floor, that spread), and the `by own spread` verdict applies
  the same 2x rule to it (a damaged copy is flagged by it when it exceeds 2x that).
--damaged may be given more than once (a damaged copy of top50 and of top100).
Writes vllm-check.json and vllm-check.md to DIR; exits 1 when any goal is missed (by the first rule).
With --vllm-only, prints vLLM's own spread per coverage from the vllm-*.json files alone.
"""
import argparse
import glob
import json
import math
import pathlib
import sys

import torch
from safetensors.torch import load_file

FUSED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
FLOOR_FACTOR = 2.0


def ours_name(vllm_name: str) -> str:
    """A vLLM Qwen2.5-VL module name in the manifest's naming (relative to the inner model)."""
    if vllm_name.startswith("language_model.model."):
        return "language_model." + vllm_name[len("language_model.model."):]
    if vllm_name == "language_model.lm_head":
        return "lm_head"
    return vllm_name


def quantized_modules(scheme_dir: pathlib.Path) -> set:
    if scheme_dir is None:
        return set()
    (manifest,) = glob.glob(str(scheme_dir / "layer-sensitivity" / "*_quant_manifest.json"))
    groups = json.load(open(manifest))["groups"]
    return {m.removeprefix("model.") for g in groups.values() if g["chosen"] != "NONE" for m in g["modules"]}


def linear_agreement(linears: dict, quantized: set):
    rows, agree = [], 0
    for name, info in sorted(linears.items()):
        base, _, leaf = ours_name(name).rpartition(".")
        shards = [f"{base}.{s}" for s in FUSED[leaf]] if leaf in FUSED else [ours_name(name)]
        wanted = {s in quantized for s in shards}
        got = info["method"] not in (None, "UnquantizedLinearMethod")
        ok = len(wanted) == 1 and wanted.pop() == got
        agree += ok
        if not ok:
            rows.append({"linear": name, "method": info["method"], "scheme": info["scheme"], "shards": shards,
                         "manifest_fp8": [s in quantized for s in shards]})
    return agree, len(linears), rows


def our_positions(logits_file: pathlib.Path, eval_file: pathlib.Path):
    """Per sample: log-softmax of our logits at every position that predicts a next prompt token, [L-1, V]."""
    logits = load_file(str(logits_file))["logits"].float()
    ev = load_file(str(eval_file))
    out = []
    for i in range(logits.shape[0]):
        n = int(ev["attention_mask"][i].sum())
        out.append((torch.log_softmax(logits[i, : n - 1].double(), -1), ev["input_ids"][i, :n].tolist()))
    return out


def logprob_diff(vllm_rows, ours):
    """(mean |Δ log p(actual)|, mean top-k-bucket KL(vLLM ‖ ours), ids equal, positions)."""
    absdiff, kls, ids_equal = [], [], True
    for row, (lp, ids) in zip(vllm_rows, ours):
        ids_equal &= row["ids"] == ids and row.get("ids_equal_ours", True)
        for pos, (actual, top_ids, top_lps) in enumerate(row["positions"]):
            ours_lp = lp[pos]
            absdiff.append(abs(actual - float(ours_lp[ids[pos + 1]])))
            p = torch.tensor(top_lps, dtype=torch.float64).exp()
            q = ours_lp[top_ids].exp()
            rest_p, rest_q = max(1.0 - float(p.sum()), 1e-12), max(1.0 - float(q.sum()), 1e-12)
            kl = float((p * (p.log() - q.log())).sum()) + rest_p * math.log(rest_p / rest_q)
            kls.append(kl)
    return sum(absdiff) / len(absdiff), sum(kls) / len(kls), ids_equal, len(absdiff)


def vllm_spread(results: pathlib.Path, a: str, b: str):
    """Mean |Δ log p| of the actual next token between two vLLM results over the same samples."""
    ra, rb = (json.load(open(results / f"vllm-{n}.json")) for n in (a, b))
    if not (ra.get("loaded") and rb.get("loaded")):
        return None
    d = [abs(pa[0] - pb[0]) for xa, xb in zip(ra["prompt_logprobs"], rb["prompt_logprobs"])
         for pa, pb in zip(xa["positions"], xb["positions"])]
    return sum(d) / len(d)


def spreads(results: pathlib.Path, names):
    """{coverage label: vLLM's ct-vs-mo spread} for every topXX with both formats present."""
    out = {}
    for n in names:
        if n.startswith("ct-") and (results / f"vllm-{n}.json").exists() and \
                (results / f"vllm-mo-{n[3:]}.json").exists():
            out[n[3:]] = vllm_spread(results, n, "mo-" + n[3:])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--schemes", required=True)
    ap.add_argument("--damaged", required=True, action="append", help="DAMAGED:ORIGINAL (repeatable)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--vllm-only", action="store_true", help="only vLLM's own spread per coverage")
    a = ap.parse_args()
    work, models, results = pathlib.Path(a.work), pathlib.Path(a.models), pathlib.Path(a.results)
    original_of = dict(d.split(":") for d in a.damaged)  # damaged copy -> the scheme it was copied from
    names = a.schemes.split() + list(original_of)
    own = spreads(results, names)
    if a.vllm_only:
        lines = ["| coverage | vLLM ct vs modelopt: mean abs dlogp |", "|---|---|"]
        lines += [f"| {c} | {v:.3e} |" for c, v in sorted(own.items(), key=lambda kv: int(kv[0][3:]))]
        (pathlib.Path(a.out) / "vllm-own-spread.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0

    def vllm_result(name):
        f = results / f"vllm-{name}.json"
        return json.load(open(f)) if f.exists() else {"loaded": False, "error": f"no result ({f.name} missing)"}

    def ours(name):
        return (our_positions(work / "ours" / f"{name}-text.safetensors", work / "eval-text.safetensors") +
                our_positions(work / "ours" / f"{name}-image.safetensors", work / "eval-image.safetensors"))

    base = vllm_result("base")
    table = []
    for name in names:
        r = vllm_result(name)
        row = {"checkpoint": name, "loaded": r["loaded"]}
        if not r["loaded"]:
            row["error"] = r.get("error")
            table.append(row)
            continue
        scheme_dir = None if name == "base" else (work / name if name in original_of else models / name)
        agree, total, wrong = linear_agreement(r["linears"], quantized_modules(scheme_dir))
        row.update(linears=total, linear_agreement=agree / total, linear_mismatches=wrong[:20],
                   fp8_linears=sum(v["method"] not in (None, "UnquantizedLinearMethod") for v in r["linears"].values()),
                   methods=sorted({f'{v["method"]}/{v["scheme"]}' for v in r["linears"].values()}),
                   generations_finite=all(g["finite"] for g in r["generations"]))
        if base.get("loaded"):
            same = [sum(x == y for x, y in zip(g["tokens"], b["tokens"])) / max(len(b["tokens"]), 1)
                    for g, b in zip(r["generations"], base["generations"])]
            row["greedy_agreement_with_base"] = sum(same) / len(same)
        mad, kl, ids_equal, n = logprob_diff(r["prompt_logprobs"], ours(original_of.get(name, name)))
        row.update(mean_abs_dlogp=mad, kl_vllm_ours=kl, prompt_ids_equal=ids_equal, positions=n,
                   load_seconds=r.get("load_seconds"))
        table.append(row)

    floor = next((t for t in table if t["checkpoint"] == "base" and t["loaded"]), None)
    ok = floor is not None
    for t in table:
        if not t["loaded"]:
            ok = False
            continue
        if floor is not None:
            t["dlogp_vs_floor"] = t["mean_abs_dlogp"] / floor["mean_abs_dlogp"]
            t["kl_vs_floor"] = t["kl_vllm_ours"] / floor["kl_vllm_ours"]
            within = t["dlogp_vs_floor"] <= FLOOR_FACTOR and t["kl_vs_floor"] <= FLOOR_FACTOR
            is_damaged = t["checkpoint"] in original_of
            t["verdict"] = ("flagged" if not within else "NOT flagged") if is_damaged else \
                ("agrees" if within else "DIFFERS")
            label = original_of.get(t["checkpoint"], t["checkpoint"]).split("-")[-1]
            spread = own.get(label)
            t["own_spread"] = spread
            t["dlogp_vs_own_spread"] = t["mean_abs_dlogp"] / max(floor["mean_abs_dlogp"], spread or 0.0)
            within_own = t["dlogp_vs_own_spread"] <= FLOOR_FACTOR
            t["verdict_own_spread"] = ("flagged" if not within_own else "NOT flagged") if is_damaged else \
                ("agrees" if within_own else "DIFFERS")
            ok &= t["verdict"] in ("agrees", "flagged")
        ok &= t["linear_agreement"] == 1.0 and t["generations_finite"] and t["prompt_ids_equal"]

    out = pathlib.Path(a.out)
    json.dump({"floor_factor": FLOOR_FACTOR, "all_goals_met": ok, "rows": table}, open(out / "vllm-check.json", "w"),
              indent=1)
    lines = ["| checkpoint | loaded | Linears (FP8) | method agreement | finite | greedy = base | prompt ids equal "
             "| mean abs dlogp | x floor | KL(vLLM‖ours) | x floor | verdict | x own spread | by own spread |",
             "|" + "---|" * 14]
    for t in table:
        if not t["loaded"]:
            lines.append(f"| {t['checkpoint']} | **no**: {t.get('error', '')[:300]} |" + " |" * 12)
            continue
        lines.append(f"| {t['checkpoint']} | yes | {t['linears']} ({t['fp8_linears']}) | "
                     f"{100 * t['linear_agreement']:.1f} % | {t['generations_finite']} | "
                     f"{100 * t.get('greedy_agreement_with_base', float('nan')):.0f} % | {t['prompt_ids_equal']} | "
                     f"{t['mean_abs_dlogp']:.3e} | {t.get('dlogp_vs_floor', float('nan')):.2f} | "
                     f"{t['kl_vllm_ours']:.3e} | {t.get('kl_vs_floor', float('nan')):.2f} | {t.get('verdict', '')} | "
                     f"{t.get('dlogp_vs_own_spread', float('nan')):.2f} | {t.get('verdict_own_spread', '')} |")
    (out / "vllm-check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("all goals met" if ok else "some goals missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

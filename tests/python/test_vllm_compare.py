"""bench/vllm/compare.py, the judge of the vLLM check (issue 24, scripts/gpu/verify_vllm.sh compare), on
results made up here with known differences, so that its verdicts can be seen to fail:
- the base's vLLM-vs-ours difference is the floor; a scheme within 2x of it agrees, one beyond DIFFERS;
- vLLM's own spread (compressed-tensors against modelopt on the same bytes) widens the floor of that
  coverage in the `by own spread` verdict only;
- a damaged copy is compared with its original's logits and must be flagged;
- a Linear whose method disagrees with the quant manifest (a fused layer's shards included) is counted."""
import json
import pathlib
import subprocess
import sys

import torch
from safetensors.torch import save_file

from aq_paths import REPO

COMPARE = REPO / "bench" / "vllm" / "compare.py"
V, L, K = 16, 12, 4  # vocabulary, tokens per sample, top-k vLLM reports
LINEARS = ["language_model.model.layers.0.self_attn.qkv_proj", "language_model.model.layers.0.mlp.down_proj",
           "language_model.lm_head"]
SHARDS = {"language_model.layers.0.self_attn." + s for s in ("q_proj", "k_proj", "v_proj")}


def write_eval(work: pathlib.Path, gen):
    for kind in ("text", "image"):
        ids = torch.randint(0, V, (2, L), generator=gen)
        save_file({"input_ids": ids, "attention_mask": torch.ones(2, L, dtype=torch.int64)},
                  str(work / f"eval-{kind}.safetensors"))


def ids_of(work, kind):
    from safetensors.torch import load_file
    return load_file(str(work / f"eval-{kind}.safetensors"))["input_ids"]


def write_ours(work: pathlib.Path, name: str, logits: dict):
    (work / "ours").mkdir(exist_ok=True)
    for kind, t in logits.items():
        save_file({"logits": t.contiguous()}, str(work / "ours" / f"{name}-{kind}.safetensors"))


def write_vllm(results: pathlib.Path, name: str, work, logits: dict, quantized_fused: bool, quantized_down: bool):
    rows = []
    for kind in ("text", "image"):
        ids = ids_of(work, kind)
        for i in range(ids.shape[0]):
            lp = torch.log_softmax(logits[kind][i].double(), -1)
            positions = []
            for pos in range(L - 1):
                top = torch.topk(lp[pos], K)
                positions.append([float(lp[pos, ids[i, pos + 1]]), top.indices.tolist(), top.values.tolist()])
            rows.append({"kind": kind, "ids": ids[i].tolist(), "positions": positions})
    method = lambda q: "CompressedTensorsLinearMethod" if q else "UnquantizedLinearMethod"  # noqa: E731
    linears = {LINEARS[0]: {"method": method(quantized_fused), "scheme": ""},
               LINEARS[1]: {"method": method(quantized_down), "scheme": ""},
               LINEARS[2]: {"method": method(False), "scheme": ""}}
    json.dump({"loaded": True, "linears": linears, "generations": [{"tokens": [1, 2, 3], "finite": True}],
               "prompt_logprobs": rows}, open(results / f"vllm-{name}.json", "w"))


def write_manifest(models: pathlib.Path, name: str, fused: bool, down: bool):
    d = models / name / "layer-sensitivity"
    d.mkdir(parents=True)
    groups = {"qkv": {"chosen": "FP8" if fused else "NONE", "modules": ["model." + s for s in sorted(SHARDS)]},
              "down": {"chosen": "FP8" if down else "NONE",
                       "modules": ["model.language_model.layers.0.mlp.down_proj"]}}
    (d / f"{name}_quant_manifest.json").write_text(json.dumps({"groups": groups}))


def test_verdicts_follow_the_floor_the_own_spread_and_the_damage(tmp_path):
    gen = torch.Generator().manual_seed(0)
    work, models, results = tmp_path / "work", tmp_path / "models", tmp_path / "results"
    for d in (work, models, results):
        d.mkdir()
    write_eval(work, gen)
    noise = lambda scale: {k: scale * torch.randn(2, L, V, generator=gen) for k in ("text", "image")}  # noqa: E731
    add = lambda a, b: {k: a[k] + b[k] for k in a}  # noqa: E731

    ours = {n: noise(3.0) for n in ("base", "ct-top50", "ct-top100", "mo-top100")}
    for n, t in ours.items():
        write_ours(work, n, t)
    # vLLM: the base and top50 near ours (the floor); top100 far from ours, and its two loaders as far
    # from each other (vLLM's own spread); the damaged copy of top50 far from its original.
    write_vllm(results, "base", work, add(ours["base"], noise(0.01)), False, False)
    write_vllm(results, "ct-top50", work, add(ours["ct-top50"], noise(0.012)), True, False)
    write_vllm(results, "ct-top100", work, add(ours["ct-top100"], noise(0.2)), True, True)
    write_vllm(results, "mo-top100", work, add(ours["ct-top100"], noise(0.2)), True, True)
    write_vllm(results, "damaged-ct-top50", work, add(ours["ct-top50"], noise(0.3)), True, False)
    write_manifest(models, "ct-top50", fused=True, down=False)
    write_manifest(models, "ct-top100", fused=True, down=True)
    write_manifest(models, "mo-top100", fused=True, down=False)  # says down_proj is not FP8; vLLM made it FP8
    write_manifest(work, "damaged-ct-top50", fused=True, down=False)

    r = subprocess.run([sys.executable, str(COMPARE), "--work", str(work), "--models", str(models), "--results",
                        str(results), "--schemes", "base ct-top50 ct-top100 mo-top100",
                        "--damaged", "damaged-ct-top50:ct-top50", "--out", str(results)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr  # top100 differs by the first rule; mo-top100 disagrees
    rows = {t["checkpoint"]: t for t in json.load(open(results / "vllm-check.json"))["rows"]}
    assert rows["base"]["verdict"] == "agrees" and rows["base"]["dlogp_vs_floor"] == 1.0
    assert rows["ct-top50"]["verdict"] == "agrees", rows["ct-top50"]
    assert rows["ct-top100"]["verdict"] == "DIFFERS", rows["ct-top100"]
    assert rows["ct-top100"]["verdict_own_spread"] == "agrees", rows["ct-top100"]
    assert rows["damaged-ct-top50"]["verdict"] == "flagged", rows["damaged-ct-top50"]
    assert rows["damaged-ct-top50"]["verdict_own_spread"] == "flagged", rows["damaged-ct-top50"]
    for name in ("base", "ct-top50", "ct-top100", "damaged-ct-top50"):
        assert rows[name]["linear_agreement"] == 1.0, rows[name]
    assert rows["mo-top100"]["linear_agreement"] == 2 / 3, rows["mo-top100"]
    assert [m["linear"] for m in rows["mo-top100"]["linear_mismatches"]] == [LINEARS[1]]
    assert all(t["prompt_ids_equal"] for t in rows.values())

"""AutoQuant sensitivity scores: ModelOpt's own `mtq.auto_quantize` (gradient method, FP8_DEFAULT_CFG
vs NONE) against `autoquant quantize`, on a tiny random Qwen2.5-VL model created by transformers and
synthetic calibration sets written by `autoquant calib synth` (with and without images).

- test_modelopt_reference_is_sane: ModelOpt runs on the CPU, scores 4 groups per decoder layer plus
  lm_head, all positive and finite, and equals the plain-torch restatement of its algorithm
  (modelopt_reference.torch_reference_scores).
- test_nvfp4_fp8_scores_match_modelopt: `mtq.auto_quantize(quantization_formats=[NVFP4_DEFAULT_CFG,
  FP8_DEFAULT_CFG])` against `autoquant quantize --formats nvfp4,fp8`: Spearman >= 0.99 per format,
  and the same costs (4.5 and 8 bits). On the CPU ModelOpt's NVFP4 kernel (CUDA only) is replaced by
  its restatement (modelopt_reference.nvfp4_on_cpu); the rest of auto_quantize is ModelOpt's.
- test_scores_match_modelopt: same scored key set and Spearman rank correlation >= 0.99; the
  comparison (both score lists, correlation, max relative difference) goes to
  $AUTOQUANT_TEST_OUT (default <build>/test-output)/modelopt_comparison_<case>.json and stdout.

Skipped with a reason when nvidia-modelopt is not importable (scripts/requirements.txt installs it),
and test_scores_match_modelopt while `autoquant quantize` does not exist yet.
See docs/modelopt-comparison.md.
"""
import importlib.util
import json
import math
import os
import pathlib
import subprocess

import pytest

import forward_helpers as fh
import modelopt_reference as mr
from aq_paths import BUILD_DIR

SAMPLES, SEQ_LEN, STEPS = 8, 32, 8
CASES = {
    "images": ["--images-per-sample", "1", "--image-size", "56x56", "--seed", "1"],
    "text": ["--images-per-sample", "0", "--seed", "2"],
}
SPEARMAN_MIN = 0.99
OUT_DIR = pathlib.Path(os.environ.get("AUTOQUANT_TEST_OUT", BUILD_DIR / "test-output"))

if importlib.util.find_spec("modelopt") is None:
    pytest.skip("nvidia-modelopt is not installed (pip install -r scripts/requirements.txt)", allow_module_level=True)


def spearman(a: list, b: list) -> float:
    """Spearman rank correlation (average ranks for ties), no numpy/scipy needed."""
    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2.0
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = math.sqrt(sum((x - ma) ** 2 for x in ra))
    vb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    return cov / (va * vb) if va and vb else float("nan")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("modelopt_model") / "model"
    fh.make_hf_model(tied=False, seed=0).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def calib_sets(autoquant_bin, model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("modelopt_calib")
    out = {}
    for case, extra in CASES.items():
        path = root / f"{case}.safetensors"
        proc = subprocess.run([str(autoquant_bin), "calib", "synth", "--model", str(model_dir), "--out", str(path),
                               "--samples", str(SAMPLES), "--seq-len", str(SEQ_LEN), *extra],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        out[case] = path
    return out


@pytest.fixture(scope="module")
def reference(model_dir, calib_sets):
    """ModelOpt's result per case, computed once (the slow part)."""
    cache = {}

    def get(case):
        if case not in cache:
            cache[case] = mr.run_reference(model_dir, calib_sets[case], steps=STEPS)
        return cache[case]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_modelopt_reference_is_sane(model_dir, calib_sets, reference, case):
    res = reference(case)
    scores = res["scores"]
    print(f"ModelOpt {res['versions']['modelopt']} ({res['seconds']:.1f} s), case {case}:")
    for k, v in mr.ranking(scores):
        print(f"  {v:.6e}  {k}")
    layers = fh.tiny_config(False).text_config.num_hidden_layers
    want = {f"language_model.layers.{i}.{m}.quant_recipe" for i in range(layers)
            for m in ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")}
    want.add("lm_head.quant_recipe")
    assert set(scores) == want
    assert all(math.isfinite(v) and v > 0 for v in scores.values()), scores
    # Members of the grouped keys, and every visual group present but not searchable.
    g = res["groups"]
    assert g["language_model.layers.0.self_attn.q_proj.quant_recipe"]["module_names"] == [
        f"language_model.layers.0.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")]
    assert g["language_model.layers.0.mlp.gate_proj.quant_recipe"]["module_names"] == [
        "language_model.layers.0.mlp.gate_proj", "language_model.layers.0.mlp.up_proj"]
    visual = [k for k in g if k.startswith("visual.")]
    assert visual and all(len(g[k]["formats"]) == 1 and g[k]["formats"][0].startswith("NONE") for k in visual)
    for k in scores:  # NONE scores 0 and comes last; FP8 costs half of NONE.
        assert g[k]["formats"][-1].startswith("NONE") and g[k]["scores"][-1] == 0.0
        assert g[k]["costs"][0] * 2 == g[k]["costs"][-1]
    assert res["best"]["is_satisfied"]

    plain = mr.torch_reference_scores(model_dir, calib_sets[case], steps=STEPS)
    assert set(plain) == set(scores)
    rel = max(abs(plain[k] - v) / v for k, v in scores.items())
    print(f"plain-torch restatement: max relative difference {rel:.3e}")
    assert rel <= 1e-5


def quantize_available(binary) -> bool:
    """Whether `autoquant --help` lists a `quantize` subcommand."""
    proc = subprocess.run([str(binary), "--help"], capture_output=True, text=True)
    return any(line.split()[:1] == ["quantize"] for line in proc.stdout.splitlines())


@pytest.mark.parametrize("case", list(CASES))
def test_scores_match_modelopt(autoquant_bin, model_dir, calib_sets, reference, tmp_path, case):
    if not quantize_available(autoquant_bin):
        pytest.skip("`autoquant quantize` is not implemented yet (`autoquant --help` does not list it)")
    out = tmp_path / f"modelopt_{case}"
    cmd = [str(autoquant_bin), "quantize", "--model", str(model_dir), "--calib", str(calib_sets[case]),
           "--out", str(out), "--coverage", "1.0", "--method", "gradient", "--score-steps", str(STEPS),
           "--calib-steps", str(STEPS), "--batch-size", "1", "--device", "cpu", "--dtype", "float32",
           "--baseline-cache", str(tmp_path / "baseline-cache"), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    manifest_path = out / "layer-sensitivity" / f"{out.name}_quant_manifest.json"
    assert manifest_path.exists(), f"{manifest_path} missing; stdout:\n{proc.stdout}"
    manifest = json.loads(manifest_path.read_text())
    ours_all = manifest["groups"]
    ours = {k: float(g["scores"]["FP8"]) for k, g in ours_all.items()
            if not g.get("disabled", False) and g.get("scores", {}).get("FP8") is not None}

    res = reference(case)
    ref = res["scores"]
    keys = sorted(ref, key=lambda k: -ref[k])
    comparison = {
        "case": case,
        "settings": res["settings"],
        "versions": res["versions"],
        "command": cmd,
        "missing_in_ours": sorted(set(ref) - set(ours)),
        "extra_in_ours": sorted(set(ours) - set(ref)),
        # Disabled (visual) groups: informative only (they do not affect the scores).
        "disabled_groups_only_in_modelopt": sorted(set(res["groups"]) - set(ours_all) - set(ref)),
        "disabled_groups_only_in_ours": sorted(set(ours_all) - set(res["groups"])),
    }
    common = [k for k in keys if k in ours]
    if common:
        a, b = [ref[k] for k in common], [ours[k] for k in common]
        comparison["keys"] = common
        comparison["modelopt_scores"] = a
        comparison["autoquant_scores"] = b
        comparison["spearman"] = spearman(a, b)
        comparison["max_rel_diff"] = max(abs(x - y) / abs(x) for x, y in zip(a, b))
        comparison["modelopt_ranking"] = common
        comparison["autoquant_ranking"] = sorted(common, key=lambda k: -ours[k])
    text = json.dumps(comparison, indent=1)
    for d in (tmp_path, OUT_DIR):
        try:
            d.mkdir(parents=True, exist_ok=True)
            (d / f"modelopt_comparison_{case}.json").write_text(text + "\n")
        except OSError:
            pass
    print(text)
    for k in common:
        print(f"  {ref[k]:.6e}  {ours[k]:.6e}  {k}")

    assert not comparison["missing_in_ours"] and not comparison["extra_in_ours"], comparison
    assert comparison["spearman"] >= SPEARMAN_MIN, comparison


@pytest.mark.parametrize("case", list(CASES))
def test_nvfp4_fp8_scores_match_modelopt(autoquant_bin, model_dir, calib_sets, tmp_path, case):
    formats = ("NVFP4_DEFAULT_CFG", "FP8_DEFAULT_CFG")
    res = mr.run_reference(model_dir, calib_sets[case], steps=STEPS, formats=formats)
    out = tmp_path / f"nvfp4_{case}"
    cmd = [str(autoquant_bin), "quantize", "--model", str(model_dir), "--calib", str(calib_sets[case]),
           "--out", str(out), "--formats", "nvfp4,fp8", "--effective-bits", "6", "--method", "gradient",
           "--score-steps", str(STEPS), "--calib-steps", str(STEPS), "--batch-size", "1", "--device", "cpu",
           "--dtype", "float32", "--baseline-cache", str(tmp_path / "baseline-cache"), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    manifest = json.loads((out / "layer-sensitivity" / f"{out.name}_quant_manifest.json").read_text())
    comparison = {"case": case, "settings": res["settings"], "versions": res["versions"], "formats": {}}
    for ours_name, theirs_name, bits in (("NVFP4", "NVFP4_DEFAULT_CFG", 4.5), ("FP8", "FP8_DEFAULT_CFG", 8.0)):
        ref = res["scores_by_format"][theirs_name]
        ours = {k: float(g["scores"][ours_name]) for k, g in manifest["groups"].items()
                if not g.get("disabled", False) and ours_name in g.get("scores", {})}
        assert set(ours) == set(ref), sorted(set(ours) ^ set(ref))
        keys = sorted(ref)
        a, b = [ref[k] for k in keys], [ours[k] for k in keys]
        rho = spearman(a, b)
        comparison["formats"][ours_name] = {"spearman": rho, "keys": keys, "modelopt": a, "autoquant": b,
                                            "max_rel_diff": max(abs(x - y) / abs(x) for x, y in zip(a, b) if x)}
        for k in keys:  # ModelOpt's cost for the format: numel x bits / 16, as ours
            g = res["groups"][k]
            at = [i for i, n in enumerate(g["formats"]) if n.startswith(theirs_name + "(")][0]
            assert g["costs"][at] == pytest.approx(g["costs"][-1] * bits / 16.0), k
        print(f"{case} {ours_name}: spearman {rho:.4f}")
        assert rho >= SPEARMAN_MIN, comparison["formats"][ours_name]
    text = json.dumps(comparison, indent=1)
    for d in (tmp_path, OUT_DIR):
        try:
            d.mkdir(parents=True, exist_ok=True)
            (d / f"modelopt_nvfp4_comparison_{case}.json").write_text(text + "\n")
        except OSError:
            pass

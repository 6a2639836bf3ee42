"""bench/modelopt/modelopt_flows.py on tiny models, on the CPU: ModelOpt producing two schemes (top10,
top50) by flow (a) (auto_quantize per scheme with the dropped groups disabled) and flow (b) (score once
with checkpoint=, then get_auto_quantize_config + mtq.quantize per scheme).

- batch 1, the `tiny` preset (separate lm_head), --schemes-dir: our schemes from `autoquant quantize`;
  the expected FP8 modules are the members of the groups our quant manifest chose FP8.
- batch 2, a tiny transformers model with tied embeddings (like Qwen2.5-VL-3B), no --schemes-dir: the
  coverage points are applied to ModelOpt's own scores (flow a runs the all-layers baseline first); the
  expected FP8 modules are recomputed here from the scores in flow (b)'s search-state file with our rule
  (the floor(X * N + 0.5) lowest of the N searchable groups), and lm_head (the tied embedding) is never
  searched or quantized.

Checked from the files, not from the script's own checks: exit 0; the JSON has every step of both flows,
2 measured schemes and an extrapolation; each export's modules stored as float8_e4m3fn are exactly the
expected ones (each with a weight_scale and an input_scale); the two schemes' exports differ; flows (a)
and (b) wrote bit-identical tensors for the same scheme. A third run with a spent time budget skips
everything and says so.

Skipped when nvidia-modelopt is not importable (scripts/requirements.txt installs it).
"""
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from aq_paths import REPO

if importlib.util.find_spec("modelopt") is None:
    pytest.skip("nvidia-modelopt is not installed (pip install -r scripts/requirements.txt)", allow_module_level=True)

SCRIPT = REPO / "bench" / "modelopt" / "modelopt_flows.py"
SCHEMES = ["top10", "top50"]
COVERAGE = {"top10": 0.1, "top50": 0.5}
STEPS = 2
A_STEPS = ["load_model", "auto_quantize", "export"]
A_BASELINE = ["load_model_baseline", "baseline_auto_quantize"]
B_FIXED = ["load_model", "copy_model_for_scoring", "score_auto_quantize", "load_search_state"]
B_SCHEME = ["get_auto_quantize_config", "copy_model", "quantize_calibrate", "export"]
FP8 = "torch.float8_e4m3fn"


def norm(name: str) -> str:
    """One spelling for a module name: the exports use 'model.layers.N...', our manifests and ModelOpt
    'model.language_model.layers.N...'."""
    for old, new in (("model.language_model.", "language_model."), ("model.layers.", "language_model.layers."),
                     ("model.visual.", "visual.")):
        if name.startswith(old):
            return new + name[len(old):]
    return name


def read_export(d) -> dict:
    """{tensor name: (dtype string, bytes)} of every safetensors file in an export."""
    from safetensors import safe_open
    out = {}
    files = sorted(d.glob("*.safetensors"))
    assert files, f"no safetensors in {d}"
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                t = st.get_tensor(k)
                out[k] = (str(t.dtype), t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return out


@pytest.fixture(scope="module")
def make_inputs(autoquant_bin, tmp_path_factory):
    """kind -> (base model, calibration file, schemes dir or None), made once per kind. "preset":
    `autoquant model init --preset tiny` and our top10/top50 from `autoquant quantize`; "tied":
    forward_helpers' tiny model with tied embeddings, no schemes of ours."""
    cache = {}

    def make(kind):
        if kind not in cache:
            cache[kind] = _make_inputs(autoquant_bin, tmp_path_factory.mktemp(f"modelopt_flows_{kind}"), kind)
        return cache[kind]

    return make


def _make_inputs(autoquant_bin, root, kind):
    base, calib, schemes = root / "base", root / "calib.safetensors", root / "schemes"

    def run(*cmd):
        proc = subprocess.run([str(autoquant_bin), *cmd], capture_output=True, text=True)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"

    if kind == "preset":
        run("model", "init", "--preset", "tiny", "--out", str(base), "--seed", "0")
    else:
        import forward_helpers as fh
        fh.make_hf_model(tied=True, seed=0).save_pretrained(base)
    run("calib", "synth", "--model", str(base), "--out", str(calib), "--samples", "8", "--seq-len", "96",
        "--images-per-sample", "1", "--image-size", "56x56", "--seed", "1")
    if kind != "preset":
        return base, calib, None
    for s in SCHEMES:
        run("quantize", "--model", str(base), "--calib", str(calib), "--out", str(schemes / s), "--coverage", s,
            "--device", "cpu", "--dtype", "float32", "--calib-steps", "4", "--score-steps", "4",
            "--baseline-cache", str(root / "baseline-cache"))
    return base, calib, schemes


def run_flows(inputs, tmp_path, batch_size, *extra):
    base, calib, schemes = inputs
    out = tmp_path / "flows.json"
    cmd = [sys.executable, str(SCRIPT), "--model", str(base), "--calib", str(calib),
           *(["--schemes-dir", str(schemes)] if schemes else []),
           "--schemes", ",".join(SCHEMES), "--max-schemes", "2", "--steps", str(STEPS), "--batch-size",
           str(batch_size), "--device", "cpu", "--dtype", "float32", "--flows", "a,b", "--work",
           str(tmp_path / "work"), "--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.exists(), f"{' '.join(cmd)}\n{proc.stderr[-4000:]}"
    return proc, json.loads(out.read_text())


def expected_from_manifest(schemes_dir, sc) -> set:
    manifest = json.loads((schemes_dir / sc / "layer-sensitivity" / f"{sc}_quant_manifest.json").read_text())
    return {norm(m) for g in manifest["groups"].values() if g["chosen"] == "FP8" for m in g["modules"]}


def expected_from_scores(search_state_file, sc) -> set:
    """Our coverage rule on ModelOpt's FP8 scores, restated: the floor(X * N + 0.5) lowest of N groups."""
    state = torch.load(str(search_state_file), weights_only=False)
    groups = []
    for key, st in state["candidate_stats"].items():
        names = [str(f) for f in st["formats"]]
        if any(n.startswith("FP8") for n in names):
            groups.append((float(st["scores"][[n.startswith("FP8") for n in names].index(True)]),
                           key.removeprefix("model."), st["module_names"]))
    groups.sort(key=lambda g: (g[0], g[1]))
    n = int(COVERAGE[sc] * len(groups) + 0.5)
    return {norm(m) for g in groups[:n] for m in g[2]}


@pytest.mark.parametrize("batch_size,kind", [(1, "preset"), (2, "tied")])
def test_flows_export_the_schemes(make_inputs, tmp_path, batch_size, kind):
    inputs = make_inputs(kind)
    proc, res = run_flows(inputs, tmp_path, batch_size)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert res["complete"] and res["exit_code"] == 0 and not res["errors"] and not res["skipped"], res["errors"]
    s = res["settings"]
    assert (s["steps"], s["batch_size"], s["samples_used"], s["seq_len"]) == (STEPS, batch_size, STEPS * batch_size, 96)
    assert s["tied_embeddings"] == (kind == "tied")
    assert s["base_disabled_layers"] == (["*visual*", "lm_head"] if kind == "tied" else ["*visual*"])
    assert res["versions"]["modelopt"] and res["versions"]["torch"] and res["versions"]["transformers"]
    assert [x["name"] for x in res["schemes"]] == SCHEMES

    a, b = res["flows"]["a"], res["flows"]["b"]
    baseline = [(None, st) for st in A_BASELINE] if kind == "tied" else []
    assert [(x["scheme"], x["step"]) for x in a["steps"]] == baseline + [(sc, st) for sc in SCHEMES for st in A_STEPS]
    assert [(x["scheme"], x["step"]) for x in b["steps"]] == (
        [(None, st) for st in B_FIXED] + [(sc, st) for sc in SCHEMES for st in B_SCHEME])
    for f in (a, b):
        assert all(x["seconds"] >= 0 for x in f["steps"])
        assert f["measured_schemes"] == 2 and f["extrapolated_10_seconds"] > f["measured_seconds"] > 0
        assert [e["scheme"] for e in f["per_scheme"]] == SCHEMES
        assert all(e["export_bytes"] > 0 for e in f["per_scheme"])
        assert "process_max_rss_bytes_cumulative" in f["peak_memory"]
    assert (a["fixed_seconds"] > 0) == (kind == "tied")  # the baseline run is flow a's fixed part
    assert b["search_checkpoint"]["bytes"] > 0
    assert all(e["solver_matches_selection"] and e["disabled_not_in_scheme"] == [] for e in a["per_scheme"])
    assert all(e["none_not_in_scheme"] == [] for e in b["per_scheme"])

    _, _, schemes_dir = inputs
    exports = {}
    for flow, f in (("a", a), ("b", b)):
        for e in f["per_scheme"]:
            sc = e["scheme"]
            want = (expected_from_manifest(schemes_dir, sc) if schemes_dir else
                    expected_from_scores(tmp_path / "work" / "b" / "autoquant_search_state.pth", sc))
            assert want, sc
            t = read_export(tmp_path / "work" / flow / sc)
            fp8 = {norm(k[:-len(".weight")]) for k, (dt, _) in t.items() if k.endswith(".weight") and dt == FP8}
            assert fp8 == want, (flow, sc, sorted(fp8 ^ want))
            for m in fp8:  # a per-tensor weight scale and a static input scale with every FP8 weight
                raw = next(k[:-len(".weight")] for k in t if k.endswith(".weight") and norm(k[:-len(".weight")]) == m)
                assert f"{raw}.weight_scale" in t and f"{raw}.input_scale" in t, (flow, sc, m)
            never_fp8 = ("visual", "lm_head") if kind == "tied" else ("visual",)
            assert not any(dt == FP8 for k, (dt, _) in t.items()
                           if k.startswith(never_fp8) or any(f".{n}" in k for n in never_fp8)), (flow, sc)
            exports[flow, sc] = (t, fp8)

    for flow in ("a", "b"):
        (t1, f1), (t2, f2) = exports[flow, SCHEMES[0]], exports[flow, SCHEMES[1]]
        assert f1 < f2, (flow, f1, f2)  # top10's FP8 modules are a strict subset of top50's
        assert any(t1[k] != t2[k] for k in set(t1) & set(t2)), flow
    for sc in SCHEMES:
        assert exports["a", sc][0] == exports["b", sc][0], sc
        assert res["a_vs_b_exports"][sc]["identical"] and res["a_vs_b_exports"][sc]["same_selection"]


def test_time_budget_skips(make_inputs, tmp_path):
    proc, res = run_flows(make_inputs("preset"), tmp_path, 1, "--time-budget", "0.001")
    assert proc.returncode == 0, proc.stderr[-4000:]
    a, b = res["flows"]["a"], res["flows"]["b"]
    assert a["skipped"] == SCHEMES and a["measured_schemes"] == 0 and a["extrapolated_10_seconds"] is None
    assert b["skipped"] == SCHEMES and b.get("skipped_scoring") and b["measured_schemes"] == 0
    assert {(x["flow"], x["what"]) for x in res["skipped"]} == {("a", "top10"), ("a", "top50"), ("b", "scoring")}
    assert not (tmp_path / "work" / "a").exists() and not (tmp_path / "work" / "b").exists()

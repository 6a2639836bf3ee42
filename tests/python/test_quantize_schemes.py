"""Per-coverage schemes from one baseline: the regression tests for the seed bug ("top10 … top100"
coverage schemes exported bit-identical weights).

One tiny random model (`autoquant model init --preset tiny`, legacy key names), one synthetic
calibration set and one baseline cache are shared by the module; schemes at coverage 0.1, 0.5 and
1.0 are exported from them.

- test_scheme_tensors_follow_manifest: per scheme (default format, compressed-tensors), the FP8
  modules are exactly the member modules of the manifest's quantized groups; each holds F8_E4M3
  weight + weight_scale and input_scale of shape [1] in the base weight's dtype; every other tensor
  is the base's, bit for bit, under the base's name; nothing extra.
- test_scheme_pairs_differ_exactly_where_manifests_do: pairwise, the modules whose FP8-ness differs
  are exactly the member modules of the groups whose chosen formats differ (and that set is not
  empty: the seed bug).
- test_coverage_manifest_partition_and_rounding: selected + dropped partition the quant manifest's
  group keys (no duplicates), selected == quantized groups == the n least-sensitive enabled groups
  of sensitivity_ranking with n = floor(X * N + 0.5), N = enabled groups (also with one group
  disabled, so N changes).
- test_baseline_reuse: the 2nd and 3rd scheme reuse the baseline (baseline_reused, 0 scoring
  passes, same key); another calibration set (other synth seed) or --method kl_div does not.
- test_diff_*: `autoquant diff` exits 0 on the three schemes, 1 with "identical" for a copied scheme,
  1 when a manifest disagrees with its weights. Skipped while `autoquant diff` is not built.
- test_bad_*: bad requests exit 2 with a message naming the problem and leave nothing behind
  (test_output_safety.py has the rest of the refusals).
"""
import hashlib
import itertools
import json
import math
import re
import shutil

import pytest

import quant_helpers as qh

COVERAGES = [0.1, 0.5, 1.0]
CALIB = ["--samples", "8", "--seq-len", "32", "--images-per-sample", "1", "--image-size", "56x56"]


@pytest.fixture(scope="module")
def base(autoquant_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("schemes")
    model, calib, cache = root / "model", root / "calib.safetensors", root / "cache"
    qh.run(autoquant_bin, "model", "init", "--preset", "tiny", "--out", model, "--seed", "0", check=True)
    qh.run(autoquant_bin, "calib", "synth", "--model", model, "--out", calib, *CALIB, "--seed", "1", check=True)
    return {"root": root, "model": model, "calib": calib, "cache": cache,
            "tensors": qh.read_checkpoint(model)}


@pytest.fixture(scope="module")
def schemes(autoquant_bin, base):
    """coverage -> {"dir", "summary"}; exported in order, so 0.1 computes the baseline."""
    out = {}
    for cov in COVERAGES:
        d = base["root"] / f"top{int(round(cov * 100))}"
        _, summary = qh.quantize(autoquant_bin, base["model"], base["calib"], d, "--coverage", str(cov),
                                 cache=base["cache"])
        out[cov] = {"dir": d, "summary": summary}
    return out


def _fp8_set(scheme_dir):
    return qh.fp8_modules(qh.read_checkpoint(scheme_dir))


def _manifest_modules(manifest, groups, base_keys):
    return {qh.checkpoint_module_name(m, base_keys) for g in groups for m in manifest["groups"][g]["modules"]}


# ----------------------------------------------------------------------------- tensors vs manifests

@pytest.mark.parametrize("cov", COVERAGES)
def test_scheme_tensors_follow_manifest(base, schemes, cov):
    d = schemes[cov]["dir"]
    manifest = qh.quant_manifest(d)
    tensors = qh.read_checkpoint(d)
    base_t = base["tensors"]
    quantized = _manifest_modules(manifest, qh.quantized_groups(manifest), base_t)
    assert quantized, "scheme quantizes nothing"
    assert qh.fp8_modules(tensors) == quantized
    assert schemes[cov]["summary"]["groups_quantized"] == len(qh.quantized_groups(manifest))
    assert schemes[cov]["summary"]["groups_total"] == len(manifest["groups"])

    expected_names = set(base_t) | {f"{m}.{s}" for m in quantized for s in ("weight_scale", "input_scale")}
    assert set(tensors) == expected_names, {"missing": expected_names - set(tensors),
                                            "extra": set(tensors) - expected_names}
    for m in quantized:
        dt, shape, _ = tensors[m + ".weight"]
        assert (dt, shape) == ("F8_E4M3", base_t[m + ".weight"][1]), m
        base_dtype = base_t[m + ".weight"][0]
        for s in ("weight_scale", "input_scale"):
            dt, shape, _ = tensors[f"{m}.{s}"]
            assert (dt, shape) == (base_dtype, (1,)), \
                f"{m}.{s}: {dt} {shape} (compressed-tensors scales are [1] in the checkpoint's dtype)"
            value = float(qh.to_tensor(tensors[f"{m}.{s}"]))
            assert math.isfinite(value) and value > 0, f"{m}.{s} = {value}"
    for name, raw in base_t.items():
        if name.endswith(".weight") and name[:-len(".weight")] in quantized:
            continue
        assert tensors[name] == raw, f"{name} is not bit-identical to the base"


def test_scheme_pairs_differ_exactly_where_manifests_do(base, schemes):
    base_keys = base["tensors"]
    for a, b in itertools.combinations(COVERAGES, 2):
        ma, mb = qh.quant_manifest(schemes[a]["dir"]), qh.quant_manifest(schemes[b]["dir"])
        assert set(ma["groups"]) == set(mb["groups"])
        assert ma["baseline_key"] == mb["baseline_key"]
        groups_differ = {g for g in ma["groups"] if ma["groups"][g]["chosen"] != mb["groups"][g]["chosen"]}
        assert groups_differ, f"top{a} and top{b}: manifests choose the same formats"
        fa, fb = _fp8_set(schemes[a]["dir"]), _fp8_set(schemes[b]["dir"])
        assert fa ^ fb == _manifest_modules(ma, groups_differ, base_keys), (a, b)
        ta, tb = qh.read_checkpoint(schemes[a]["dir"]), qh.read_checkpoint(schemes[b]["dir"])
        assert ta != tb, f"top{a} and top{b} have bit-identical tensors (the seed bug)"
        # Modules quantized in both must hold the same bytes (same base weight, same scale rule).
        for m in fa & fb:
            assert ta[m + ".weight"] == tb[m + ".weight"], m
            assert ta[m + ".weight_scale"] == tb[m + ".weight_scale"], m
            assert ta[m + ".input_scale"] == tb[m + ".input_scale"], m


def _check_coverage(scheme_dir, coverage, disabled_groups=()):
    manifest, cov = qh.quant_manifest(scheme_dir), qh.coverage_manifest(scheme_dir)
    keys = list(manifest["groups"])
    sel, drop = cov["selected_layers"], cov["dropped_layers"]
    assert len(sel) == len(set(sel)) and len(drop) == len(set(drop)), "duplicated keys"
    assert not set(sel) & set(drop), set(sel) & set(drop)
    assert set(sel) | set(drop) == set(keys) and len(sel) + len(drop) == len(keys)
    assert set(sel) == qh.quantized_groups(manifest)
    ranking = manifest["sensitivity_ranking"]
    assert sorted(ranking) == sorted(keys)
    disabled = {k for k, g in manifest["groups"].items() if g["disabled"]}
    assert disabled == set(disabled_groups)
    enabled = [k for k in ranking if k not in disabled]
    n = math.floor(coverage * len(enabled) + 0.5)
    assert len(sel) == n, f"coverage {coverage} of {len(enabled)} enabled groups: expected {n}, got {len(sel)}"
    assert set(sel) == set(enabled[:n]), "selected groups are not the least sensitive enabled ones"
    return manifest


@pytest.mark.parametrize("cov", COVERAGES)
def test_coverage_manifest_partition_and_rounding(schemes, cov):
    manifest = _check_coverage(schemes[cov]["dir"], cov)
    assert manifest["num_quantized"] == len(qh.quantized_groups(manifest))


def test_coverage_counts_only_enabled_groups(autoquant_bin, base, schemes):
    """Disable one group (q/k/v of layer 1, via a pattern on one member): N drops by one, and the
    rounding (halves up) applies to the enabled groups only."""
    manifest = qh.quant_manifest(schemes[1.0]["dir"])
    n_groups = len(manifest["groups"])
    d = base["root"] / "disabled"
    qh.quantize(autoquant_bin, base["model"], base["calib"], d, "--coverage", "0.5",
                "--disabled-layers", "*layers.1.self_attn.k_proj", cache=base["cache"])
    m = _check_coverage(d, 0.5, disabled_groups=["language_model.layers.1.self_attn.q_proj.quant_recipe"])
    assert m["num_quantized"] == math.floor(0.5 * (n_groups - 1) + 0.5)
    assert "language_model.layers.1.self_attn.q_proj.quant_recipe" not in qh.quantized_groups(m)


# ----------------------------------------------------------------------------- baseline reuse

def test_baseline_reuse(autoquant_bin, base, schemes):
    first, *rest = (schemes[c]["summary"] for c in COVERAGES)
    assert first["baseline_reused"] is False and first["scoring_passes"] >= 1
    for s in rest:
        assert s["baseline_reused"] is True, s
        assert s["scoring_passes"] == 0, s
        assert s["baseline_key"] == first["baseline_key"]

    other_calib = base["root"] / "calib_seed2.safetensors"
    qh.run(autoquant_bin, "calib", "synth", "--model", base["model"], "--out", other_calib, *CALIB, "--seed", "2",
           check=True)
    _, s = qh.quantize(autoquant_bin, base["model"], other_calib, base["root"] / "other_calib", "--coverage", "0.5",
                       cache=base["cache"])
    assert s["baseline_reused"] is False and s["scoring_passes"] >= 1, s
    assert s["baseline_key"] != first["baseline_key"]

    _, k = qh.quantize(autoquant_bin, base["model"], base["calib"], base["root"] / "kl_div", "--coverage", "0.5",
                       "--method", "kl_div", cache=base["cache"])
    assert k["baseline_reused"] is False and k["scoring_passes"] >= 1, k
    assert k["baseline_key"] not in (first["baseline_key"], s["baseline_key"])
    assert qh.quant_manifest(base["root"] / "kl_div")["method"] == "kl_div"

    # ... and the kl_div baseline is itself reused by the next kl_div scheme.
    _, k2 = qh.quantize(autoquant_bin, base["model"], base["calib"], base["root"] / "kl_div2", "--coverage", "1.0",
                        "--method", "kl_div", cache=base["cache"])
    assert k2["baseline_reused"] is True and k2["scoring_passes"] == 0 and k2["baseline_key"] == k["baseline_key"]


# ----------------------------------------------------------------------------- autoquant diff

@pytest.fixture(scope="module")
def diff_available(autoquant_bin):
    if not qh.has_subcommand(autoquant_bin, "diff"):
        pytest.skip("`autoquant diff` is not in `autoquant --help` yet")


def test_diff_distinct_schemes(autoquant_bin, schemes, diff_available):
    dirs = [schemes[c]["dir"] for c in COVERAGES]
    proc, out = qh.diff(autoquant_bin, *dirs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["ok"] is True
    assert len(out["pairs"]) == 3
    manifests = {str(d): qh.quant_manifest(d) for d in dirs}
    names = {str(d): qh.quant_manifest(d)["scheme"] for d in dirs}
    for pair in out["pairs"]:
        assert pair["identical"] is False and pair["max_abs_diff"] > 0, pair
        # pair["a"]/["b"] may be the scheme names or the dirs
        ma = next(m for d, m in manifests.items() if pair["a"] in (d, names[d]) or d.endswith(pair["a"]))
        mb = next(m for d, m in manifests.items() if pair["b"] in (d, names[d]) or d.endswith(pair["b"]))
        expected = {g for g in ma["groups"] if ma["groups"][g]["chosen"] != mb["groups"][g]["chosen"]}
        assert set(pair["groups_differ"]) == expected, pair
    assert all(s["ok"] and not s["problems"] for s in out["self_check"]), out["self_check"]


def test_diff_flags_identical_copy(autoquant_bin, base, schemes, diff_available):
    copy = qh.copy_scheme(schemes[0.5]["dir"], base["root"] / "top50_copy")
    try:
        proc, out = qh.diff(autoquant_bin, schemes[0.1]["dir"], schemes[0.5]["dir"], copy)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert out["ok"] is False
        identical = [p for p in out["pairs"] if p["identical"]]
        assert len(identical) == 1 and identical[0]["max_abs_diff"] == 0, out["pairs"]
        # Without --json it says so in words.
        plain = qh.run(autoquant_bin, "diff", schemes[0.5]["dir"], copy)
        assert plain.returncode == 1
        assert "identical" in (plain.stdout + plain.stderr).lower()
    finally:
        shutil.rmtree(copy)


def test_diff_flags_manifest_disagreeing_with_weights(autoquant_bin, base, schemes, diff_available):
    copy = qh.copy_scheme(schemes[0.5]["dir"], base["root"] / "top50_edited")
    try:
        path = qh.quant_manifest_path(copy)
        manifest = json.loads(path.read_text())
        victim = sorted(qh.quantized_groups(manifest))[0]
        manifest["groups"][victim]["chosen"] = "NONE"  # the weights still hold FP8 there
        path.write_text(json.dumps(manifest, indent=2))
        proc, out = qh.diff(autoquant_bin, schemes[0.1]["dir"], copy)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert out["ok"] is False
        bad = [s for s in out["self_check"] if not s["ok"]]
        assert len(bad) == 1 and bad[0]["problems"], out["self_check"]
    finally:
        shutil.rmtree(copy)


# ----------------------------------------------------------------------------- bad requests

def _tree_digest(d):
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(d.rglob("*"))}


def _bad(autoquant_bin, base, out_name, *extra):
    out = base["root"] / out_name
    proc, _ = qh.quantize(autoquant_bin, base["model"], base["calib"], out, *extra, cache=base["cache"], check=False)
    assert not out.exists(), f"{out} was created by a failed request"
    return proc


def test_bad_disable_pattern(autoquant_bin, base, schemes):
    proc = _bad(autoquant_bin, base, "bad_disable", "--coverage", "0.5", "--disabled-layers", "nomatch.*")
    assert proc.returncode == 2, proc.stderr
    assert "nomatch.*" in proc.stderr


def test_bad_coverage_manifest(autoquant_bin, base, schemes):
    cov = qh.coverage_manifest(schemes[0.5]["dir"])
    missing = cov["dropped_layers"].pop(0)
    duplicated = cov["selected_layers"][0]
    cov["dropped_layers"] += ["bogus.layers.9.quant_recipe", duplicated]
    path = base["root"] / "bad_coverage.json"
    path.write_text(json.dumps(cov))
    proc = _bad(autoquant_bin, base, "bad_manifest", "--coverage-manifest", path)
    assert proc.returncode == 2, proc.stderr
    for key, word in ((missing, "missing"), ("bogus.layers.9.quant_recipe", "extra"), (duplicated, "duplicate")):
        assert key in proc.stderr, f"{word} key {key} not named: {proc.stderr}"
        assert word in proc.stderr.lower()


def test_bad_effective_bits(autoquant_bin, base, schemes):
    proc = _bad(autoquant_bin, base, "bad_bits", "--effective-bits", "4")
    assert proc.returncode == 2, proc.stderr
    # All groups FP8 is the least one can do: the coverage-1.0 scheme's effective bits.
    minimum = schemes[1.0]["summary"]["effective_bits"]
    m = re.search(r"minimum achievable is ([0-9.]+)", proc.stderr)
    assert m, proc.stderr
    assert float(m.group(1)) == pytest.approx(minimum, abs=1e-3)


def test_bad_existing_out_untouched(autoquant_bin, base, schemes):
    d = schemes[0.1]["dir"]
    before, siblings = _tree_digest(d), set(d.parent.iterdir())
    proc, _ = qh.quantize(autoquant_bin, base["model"], base["calib"], d, "--coverage", "1.0",
                          cache=base["cache"], check=False)
    assert proc.returncode == 2, proc.stderr
    assert "exists" in proc.stderr and "--overwrite" in proc.stderr
    assert _tree_digest(d) == before
    assert set(d.parent.iterdir()) == siblings, "leftovers next to the output dir"


def test_bad_coverage_and_manifest_together(autoquant_bin, base, schemes):
    manifest = next(qh.layer_sensitivity(schemes[0.5]["dir"]).glob("*_coverage_from_baseline.json"))
    proc = _bad(autoquant_bin, base, "bad_both", "--coverage", "0.5", "--coverage-manifest", manifest)
    assert proc.returncode == 2, proc.returncode
    assert "--coverage" in proc.stderr and "--coverage-manifest" in proc.stderr

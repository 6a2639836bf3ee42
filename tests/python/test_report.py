"""`autoquant report`: three fake but schema-valid evaluated schemes (evaluation.json and the quant
manifest, all the report reads) with known numbers. Checks report.json's points and findings,
report.md's table, report.png (read back: its size, that it is not blank, its format mark) and that
every marker and error bar sits where report.json says (the drawn matplotlib artists, compared with
the JSON); then the refusals and exit codes: identical schemes (1), a scheme without evaluation.json,
mixed eval sets, a job id, an output inside a scheme, an existing report without --overwrite, a
plot that cannot be drawn (2)."""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

FORMAT = "autoquant.report.v1"

# name: (coverage, effective bits, groups quantized, ppl delta + ci, mse + ci, kl + ci)
# top100 shows less KL than top50 with disjoint intervals (an inversion beyond noise) and a smaller
# perplexity delta with overlapping intervals (within noise); everything else grows with coverage.
SCHEMES = {
    "top10": dict(coverage=0.1, bits=15.2, quantized=2, delta=(0.05, 0.02, 0.08), mse=(0.01, 0.008, 0.012),
                  kl=(0.001, 0.0008, 0.0012)),
    "top50": dict(coverage=0.5, bits=12.0, quantized=10, delta=(0.2, 0.15, 0.25), mse=(0.03, 0.025, 0.035),
                  kl=(0.004, 0.0035, 0.0045)),
    "top100": dict(coverage=1.0, bits=8.0, quantized=20, delta=(0.18, 0.1, 0.3), mse=(0.05, 0.04, 0.06),
                   kl=(0.003, 0.0028, 0.0032)),
}
BASE_PPL = 12.0
SAMPLES = 6


def evaluation_json(name, s, eval_fingerprint="e" * 64, samples=None):
    delta, d_lo, d_hi = s["delta"]
    per_sample = samples if samples is not None else [
        {"index": i, "has_images": i % 2 == 0, "tokens": 50, "nll_base": 100.0 + i,
         "nll_scheme": 100.0 + i + s["delta"][0] * (1 + i / 10), "logit_mse_last_token": s["mse"][0] * (1 + i / 20),
         "logit_kl_last_token": s["kl"][0] * (1 + i / 20)} for i in range(SAMPLES)]
    return {
        "format": "autoquant.evaluation.v1", "scheme": name,
        "producer": {"name": "autoquant", "version": "0.1.0"},
        "base_model_fingerprint": "b" * 64,
        "eval_set": {"path": "/data/eval-captions.safetensors", "fingerprint": eval_fingerprint,
                     "samples": SAMPLES, "samples_with_images": SAMPLES // 2},
        "scheme_info": {"coverage": s["coverage"], "coverage_requested": True, "effective_bits": s["bits"],
                        "groups_quantized": s["quantized"], "groups_total": 20, "quantized_linears": 7 * s["quantized"]},
        "execution": {"device": "cuda:0", "dtype": "bfloat16", "fp8_matmul": "scaled_mm", "batch_size": 4},
        "summary": {
            "perplexity": {"base": BASE_PPL, "scheme": BASE_PPL + delta, "delta": delta, "delta_ci95": [d_lo, d_hi],
                           "tokens": 50 * SAMPLES, "samples": SAMPLES},
            "logit_mse_last_token": {"mean": s["mse"][0], "ci95": list(s["mse"][1:]), "samples": SAMPLES // 2,
                                     "over": "samples_with_images"},
            "logit_kl_last_token": {"mean": s["kl"][0], "ci95": list(s["kl"][1:]), "samples": SAMPLES // 2,
                                    "over": "samples_with_images"},
        },
        "per_sample": per_sample,
        "generation": {
            "max_new_tokens": 16, "all_finite": True, "mean_agreement": 16 - 10 * s["coverage"],
            "base_tokens_per_second": 40.0, "scheme_tokens_per_second": 42.0,
            "prompts": [{"index": 1, "has_images": False, "prompt_tokens": 50, "base_tokens": [1, 2, 3],
                         "scheme_tokens": [1, 2, 3], "agreement": 3, "finite": True}],
        },
        "seconds": {"metrics": 1.5, "generation": 0.5},
    }


def manifest_json(name, s, digests=None):
    tensors = digests or {f"model.layers.{i}.weight": {"file": "model-00001-of-00001.safetensors",
                                                        "sha256": f"{name}-{i}".encode().hex().ljust(64, "0")}
                          for i in range(3)}
    return {"scheme": name, "producer": {"name": "autoquant", "version": "0.1.0"}, "format": "compressed-tensors",
            "effective_bits": s["bits"], "coverage": s["coverage"], "num_groups": 20, "num_quantized": s["quantized"],
            "integrity": {"algorithm": "sha256", "tensors": tensors}}


def write_scheme(root: pathlib.Path, name, s, evaluation=None, manifest=None) -> pathlib.Path:
    d = root / name / "layer-sensitivity"
    d.mkdir(parents=True)
    (d / "evaluation.json").write_text(json.dumps(evaluation or evaluation_json(name, s), indent=2))
    (d / f"{name}_quant_manifest.json").write_text(json.dumps(manifest or manifest_json(name, s), indent=2))
    return root / name


@pytest.fixture
def sweep(tmp_path):
    """The three scheme directories, in an order other than by coverage."""
    root = tmp_path / "models"
    return [write_scheme(root, n, SCHEMES[n]) for n in ("top100", "top10", "top50")]


@pytest.fixture(scope="module")
def plot_env(client_package):
    """The environment under which `autoquant report` finds this tree's autoquant_client."""
    _, target = client_package
    env = dict(os.environ)
    env["AUTOQUANT_PYTHON"] = sys.executable
    env["PYTHONPATH"] = os.pathsep.join([str(target)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def report(autoquant_bin, *args, env=None):
    return subprocess.run([str(autoquant_bin), "report", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def plot_mismatches(report_json: dict, axes) -> list:
    """Where the drawn markers and error bars differ from report.json: for every subplot (rows: KL,
    MSE, ppl delta; columns: coverage %, effective bits) each scheme's errorbar container (its marker
    at (x, mean), its bar from ci95[0] to ci95[1]) and the base's star at (0 % or 16 bits, 0)."""
    from matplotlib.container import ErrorbarContainer
    rows = [("logit_kl_last_token", "mean", "ci95"), ("logit_mse_last_token", "mean", "ci95"),
            ("perplexity", "delta", "delta_ci95")]
    cols = [lambda p: p["coverage"] * 100, lambda p: p["effective_bits"]]
    bad = []

    def close(a, b):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)

    for r, (key, mean_key, ci_key) in enumerate(rows):
        for c, x_of in enumerate(cols):
            ax = axes[r][c]
            bars = {cont.get_label(): cont for cont in ax.containers if isinstance(cont, ErrorbarContainer)}
            if set(bars) != {p["scheme"] for p in report_json["points"]}:
                bad.append((r, c, "schemes drawn", sorted(bars)))
            for p in report_json["points"]:
                cont = bars.get(p["scheme"])
                if cont is None:
                    continue
                data_line, _, bar_cols = cont.lines
                want = (x_of(p), p[key][mean_key])
                got = (data_line.get_xdata()[0], data_line.get_ydata()[0])
                if not (close(got[0], want[0]) and close(got[1], want[1])):
                    bad.append((r, c, p["scheme"], "marker", got, want))
                (seg,) = bar_cols[0].get_segments()
                lo, hi = p[key][ci_key]
                if not (close(seg[0][0], want[0]) and close(seg[1][0], want[0]) and close(seg[0][1], lo)
                        and close(seg[1][1], hi)):
                    bad.append((r, c, p["scheme"], "error bar", seg.tolist(), [[want[0], lo], [want[0], hi]]))
            base = [ln for ln in ax.get_lines() if ln.get_label().startswith("base")]
            want_base = (x_of(report_json["base"]), 0.0)
            if len(base) != 1 or not (close(base[0].get_xdata()[0], want_base[0])
                                      and close(base[0].get_ydata()[0], want_base[1])):
                bad.append((r, c, "base", [(ln.get_xdata(), ln.get_ydata()) for ln in base], want_base))
    return bad


def test_report_numbers_findings_markdown_and_png(autoquant_bin, sweep, tmp_path, plot_env):
    out = tmp_path / "report"
    proc = report(autoquant_bin, *sweep, "--out", out, env=plot_env)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout.splitlines() == [str(out / "report.json"), str(out / "report.md"), str(out / "report.png")]
    assert "inversion beyond noise: KL (last token): top100" in proc.stderr, proc.stderr

    r = json.loads((out / "report.json").read_text())
    assert r["format"] == FORMAT
    assert r["eval_set"]["samples"] == SAMPLES and r["inputs_mixed"] is False
    base = r["base"]
    assert (base["scheme"], base["coverage"], base["effective_bits"]) == ("base", 0, 16)
    assert base["perplexity"]["base"] == BASE_PPL and base["perplexity"]["delta"] == 0
    assert base["logit_kl_last_token"]["mean"] == 0 and base["logit_mse_last_token"]["mean"] == 0
    assert [p["scheme"] for p in r["points"]] == ["top10", "top50", "top100"]
    for p in r["points"]:
        s = SCHEMES[p["scheme"]]
        assert p["dir"] == str(sweep[0].parent / p["scheme"])
        assert (p["coverage"], p["effective_bits"]) == (s["coverage"], s["bits"])
        assert p["groups"] == {"quantized": s["quantized"], "total": 20}
        assert p["perplexity"]["base"] == BASE_PPL
        assert p["perplexity"]["delta"] == s["delta"][0] and p["perplexity"]["delta_ci95"] == list(s["delta"][1:])
        assert p["logit_mse_last_token"]["mean"] == s["mse"][0]
        assert p["logit_mse_last_token"]["ci95"] == list(s["mse"][1:])
        assert p["logit_kl_last_token"]["mean"] == s["kl"][0] and p["logit_kl_last_token"]["ci95"] == list(s["kl"][1:])
        assert p["generation"]["agreement"] == 16 - 10 * s["coverage"] and p["generation"]["all_finite"] is True
        assert p["generation"]["tokens_per_second"] == 42.0

    f = r["findings"]
    assert f["identical_schemes"] == [] and f["mixed_inputs"] == [] and f["non_finite_generation"] == []
    inv = sorted((i["metric"], i["more_coverage"]["scheme"], i["less_coverage"]["scheme"], i["within_noise"])
                 for i in f["inversions"])
    assert inv == [("logit_kl_last_token", "top100", "top50", False), ("perplexity_delta", "top100", "top50", True)]

    md = (out / "report.md").read_text()
    # Evaluations without scheme_info.formats (as these, written before formats) read as FP8, groups "—".
    assert "| base | 0 % | 16 | — | 12 | +0 | 0 | 0 | — |" in md
    assert "| top10 | 10 % | 15.2 | — | 12.05 | +0.05 [0.02, 0.08] | 0.01 [0.008, 0.012] | 0.001 [0.0008, 0.0012] | " \
        "15/16 |" in md
    assert "| top100 | 100 % | 8 | — | 12.18 | +0.18 [0.1, 0.3] | 0.05 [0.04, 0.06] | 0.003 [0.0028, 0.0032] | " \
        "6/16 |" in md
    assert all(p["formats"] == "FP8" for p in r["points"])
    assert "Inversion (**beyond noise**): KL (last token): top100 (coverage 100 %)" in md
    assert "Inversion (within noise): perplexity delta: top100" in md
    assert "](report.png)" in md

    from matplotlib.image import imread
    from PIL import Image
    from autoquant_client import report_plot
    img = imread(out / "report.png")
    assert img.shape == (round(report_plot.FIG_HEIGHT_IN * report_plot.DPI),
                         round(report_plot.FIG_WIDTH_IN * report_plot.DPI), 4), img.shape
    rgb = img[..., :3]
    ink = (rgb < 0.9).any(axis=-1).mean()
    colours = len({tuple(px) for px in (rgb[::3, ::3].reshape(-1, 3) * 255).astype(int).tolist()})
    assert 0.02 < ink < 0.6 and colours > 50, (ink, colours)  # drawn on, not blank, not a black square
    assert Image.open(out / "report.png").text.get("autoquant.format") == FORMAT


def test_every_point_is_drawn_where_the_json_says(autoquant_bin, sweep, tmp_path, plot_env, client_package):
    out = tmp_path / "report"
    proc = report(autoquant_bin, *sweep, "--out", out, "--no-plot", env=plot_env)
    assert proc.returncode == 0, proc.stderr
    assert not (out / "report.png").exists()
    from autoquant_client.report_plot import METRICS, X_AXES, load_report, plot
    rep = load_report(out / "report.json")
    assert [p.scheme for p in rep.points] == ["top10", "top50", "top100"]
    assert rep.points[2].kl.mean == 0.003 and rep.points[2].kl.ci95 == (0.0028, 0.0032)
    assert rep.eval_set["samples"] == SAMPLES
    fig, axes, plotted = plot(rep, tmp_path / "drawn.png", return_axes=True)
    assert (tmp_path / "drawn.png").stat().st_size > 10_000
    assert plot_mismatches(rep.raw, axes) == []
    # What plot() says it drew is what the axes hold.
    assert plotted[("logit_kl_last_token", "coverage")]["top50"] == (50.0, 0.004, 0.0035, 0.0045)
    assert plotted[("perplexity_delta", "effective_bits")]["base"] == (16.0, 0.0, 0.0, 0.0)
    for r, (_, _, ylabel) in enumerate(METRICS):
        for c, (_, xlabel) in enumerate(X_AXES):
            assert axes[r][c].get_ylabel() == ylabel and axes[r][c].get_xlabel() == xlabel
    assert "[nats]" in axes[0][0].get_ylabel() and "%" in axes[0][0].get_xlabel()
    assert f"{SAMPLES} samples" in fig._suptitle.get_text()

    # The check fails when a point is drawn elsewhere than the JSON says.
    import dataclasses
    moved = dataclasses.replace(rep, points=[dataclasses.replace(rep.points[1], kl=dataclasses.replace(
        rep.points[1].kl, mean=0.0041))] + [rep.points[0], rep.points[2]])
    _, moved_axes, _ = plot(moved, return_axes=True)
    bad = plot_mismatches(rep.raw, moved_axes)
    assert [(b[0], b[1], b[2], b[3]) for b in bad] == [(0, 0, "top50", "marker"), (0, 1, "top50", "marker")], bad


def test_identical_schemes_exit_1_after_writing_everything(autoquant_bin, tmp_path, plot_env):
    root = tmp_path / "models"
    same = manifest_json("x", SCHEMES["top10"])["integrity"]["tensors"]
    dirs = [write_scheme(root, n, SCHEMES[n], manifest=manifest_json(n, SCHEMES[n], digests=same if n != "top50" else None))
            for n in SCHEMES]
    out = tmp_path / "report"
    proc = report(autoquant_bin, *dirs, "--out", out, env=plot_env)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "IDENTICAL SCHEMES: top10, top100 hold the same weights" in proc.stderr
    assert "top10 = top100" in proc.stderr
    for name in ("report.json", "report.md", "report.png"):
        assert (out / name).exists(), name
    r = json.loads((out / "report.json").read_text())
    assert [(g["schemes"], g["basis"]) for g in r["findings"]["identical_schemes"]] == [
        (["top10", "top100"], "tensor_digests")]
    assert "**IDENTICAL SCHEMES: top10, top100" in (out / "report.md").read_text()


def test_missing_evaluation_says_how_to_evaluate(autoquant_bin, sweep, tmp_path):
    (sweep[1] / "layer-sensitivity" / "evaluation.json").unlink()
    (sweep[2] / "layer-sensitivity" / "evaluation.json").unlink()
    proc = report(autoquant_bin, *sweep, "--out", tmp_path / "report", "--no-plot")
    assert proc.returncode == 2, proc.stderr
    assert f"no evaluation.json in {sweep[1]}: evaluate it first with `autoquant eval top10`" in proc.stderr
    assert f"no evaluation.json in {sweep[2]}" in proc.stderr  # every scheme's problem at once
    assert not (tmp_path / "report").exists()


def test_mixed_eval_sets_refused_unless_allowed(autoquant_bin, tmp_path):
    root = tmp_path / "models"
    dirs = [write_scheme(root, n, SCHEMES[n], evaluation=evaluation_json(
        n, SCHEMES[n], eval_fingerprint=("f" if n == "top50" else "e") * 64)) for n in SCHEMES]
    proc = report(autoquant_bin, *dirs, "--out", tmp_path / "r1", "--no-plot")
    assert proc.returncode == 2 and "different eval sets or base models" in proc.stderr, proc.stderr
    proc = report(autoquant_bin, *dirs, "--out", tmp_path / "r2", "--no-plot", "--allow-mixed-inputs")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert r["inputs_mixed"] is True and len(r["findings"]["mixed_inputs"]) == 2


def test_plot_failure_writes_json_and_md_and_says_how_to_fix(autoquant_bin, sweep, tmp_path):
    fake = tmp_path / "python-without-matplotlib"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'matplotlib'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    out = tmp_path / "report"
    proc = report(autoquant_bin, *sweep, "--out", out, env={**os.environ, "AUTOQUANT_PYTHON": str(fake)})
    assert proc.returncode == 2, proc.stderr
    assert "No module named 'matplotlib'" in proc.stderr
    assert "drawing report.png failed" in proc.stderr
    assert "pip install './client/python[plot]'" in proc.stderr and "--no-plot" in proc.stderr
    assert (out / "report.json").exists() and (out / "report.md").exists() and not (out / "report.png").exists()

    proc = report(autoquant_bin, *sweep, "--out", tmp_path / "r2",
                  env={**os.environ, "AUTOQUANT_PYTHON": str(tmp_path / "no-such-python")})
    assert proc.returncode == 2 and "cannot run" in proc.stderr and "--no-plot" in proc.stderr, proc.stderr


def test_job_ids_need_a_daemon(autoquant_bin, sweep, tmp_path):
    # A job id is looked up on the daemon (test_evaluation.py covers a reachable one); none here: exit 3.
    from daemon_helpers import free_port
    proc = report(autoquant_bin, sweep[0], "0f3a9c2e", "--out", tmp_path / "report", "--no-plot", "--server",
                  f"127.0.0.1:{free_port()}")
    assert proc.returncode == 3, proc.stderr
    assert "GetStatus" in proc.stderr and not (tmp_path / "report").exists(), proc.stderr
    proc = report(autoquant_bin, tmp_path / "nowhere" / "top10", "--out", tmp_path / "report", "--no-plot")
    assert proc.returncode == 2 and "no scheme directory" in proc.stderr, proc.stderr


def test_outputs_never_inside_a_scheme_and_replaced_only_with_overwrite(autoquant_bin, sweep, tmp_path, plot_env):
    proc = report(autoquant_bin, *sweep, "--out", sweep[0] / "report", "--no-plot")
    assert proc.returncode == 2 and "a scheme directory" in proc.stderr, proc.stderr
    assert not (sweep[0] / "report").exists()

    out = tmp_path / "report"
    assert report(autoquant_bin, *sweep, "--out", out, env=plot_env).returncode == 0
    again = report(autoquant_bin, *sweep, "--out", out, env=plot_env)
    assert again.returncode == 2 and "--overwrite" in again.stderr, again.stderr
    again = report(autoquant_bin, *sweep[:2], "--out", out, "--overwrite", "--no-plot")
    assert again.returncode == 0, again.stderr
    assert len(json.loads((out / "report.json").read_text())["points"]) == 2
    assert not (out / "report.png").exists()  # the earlier picture showed three schemes

    (out / "report.md").write_text("my notes\n")
    foreign = report(autoquant_bin, *sweep, "--out", out, "--overwrite", "--no-plot")
    assert foreign.returncode == 2 and "not written by `autoquant report`" in foreign.stderr, foreign.stderr
    assert (out / "report.md").read_text() == "my notes\n"


def test_each_format_set_is_a_curve_and_its_own_inversions(autoquant_bin, sweep, tmp_path, plot_env, client_package):
    """Schemes searched over NVFP4 + FP8 beside FP8-only ones: report.json names each point's format set
    and groups per format, report.md shows them, inversions are found within a set (by effective bits
    in a mixed set, whose coverage is all 100 %), and the plot draws one curve per set."""
    root = tmp_path / "models"
    mixed = {}
    for name, bits, kl, nvfp4 in (("bits5", 5.0, 0.002, 18), ("bits6", 6.0, 0.006, 14)):
        s = {"coverage": 1.0, "bits": bits, "quantized": 20, "delta": (0.3, 0.2, 0.4), "mse": (0.02, 0.015, 0.025),
             "kl": (kl, kl * 0.95, kl * 1.05)}
        ev = evaluation_json(name, s)
        ev["scheme_info"]["formats"] = ["NVFP4", "FP8"]
        ev["scheme_info"]["groups_by_format"] = {"NVFP4": nvfp4, "FP8": 20 - nvfp4}
        mixed[name] = write_scheme(root, name, s, evaluation=ev)
    out = tmp_path / "report"
    proc = report(autoquant_bin, *sweep, *mixed.values(), "--out", out, "--no-plot", env=plot_env)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    by = {p["scheme"]: p for p in r["points"]}
    assert by["bits5"]["formats"] == "NVFP4+FP8" and by["bits5"]["groups_by_format"] == {"FP8": 2, "NVFP4": 18}
    assert by["top10"]["formats"] == "FP8"
    inv = {(i["metric"], i["more_coverage"]["scheme"], i["less_coverage"]["scheme"]) for i in r["findings"]["inversions"]}
    assert ("logit_kl_last_token", "bits5", "bits6") in inv  # 5 bits degrades less than 6: flagged
    assert all(a.startswith("bits") == b.startswith("bits") for _, a, b in inv), inv
    md = (out / "report.md").read_text()
    assert "| bits5 | 100 % | 5 | 18 NVFP4, 2 FP8 |" in md
    from autoquant_client.report_plot import load_report, plot
    fig, axes, _ = plot(load_report(out / "report.json"), return_axes=True)
    labels = [line.get_label() for line in axes[0][1].get_lines()]
    assert "curve: FP8" in labels and "curve: NVFP4+FP8" in labels, labels

"""Issue 7, "never destroy a user's model": what the CLI refuses, and that refusing leaves every input
byte-identical.

One tiny random model (`model init --preset tiny`), one calibration set, one baseline cache and one
coverage-0.5 scheme are shared by the module. Every refused command is run through `_refused`, which
snapshots (SHA-256 of every file) the base checkpoint, the calibration file and the baseline cache before
and after, and asserts exit code 2, a message naming the problem, and identical snapshots.

- outputs never hit inputs: `quantize --out` / `model forward --output` / `calib synth --out` equal to,
  inside, around, or reaching an input through a symlink (to it or to a parent), "..", or a hard link (same
  inode; test_links_and_dot_dot_do_not_get_around_the_inputs), with and without
  --overwrite; a regular file is not replaced by a directory; --overwrite replaces only our own outputs.
- unambiguous selection: coverage forms, exactly one selection, a manifest's disabled_layers honoured,
  --disabled-layers (and its --disable alias) recorded in the scheme's manifest.
- validation before the expensive part: errors that need no baseline (names, paths, manifest keys and
  patterns, format, method, device, dtype, bits) start no calibrate/score phase and leave no baseline in a
  fresh cache; an unwritable baseline cache is a warning and the scheme, from the baseline in memory, is the
  same bytes as with a cache.
- integrity: a flipped FP8 byte fails `autoquant diff` naming the tensor.
- leftovers: the staging directory of a killed export, and the temporary file of a killed `calib synth`
  (named after its dead owner, never the output), are removed by the next command writing there.
- exit codes: every usage error (USAGE_ERRORS: CLI11's, coverage forms, selections, formats, methods,
  devices, dtypes, counts, across every subcommand) exits 2 with the inputs byte-identical; every --help
  states the codes once, `quantize --help` every default, and the README documents them.
"""
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

import quant_helpers as qh

CALIB = ["--samples", "4", "--seq-len", "32", "--images-per-sample", "1", "--image-size", "56x56", "--seed", "1"]


def _digest(p: pathlib.Path) -> dict:
    """path -> SHA-256 of every file under p (or of p itself)."""
    p = pathlib.Path(p)
    if not p.exists():
        return {}
    if p.is_file():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()}
    return {str(f.relative_to(p)): hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "dir"
            for f in sorted(p.rglob("*"))}


@pytest.fixture(scope="module")
def env(autoquant_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    model, calib, cache = root / "model", root / "calib.safetensors", root / "cache"
    qh.run(autoquant_bin, "model", "init", "--preset", "tiny", "--out", model, "--seed", "0", check=True)
    qh.run(autoquant_bin, "calib", "synth", "--model", model, "--out", calib, *CALIB, check=True)
    scheme = root / "top50"
    qh.quantize(autoquant_bin, model, calib, scheme, "--coverage", "0.5", cache=cache)
    return {"root": root, "model": model, "calib": calib, "cache": cache, "scheme": scheme}


def _inputs(env):
    return {k: _digest(env[k]) for k in ("model", "calib", "cache")}


def _refused(autoquant_bin, env, *args, words=()):
    """Runs `autoquant ARGS`; asserts exit 2, every word in stderr, and byte-identical inputs."""
    before = _inputs(env)
    assert all(before.values()), "fixture inputs missing"
    proc = qh.run(autoquant_bin, *args)
    assert proc.returncode == 2, f"{args}: rc {proc.returncode}\n{proc.stderr[-2000:]}"
    for w in words:
        assert w in proc.stderr, f"{args}: {w!r} not in {proc.stderr!r}"
    assert _inputs(env) == before, f"{args}: an input changed"
    return proc


def _quantize_args(env, out, *extra, cache=None):
    device = [] if "--device" in extra else ["--device", "cpu"]
    return ["quantize", "--model", env["model"], "--calib", env["calib"], "--out", out, *device,
            "--baseline-cache", cache or env["cache"], *extra]


# ----------------------------------------------------------------------------- outputs never hit inputs

@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_quantize_never_writes_over_or_into_an_input(autoquant_bin, env, overwrite):
    root = env["root"]
    (root / "elsewhere").mkdir(exist_ok=True)
    link = root / "link-to-model"
    if not link.exists():
        link.symlink_to(env["model"], target_is_directory=True)
    for out, word in [(env["model"], "the base model directory"),
                      (env["model"] / "top10", "lies inside the base model directory"),
                      (root / "elsewhere" / ".." / "model", "the base model directory"),
                      (link, "the base model directory"),
                      (env["calib"], "the calibration file"),
                      (env["cache"], "the baseline cache"),
                      (env["cache"] / "s", "the baseline cache"),
                      (root, "contains")]:
        _refused(autoquant_bin, env, *_quantize_args(env, out, "--coverage", "0.5", *overwrite),
                 words=[word, "whatever --overwrite says"])


def test_links_and_dot_dot_do_not_get_around_the_inputs(autoquant_bin, env, tmp_path):
    """Symlinks (to a directory, to a file, on a parent), ".." and hard links (same inode) reach an input:
    every command refuses, with and without --overwrite, and the inputs stay byte-identical. A hard link to
    a file *inside* the base model is a separate name whose replacement (by rename) could never change the
    base's bytes; it is refused all the same as not an output of ours."""
    m, c = env["model"], env["calib"]
    links = tmp_path / "links"
    links.mkdir()
    (links / "model").symlink_to(m, target_is_directory=True)
    (links / "calib.safetensors").symlink_to(c)
    os.link(c, links / "calib-hard.safetensors")
    os.link(m / "model.safetensors", links / "weights-hard.safetensors")
    (links / "sub").mkdir()
    inp = tmp_path / "in.safetensors"
    from safetensors.torch import save_file
    import torch
    save_file({"input_ids": torch.tensor([[1, 5, 7, 9]], dtype=torch.int64)}, inp)
    os.link(inp, links / "in-hard.safetensors")
    quantize = lambda out, *extra: _quantize_args(env, out, "--coverage", "0.5", *extra)  # noqa: E731
    forward = lambda out, *extra, i=inp: ["model", "forward", "--model", m, "--input", i, "--output", out,  # noqa: E731
                                          "--device", "cpu", *extra]
    synth = lambda out, *extra: ["calib", "synth", "--model", m, "--out", out, *CALIB, *extra]  # noqa: E731
    cases = [
        (quantize(links / "model"), "the base model directory"),
        (quantize(links / "model" / "top10"), "lies inside the base model directory"),
        (quantize(links / "sub" / ".." / "model"), "the base model directory"),
        (quantize(links / "calib.safetensors"), "the calibration file"),
        (quantize(links / "calib-hard.safetensors"), "is the calibration file"),
        (_quantize_args(env, tmp_path / "s", "--coverage", "0.5", cache=links / "model" / "cache"),
         "the base model directory"),
        (_quantize_args(env, tmp_path / "s", "--coverage", "0.5", cache=links / "calib-hard.safetensors"),
         "the calibration file"),
        (forward(links / "model" / "model.safetensors"), "the model directory"),
        (forward(m / "sub" / ".." / "model.safetensors"), "the model directory"),
        (forward(links / "in-hard.safetensors"), "is the input file"),
        (forward(links / "calib-hard.safetensors", i=c), "is the input file"),
        (synth(links / "model" / "x.safetensors"), "the model directory"),
        (synth(m / ".." / m.name / "config.json"), "the model directory"),
    ]
    digests = {p: _digest(p) for p in (inp, m / "model.safetensors")}
    for args, word in cases:
        for ow in ([], ["--overwrite"]):
            _refused(autoquant_bin, env, *args, *ow, words=[word])
    # Not an input of these commands, but a hard link to the base weights: never replaced either.
    for args in (forward(links / "weights-hard.safetensors"), synth(links / "weights-hard.safetensors")):
        _refused(autoquant_bin, env, *args, "--overwrite", words=["not a previous output of autoquant"])
    assert {p: _digest(p) for p in digests} == digests
    assert os.stat(links / "calib-hard.safetensors").st_ino == os.stat(c).st_ino
    assert os.stat(links / "weights-hard.safetensors").st_ino == os.stat(m / "model.safetensors").st_ino
    assert not (m / "top10").exists() and not (m / "cache").exists() and not (m / "x.safetensors").exists()


def test_baseline_cache_inside_the_model_is_refused(autoquant_bin, env):
    _refused(autoquant_bin, env, *_quantize_args(env, env["root"] / "x", "--coverage", "0.5",
                                                 cache=env["model"] / "cache"),
             words=["baseline cache", "the base model directory"])
    assert not (env["model"] / "cache").exists()


def test_model_forward_output_never_hits_its_inputs(autoquant_bin, env, tmp_path):
    from safetensors.torch import save_file
    import torch
    inp = tmp_path / "in.safetensors"
    save_file({"input_ids": torch.tensor([[1, 5, 7, 9]], dtype=torch.int64)}, inp)
    before_inp = _digest(inp)
    for out in (env["model"] / "model.safetensors", env["calib"]):
        for ow in ([], ["--overwrite"]):
            _refused(autoquant_bin, env, "model", "forward", "--model", env["model"], "--input", env["calib"],
                     "--output", out, "--device", "cpu", *ow)
    # The input file itself, with --overwrite.
    proc = qh.run(autoquant_bin, "model", "forward", "--model", env["model"], "--input", inp, "--output", inp,
                  "--device", "cpu", "--overwrite")
    assert proc.returncode == 2 and "the input file" in proc.stderr, proc.stderr
    assert _digest(inp) == before_inp

    # A fresh output works; repeating it needs --overwrite, which replaces our own logits file.
    out = tmp_path / "logits.safetensors"
    qh.run(autoquant_bin, "model", "forward", "--model", env["model"], "--input", inp, "--output", out,
           "--device", "cpu", check=True)
    first = _digest(out)
    proc = qh.run(autoquant_bin, "model", "forward", "--model", env["model"], "--input", inp, "--output", out,
                  "--device", "cpu")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    qh.run(autoquant_bin, "model", "forward", "--model", env["model"], "--input", inp, "--output", out,
           "--device", "cpu", "--overwrite", check=True)
    assert _digest(out) == first  # same logits, rewritten
    # A foreign file is not replaced, even with --overwrite.
    foreign = tmp_path / "notes.safetensors"
    foreign.write_text("mine")
    proc = qh.run(autoquant_bin, "model", "forward", "--model", env["model"], "--input", inp, "--output", foreign,
                  "--device", "cpu", "--overwrite")
    assert proc.returncode == 2 and "not a previous output of autoquant" in proc.stderr, proc.stderr
    assert foreign.read_text() == "mine"


def test_calib_synth_refuses_to_replace_what_is_not_its_own(autoquant_bin, env, tmp_path):
    for ow in ([], ["--overwrite"]):
        _refused(autoquant_bin, env, "calib", "synth", "--model", env["model"], "--out",
                 env["model"] / "model.safetensors", *CALIB, *ow, words=["the model directory"])
    existing = tmp_path / "mine.safetensors"
    existing.write_text("not a calibration set")
    proc = qh.run(autoquant_bin, "calib", "synth", "--model", env["model"], "--out", existing, *CALIB)
    assert proc.returncode == 2 and "already exists" in proc.stderr, proc.stderr
    proc = qh.run(autoquant_bin, "calib", "synth", "--model", env["model"], "--out", existing, *CALIB, "--overwrite")
    assert proc.returncode == 2 and "not a previous output of autoquant" in proc.stderr, proc.stderr
    assert existing.read_text() == "not a calibration set"
    # Our own calibration set may be replaced.
    ours = tmp_path / "calib.safetensors"
    qh.run(autoquant_bin, "calib", "synth", "--model", env["model"], "--out", ours, *CALIB, check=True)
    qh.run(autoquant_bin, "calib", "synth", "--model", env["model"], "--out", ours, *CALIB, "--overwrite", check=True)


def test_a_regular_file_is_never_replaced_by_a_scheme_directory(autoquant_bin, env):
    f = env["root"] / "a-file"
    f.write_text("keep me")
    _refused(autoquant_bin, env, *_quantize_args(env, f, "--coverage", "0.5", "--overwrite"),
             words=["is not a directory"])
    assert f.is_file() and f.read_text() == "keep me"


def test_overwrite_replaces_only_a_scheme_of_ours(autoquant_bin, env):
    foreign = env["root"] / "foreign"
    foreign.mkdir(exist_ok=True)
    (foreign / "data.txt").write_text("precious")
    _refused(autoquant_bin, env, *_quantize_args(env, foreign, "--coverage", "0.5", "--overwrite"),
             words=["not a previous output of autoquant"])
    assert (foreign / "data.txt").read_text() == "precious"
    # model init --overwrite does not replace a checkpoint it did not write (the base is a copy here).
    other = env["root"] / "hand-made"
    if not other.exists():
        shutil.copytree(env["scheme"], other)
    proc = qh.run(autoquant_bin, "model", "init", "--preset", "tiny", "--out", other, "--overwrite")
    assert proc.returncode == 2 and "not a previous output of autoquant" in proc.stderr, proc.stderr
    # Our own scheme is replaced.
    again = env["root"] / "again"
    qh.quantize(autoquant_bin, env["model"], env["calib"], again, "--coverage", "0.5", cache=env["cache"])
    _, s = qh.quantize(autoquant_bin, env["model"], env["calib"], again, "--coverage", "1", "--overwrite",
                       cache=env["cache"])
    assert s["groups_quantized"] == s["groups_total"]


@pytest.mark.parametrize("scheme", ["../../evil", "a/b", "..", ".hidden"])
def test_scheme_name_is_one_plain_path_component(autoquant_bin, env, scheme):
    out = env["root"] / "named"
    _refused(autoquant_bin, env, *_quantize_args(env, out, "--coverage", "0.5", "--scheme", scheme),
             words=["scheme name"])
    assert not out.exists()
    assert not (env["root"].parent / "evil_quant_manifest.json").exists()


# ----------------------------------------------------------------------------- selection

@pytest.mark.parametrize("value", ["1.5", "10", "", "nan", "0", "top0", "150%"])
def test_coverage_accepts_only_unambiguous_forms(autoquant_bin, env, value):
    _refused(autoquant_bin, env, *_quantize_args(env, env["root"] / "cov", "--coverage", value),
             words=["a fraction in (0, 1]", "topXX", "XX%"])


def test_coverage_one_means_everything_and_top_and_percent_agree(autoquant_bin, env):
    _, one = qh.quantize(autoquant_bin, env["model"], env["calib"], env["root"] / "cov1", "--coverage", "1",
                         cache=env["cache"])
    assert one["groups_quantized"] == one["groups_total"]
    _, top = qh.quantize(autoquant_bin, env["model"], env["calib"], env["root"] / "cov_top50", "--coverage", "top50",
                         cache=env["cache"])
    _, pct = qh.quantize(autoquant_bin, env["model"], env["calib"], env["root"] / "cov_pct50", "--coverage", "50%",
                         cache=env["cache"])
    assert top["groups_quantized"] == pct["groups_quantized"] == one["groups_total"] // 2 + one["groups_total"] % 2


@pytest.mark.parametrize("flags", [[], ["--disabled-layers", "*layers.0.*"],
                                   ["--coverage", "0.5", "--effective-bits", "12"]])
def test_exactly_one_selection(autoquant_bin, env, flags):
    _refused(autoquant_bin, env, *_quantize_args(env, env["root"] / "sel", *flags), words=["exactly one"])


def test_coverage_and_manifest_together_exit_2(autoquant_bin, env):
    manifest = next(qh.layer_sensitivity(env["scheme"]).glob("*_coverage_from_baseline.json"))
    _refused(autoquant_bin, env, *_quantize_args(env, env["root"] / "both", "--coverage", "0.5",
                                                 "--coverage-manifest", manifest), words=["exactly one"])


def test_manifest_disabled_layers_are_honoured_and_recorded(autoquant_bin, env):
    cov = qh.coverage_manifest(env["scheme"])
    seed = {"selected_layers": cov["selected_layers"] + cov["dropped_layers"], "dropped_layers": [],
            "disabled_layers": ["*layers.0.mlp*"]}
    path = env["root"] / "seed_manifest.json"
    path.write_text(json.dumps(seed))
    out = env["root"] / "from_manifest"
    qh.quantize(autoquant_bin, env["model"], env["calib"], out, "--coverage-manifest", path,
                "--disabled-layers", "*layers.1.self_attn.q_proj", "--disable", "*layers.1.mlp.down_proj",
                cache=env["cache"])
    m = qh.quant_manifest(out)
    sel = m["selection"]
    assert sel["kind"] == "coverage_manifest"
    assert sel["disabled_layers"] == ["*layers.1.self_attn.q_proj", "*layers.1.mlp.down_proj", "*layers.0.mlp*"]
    assert sel["disabled_layers_sources"] == {"request": ["*layers.1.self_attn.q_proj", "*layers.1.mlp.down_proj"],
                                              "coverage_manifest": ["*layers.0.mlp*"]}
    assert any("fnmatch" in r for r in sel["rules"])
    disabled = {k for k, g in m["groups"].items() if g["disabled"]}
    assert disabled == {"language_model.layers.0.mlp.gate_proj.quant_recipe",
                        "language_model.layers.0.mlp.down_proj.quant_recipe",
                        "language_model.layers.1.self_attn.q_proj.quant_recipe",
                        "language_model.layers.1.mlp.down_proj.quant_recipe"}, disabled
    assert m["groups"]["language_model.layers.0.mlp.down_proj.quant_recipe"]["disabled_by"] == ["*layers.0.mlp*"]
    assert not disabled & qh.quantized_groups(m)
    assert qh.quantized_groups(m) == set(seed["selected_layers"]) - disabled
    # Every layer-sensitivity/ manifest records the patterns: the coverage manifest in the seeds' own field
    # (so fed back it reproduces the scheme), the search state's Markdown summary in words.
    cov_out = qh.coverage_manifest(out)
    assert cov_out["disabled_layers"] == sel["disabled_layers"]
    assert set(cov_out["selected_layers"]) == qh.quantized_groups(m)
    md = (qh.layer_sensitivity(out) / "per-layer-sensitivity.md").read_text()
    assert all(f"`{p}`" in md for p in sel["disabled_layers"]), md[:2000]
    again = env["root"] / "from_written_manifest"
    written = next(qh.layer_sensitivity(out).glob("*_coverage_from_baseline.json"))
    qh.quantize(autoquant_bin, env["model"], env["calib"], again, "--coverage-manifest", written, cache=env["cache"])
    m2 = qh.quant_manifest(again)
    assert qh.quantized_groups(m2) == qh.quantized_groups(m)
    assert {k for k, g in m2["groups"].items() if g["disabled"]} == disabled

    # A manifest pattern that matches nothing is an error, not ignored.
    seed["disabled_layers"] = ["*no_such_layer*"]
    path.write_text(json.dumps(seed))
    _refused(autoquant_bin, env, *_quantize_args(env, env["root"] / "bad_pattern", "--coverage-manifest", path),
             words=["*no_such_layer*"])


# ----------------------------------------------------------------------------- validation before the work

def test_request_errors_are_found_before_calibration(autoquant_bin, env, tmp_path):
    """With a fresh cache, requests that are wrong for this model fail without computing a baseline: no
    calibrate or score phase starts (stderr), no cache is created, and each is refused in a fraction of
    the time the baseline takes."""
    cache = tmp_path / "fresh-cache"
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.txt").write_text("precious")
    bad_manifest = tmp_path / "bad.json"
    bad_manifest.write_text(json.dumps({"selected_layers": ["bogus.quant_recipe"], "dropped_layers": []}))
    bad_pattern_manifest = tmp_path / "bad_pattern.json"
    groups = list(qh.quant_manifest(env["scheme"])["groups"])
    bad_pattern_manifest.write_text(json.dumps({"selected_layers": groups, "dropped_layers": [],
                                                "disabled_layers": ["*no_such_layer*"]}))
    out = tmp_path / "out"
    cases = [
        (["--coverage-manifest", bad_manifest], "extra 1 [bogus.quant_recipe]"),
        (["--coverage-manifest", bad_pattern_manifest], "*no_such_layer*"),
        (["--coverage", "0.5", "--disabled-layers", "*no_such*"], "*no_such*"),
        (["--effective-bits", "4"], "minimum achievable"),
        (["--coverage", "0.5", "--format", "gguf"], "unknown export format"),
        (["--coverage", "0.5", "--method", "magic"], "magic"),
        (["--coverage", "0.001"], "selects no group"),
        (["--coverage", "0.5", "--scheme", "a/b"], "scheme name"),
        (["--coverage", "0.5", "--scheme", "../../evil"], "scheme name"),
        (["--coverage", "0.5", "--device", "tpu"], "unknown device"),
        (["--coverage", "0.5", "--dtype", "fp16"], "unknown dtype"),
    ]
    # (output, extra flags, word): outputs that cannot be written.
    outputs = [
        (blocker / "out", ["--coverage", "0.5"], "is not a directory"),  # its parent is a regular file
        (foreign, ["--coverage", "0.5", "--overwrite"], "not a previous output of autoquant"),
        (foreign, ["--coverage", "0.5"], "already exists"),
        (env["model"] / "scheme", ["--coverage", "0.5", "--overwrite"], "lies inside the base model directory"),
    ]
    started = time.monotonic()
    qh.quantize(autoquant_bin, env["model"], env["calib"], tmp_path / "timing", "--coverage", "0.5",
                cache=tmp_path / "timing-cache")
    full_run = time.monotonic() - started
    for o, extra, word in [(out, e, w) for e, w in cases] + outputs:
        t0 = time.monotonic()
        proc = _refused(autoquant_bin, env, *_quantize_args(env, o, *extra, cache=cache), words=[word])
        elapsed = time.monotonic() - t0
        assert not cache.exists(), f"{extra}: a baseline was computed before the request was checked"
        for phase in ("[calibrate]", "[score]", "[search]", "[export]"):
            assert phase not in proc.stderr, f"{o} {extra}: {phase} started before the request was checked"
        assert elapsed < 0.5 * full_run + 1.0, f"{o} {extra}: refused after {elapsed:.1f}s (full run {full_run:.1f}s)"
    assert not out.exists()
    assert (foreign / "data.txt").read_text() == "precious"
    assert not (env["model"] / "scheme").exists()


def test_unwritable_baseline_cache_is_a_warning(autoquant_bin, env, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = tmp_path / "scheme"
    proc, summary = qh.quantize(autoquant_bin, env["model"], env["calib"], out, "--coverage", "0.5",
                                cache=blocker / "cache")
    assert "warning" in proc.stderr and "baseline not cached" in proc.stderr, proc.stderr
    assert summary["baseline_reused"] is False
    assert blocker.read_text() == "x"
    # The baseline computed in memory was used: the scheme is the one a cached baseline gives, byte for byte.
    m = qh.quant_manifest(out)
    ref = qh.quant_manifest(env["scheme"])
    assert qh.quantized_groups(m) == qh.quantized_groups(ref) and qh.quantized_groups(m)
    assert m["integrity"] == ref["integrity"]


def test_modelopt_format_warns(autoquant_bin, env, tmp_path):
    out = tmp_path / "mo"
    proc, _ = qh.quantize(autoquant_bin, env["model"], env["calib"], out, "--coverage", "0.5", "--format",
                          "modelopt", cache=env["cache"])
    assert "warning" in proc.stderr and "transformers cannot load it" in proc.stderr, proc.stderr
    assert "Do not load it with transformers" in (out / "README.md").read_text()


# ----------------------------------------------------------------------------- integrity

def test_flipped_fp8_byte_fails_diff_naming_the_tensor(autoquant_bin, env, tmp_path):
    copy = qh.copy_scheme(env["scheme"], tmp_path / "flipped")
    tensors = qh.read_checkpoint(copy)
    victim = sorted(qh.fp8_modules(tensors))[0] + ".weight"
    shard = copy / json.loads((copy / "model.safetensors.index.json").read_text())["weight_map"][victim]
    data = bytearray(shard.read_bytes())
    n = int.from_bytes(data[:8], "little")
    begin = json.loads(data[8:8 + n])[victim]["data_offsets"][0]
    data[8 + n + begin] ^= 0x01
    shard.write_bytes(bytes(data))
    proc = qh.run(autoquant_bin, "diff", env["scheme"], copy)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert victim in proc.stderr and "SHA-256" in proc.stderr, proc.stderr
    # The untouched scheme passes on its own.
    assert qh.run(autoquant_bin, "diff", env["scheme"]).returncode == 0


# ----------------------------------------------------------------------------- leftovers

def _staging_dirs(parent: pathlib.Path, name: str):
    return [p for p in parent.iterdir() if p.name.startswith(f".{name}.tmp-")]


def _marked_staging(parent: pathlib.Path, name: str) -> bool:
    """A staging directory whose owner marker is complete (it may vanish while we look)."""
    for d in _staging_dirs(parent, name):
        try:
            if (d / ".autoquant-staging").read_text().endswith("\n"):
                return True
        except OSError:
            pass
    return False


def test_killed_exports_staging_dir_is_removed_by_the_next_run(autoquant_bin, env, tmp_path):
    """SIGKILL (no handler can run) once the staging directory exists and holds its owner marker; the
    next quantize removes it. The baseline is cached, so the run goes straight to the export; it is
    retried if it finishes before the directory is seen. (A kill before the marker is complete leaves
    an otherwise empty directory, removed once a minute old: file_util_test.)"""
    parent = tmp_path / "schemes"
    parent.mkdir()
    out = parent / "killed"
    args = [str(autoquant_bin), *map(str, _quantize_args(env, out, "--coverage", "1"))]
    for _ in range(20):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and not _marked_staging(parent, "killed"):
            pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if _staging_dirs(parent, "killed"):
                break
        shutil.rmtree(out, ignore_errors=True)
    leftovers = _staging_dirs(parent, "killed")
    assert leftovers, "could not interrupt an export while it was staging"
    assert (leftovers[0] / ".autoquant-staging").exists()
    assert not out.exists()

    proc, _ = qh.quantize(autoquant_bin, env["model"], env["calib"], parent / "next", "--coverage", "0.5",
                          cache=env["cache"])
    assert "removed 1 leftover of interrupted runs" in proc.stderr, proc.stderr
    assert _staging_dirs(parent, "killed") == []
    assert sorted(p.name for p in parent.iterdir()) == ["next"]


BIG_CALIB = ["--samples", "16", "--seq-len", "2048", "--images-per-sample", "4", "--image-size", "448x448",
             "--seed", "1"]


def _temp_files(parent: pathlib.Path, name: str):
    return [p for p in parent.iterdir() if p.name.startswith(f".{name}.tmp-") and p.is_file()]


def _kill_while_writing(autoquant_bin, env, parent: pathlib.Path, name: str) -> pathlib.Path:
    """SIGKILLs `calib synth --out parent/name` while its data is going to the temporary file (a few hundred
    MB, so the write takes a while; retried if it finishes first). Returns the temporary file left behind."""
    out = parent / name
    args = [str(autoquant_bin), "calib", "synth", "--model", str(env["model"]), "--out", str(out), *BIG_CALIB]
    for _ in range(20):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and not any(p.stat().st_size > 0 for p in _temp_files(parent, name)):
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            left = _temp_files(parent, name)
            if left:
                assert f".owner-{proc.pid}-" in left[0].name, left[0].name
                assert not out.exists()
                return left[0]
        out.unlink(missing_ok=True)
    pytest.fail("could not kill `calib synth` while it was writing")


@pytest.mark.parametrize("next_command", ["model forward", "calib synth", "quantize"])
def test_killed_writers_temporary_file_is_removed_by_the_next_command(autoquant_bin, env, tmp_path, next_command):
    """A killed atomic write leaves a hidden temporary file named after its (dead) owner, never a file under
    the output's name; every command that writes into that directory removes it first."""
    parent = tmp_path / "outputs"
    parent.mkdir()
    left = _kill_while_writing(autoquant_bin, env, parent, "big.safetensors")
    assert left.suffix != ".safetensors"
    if next_command == "model forward":
        from safetensors.torch import save_file
        import torch
        inp = tmp_path / "in.safetensors"
        save_file({"input_ids": torch.tensor([[1, 5, 7, 9]], dtype=torch.int64)}, inp)
        proc = qh.run(autoquant_bin, "model", "forward", "--model", env["model"], "--input", inp, "--output",
                      parent / "logits.safetensors", "--device", "cpu", check=True)
        produced = "logits.safetensors"
    elif next_command == "calib synth":
        proc = qh.run(autoquant_bin, "calib", "synth", "--model", env["model"], "--out", parent / "c.safetensors",
                      *CALIB, check=True)
        produced = "c.safetensors"
    else:
        proc, _ = qh.quantize(autoquant_bin, env["model"], env["calib"], parent / "s", "--coverage", "0.5",
                              cache=env["cache"])
        produced = "s"
    assert "removed 1 leftover of interrupted runs" in proc.stderr, proc.stderr
    assert sorted(p.name for p in parent.iterdir()) == [produced]


def test_sigterm_during_export_cleans_up(autoquant_bin, env, tmp_path):
    """With the handler, SIGTERM cancels cooperatively: exit 1, no staging directory, no output."""
    parent = tmp_path / "schemes"
    parent.mkdir()
    out = parent / "term"
    args = [str(autoquant_bin), *map(str, _quantize_args(env, out, "--coverage", "1"))]
    for _ in range(20):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None and not _staging_dirs(parent, "term"):
            pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate()
            if proc.returncode == 1 and "cancelled" in err:
                break
        else:
            proc.communicate()
        shutil.rmtree(out, ignore_errors=True)
    else:
        pytest.fail("could not interrupt an export while it was staging")
    assert _staging_dirs(parent, "term") == []
    assert not out.exists()


# ----------------------------------------------------------------------------- exit codes and help

@pytest.mark.parametrize("args", [
    ["quantize", "--no-such-flag"],
    ["quantize"],
    ["nosuchcommand"],
    [],
    ["model", "forward", "--model", "/nonexistent", "--input", "/nonexistent", "--output", "/tmp/x"],
    ["calib", "synth", "--model", "/nonexistent", "--out", "/tmp/x", "--samples", "1", "--seq-len", "8"],
    ["diff", "/nonexistent"],
    ["quantize", "--model", "/nonexistent", "--calib", "/nonexistent", "--out", "/tmp/x", "--coverage", "1"],
    ["model", "init", "--preset", "nosuchpreset", "--out", "/tmp/aq-never-created"],
])
def test_usage_errors_exit_2(autoquant_bin, args):
    proc = qh.run(autoquant_bin, *args)
    assert proc.returncode == 2, f"{args}: rc {proc.returncode}\n{proc.stderr}"


# Usage errors that reach each command's own validation (real model and calibration file, fresh output
# paths): (arguments after the subcommand, a word the message must hold). "{m}", "{c}", "{o}", "{r}": the
# model, the calibration file, a fresh output path, the fixture's root directory.
Q = ["quantize", "--model", "{m}", "--calib", "{c}", "--out", "{o}", "--baseline-cache", "{r}/cache"]
FWD = ["model", "forward", "--model", "{m}", "--input", "{c}", "--output", "{o}"]
SYNTH = ["calib", "synth", "--model", "{m}", "--out", "{o}", "--samples", "2", "--seq-len", "80"]
USAGE_ERRORS = [
    # CLI11: unknown flags, missing values, bad numbers, repeated single options, extra positionals.
    (Q + ["--coverage", "0.5", "--no-such-flag"], "--no-such-flag"),
    (Q + ["--coverage"], "--coverage"),
    (Q + ["--coverage", "0.5", "--batch-size", "abc"], "--batch-size"),
    (Q + ["--effective-bits", "twelve"], "--effective-bits"),
    (Q + ["--coverage", "0.5", "--coverage", "0.3"], "--coverage"),
    (Q + ["--coverage", "0.5", "stray"], "stray"),
    (Q + ["--coverage", "0.5", "--device", "cpu", "--device", "cpu"], "--device"),
    (["quantize", "--calib", "{c}", "--out", "{o}", "--coverage", "0.5"], "--model"),
    (["model"], "subcommand"),
    (["calib"], "subcommand"),
    (["model", "init", "--preset", "tiny"], "--out"),
    (["model", "init", "--preset", "tiny", "--out", "{o}", "--seed", "x"], "--seed"),
    (FWD[:-2], "--output"),
    (SYNTH[:-2], "--seq-len"),
    # Coverage forms, selection, patterns, names.
    (Q + ["--coverage", "1.5"], "topXX"),
    (Q + ["--coverage", "-0.5"], "topXX"),
    (Q + ["--coverage", "inf"], "topXX"),
    (Q + ["--coverage", "top101"], "topXX"),
    (Q + ["--coverage", "0%"], "topXX"),
    (Q + ["--coverage", "abc"], "topXX"),
    (Q, "exactly one"),
    (Q + ["--disabled-layers", "*layers.0.*"], "exactly one"),
    (Q + ["--coverage", "0.5", "--effective-bits", "12"], "exactly one"),
    (Q + ["--effective-bits", "0"], "(0, 16)"),
    (Q + ["--effective-bits", "16"], "(0, 16)"),
    (Q + ["--effective-bits", "nan"], "(0, 16)"),
    (Q + ["--coverage-manifest", "{r}/no-such.json"], "--coverage-manifest"),
    (Q + ["--coverage-manifest", "{c}"], "not valid JSON"),
    (Q + ["--coverage", "0.5", "--disabled-layers", "[abc"], "match no Linear"),
    (Q + ["--coverage", "0.5", "--disabled-layers", "*"], "no group to quantize"),
    (Q + ["--coverage", "0.5", "--scheme", "a b"], "scheme name"),
    # Formats, methods, devices, dtypes, counts.
    (Q + ["--coverage", "0.5", "--format", "gguf"], "export format"),
    (Q + ["--coverage", "0.5", "--format", ""], "export format"),
    (Q + ["--coverage", "0.5", "--method", "magic"], "score method"),
    (Q + ["--coverage", "0.5", "--device", "tpu"], "auto | cpu | cuda"),
    (Q + ["--coverage", "0.5", "--device", ""], "auto | cpu | cuda"),
    (Q + ["--coverage", "0.5", "--device", "cuda:x"], "auto | cpu | cuda"),
    (Q + ["--coverage", "0.5", "--dtype", "fp16"], "dtype"),
    (Q + ["--coverage", "0.5", "--batch-size", "0"], "batch size"),
    (Q + ["--coverage", "0.5", "--calib-steps", "-1"], "calib_steps"),
    (FWD + ["--device", "tpu"], "auto | cpu | cuda"),
    (FWD + ["--device", "cpu", "--dtype", "fp16"], "dtype"),
    (["model", "bench", "--model", "{m}", "--device", "tpu"], "auto | cpu | cuda"),
    (["model", "bench", "--model", "{m}", "--device", "cpu", "--image", "12"], "HxW"),
    (["model", "bench", "--model", "{m}", "--device", "cpu", "--iters", "0"], "--iters"),
    (["model", "init", "--preset", "nosuchpreset", "--out", "{o}"], "nosuchpreset"),
    (["model", "init", "--preset", "tiny", "--out", "{o}", "--dtype", "fp16"], "--dtype"),
    (SYNTH + ["--image-size", "abc"], "--image-size"),
    (SYNTH + ["--image-size", "5x5"], "multiples"),
    (["calib", "synth", "--model", "{m}", "--out", "{o}", "--samples", "0", "--seq-len", "80"], "positive"),
    (["calib", "synth", "--model", "{m}", "--out", "{o}", "--samples", "2", "--seq-len", "2"], "seq_len"),
    # Inputs that are missing or are not what they claim to be.
    (["inspect", "{r}/no-such-dir"], "does not exist"),
    (["diff", "{m}"], "quant_manifest"),
    (FWD[:5] + ["{m}/config.json", "--output", "{o}", "--device", "cpu"], "config.json"),
]


@pytest.mark.parametrize("args,word", USAGE_ERRORS, ids=[" ".join(a[:2] + a[-2:]) for a, _ in USAGE_ERRORS])
def test_every_usage_error_exits_2(autoquant_bin, env, tmp_path, args, word):
    """Each exits 2 (none 1, none a crash), says what is wrong, writes no output and leaves the inputs
    byte-identical."""
    out = tmp_path / "out"
    fill = {"{m}": str(env["model"]), "{c}": str(env["calib"]), "{o}": str(out), "{r}": str(env["root"])}
    argv = []
    for a in args:
        for k, v in fill.items():
            a = a.replace(k, v)
        argv.append(a)
    _refused(autoquant_bin, env, *argv, words=[word])
    assert not out.exists()


EXIT_CODES_LINE = "Exit codes: 0 success, 1 runtime failure, 2 usage or validation error"


def _option_lines(help_text: str) -> dict:
    """--flag -> its help entry (the option column and the description, which may wrap onto the next line)."""
    out, current = {}, None
    for line in help_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-"):
            current = stripped.split()[0].split(",")[-1] if stripped.startswith("-h,") else stripped.split()[0]
            current = current.split(",")[0].split("=")[0]
            out[current] = stripped
        elif current and line.startswith(" " * 20) and stripped:
            out[current] += " " + stripped
        elif not stripped:
            current = None
    return out


@pytest.mark.parametrize("command", [[], ["quantize"], ["model"], ["model", "init"], ["model", "forward"],
                                     ["model", "bench"], ["calib"], ["calib", "synth"], ["inspect"], ["diff"],
                                     ["report"], ["model", "generate"]])
def test_every_help_states_the_exit_codes_once(autoquant_bin, command):
    proc = qh.run(autoquant_bin, *command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(EXIT_CODES_LINE) == 1, proc.stdout


def test_quantize_help_shows_every_default(autoquant_bin, tmp_path):
    """Every option of `quantize` that has a default shows it as `=VALUE` (the baseline cache as the path it
    resolves to); the others are required, a selection (exactly one is given), or flags (off)."""
    env = dict(os.environ, AUTOQUANT_CACHE=str(tmp_path / "aqcache"))
    proc = subprocess.run([str(autoquant_bin), "quantize", "--help"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0
    opts = _option_lines(proc.stdout)
    defaults = {"--method": "gradient", "--format": "compressed-tensors", "--device": "auto", "--dtype": "auto",
                "--calib-steps": "0", "--score-steps": "0", "--batch-size": "1", "--layout": "standalone",
                "--baseline-cache": str(tmp_path / "aqcache" / "baselines")}
    for flag, default in defaults.items():
        assert f"={default}" in opts[flag].split()[1], f"{flag}: default {default} not shown: {opts[flag]!r}"
    required = {"--model", "--calib", "--out"}
    selections = {"--coverage", "--coverage-manifest", "--effective-bits", "--disabled-layers"}
    flags = {"--include-vision", "--overwrite", "--json", "--help"}
    described = {"--scheme": "default: the output directory's name",
                 "--blob-store": "default: .autoquant/blobs beside --out",
                 "--formats": "default fp8"}
    for flag in required:
        assert "REQUIRED" in opts[flag], opts[flag]
    for flag, words in described.items():
        assert words in opts[flag], opts[flag]
    assert set(opts) == set(defaults) | required | selections | flags | set(described), sorted(opts)
    assert "--disable " in proc.stdout or "--disabled-layers,--disable" in proc.stdout  # the alias
    assert "Give exactly one selection" in proc.stdout


def test_readme_documents_the_exit_codes():
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "Exit codes (every `autoquant` command): **0** success, **1** runtime failure, **2** usage" in readme
    assert "--help` lists every option with its default" in readme

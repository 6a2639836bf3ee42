"""Export formats of a scheme: FP8 bytes, compressed-tensors in transformers, ModelOpt config vs vLLM.

One tiny random model (`autoquant model init --preset tiny`, legacy key names model.layers.* /
visual.*), plus a copy with transformers-5 key names (model.language_model.* / model.visual.*),
one calibration set and one baseline cache; coverage-0.5 schemes in both formats.

- test_fp8_bytes_match_reference: every FP8 weight is byte-identical to
  clamp(W.float() / s, +-448).to(float8_e4m3fn) with s = max|W| / 448 as stored: float32 0-d
  (modelopt), [1] in the checkpoint's dtype (compressed-tensors; bf16 here), the bytes quantized with
  that stored value; dequantized error |q * s - W| <= half an E4M3 spacing: |W| * 2^-4 for normals
  (|W/s| >= 2^-6), s * 2^-10 for subnormals (quant_helpers.e4m3_error_bound).
- test_default_format_is_compressed_tensors: a scheme written without --format.
- test_ct_layout_matches_compressed_tensors_compressor: compressed-tensors' own compressor, run on the
  same base in bf16 with our config and our scales, writes the same tensor names, dtypes and shapes;
  its FP8 codes round W / s to bf16 first, so a few percent differ from ours by one E4M3 step, and
  there ours are the nearer ones (we round once, in float32).
- test_default_format_in_transformers_matches_our_forward: the default-format scheme of the bf16 base,
  loaded by transformers (the newest installed, and 5.17, the GPU machine's version, from
  $AUTOQUANT_CACHE/transformers-5.17 in a subprocess), each in the checkpoint's own dtype (a float32
  base and the bf16 one), gives logits equal to `autoquant model forward` (our fake-quant forward):
  within LOGITS_TOL in float32, within bf16 rounding in bfloat16 (see Tolerances); and different from
  the base model's.
- test_ct_quantization_config: the compressed-tensors block (static per-tensor FP8, float-quantized,
  compressed) and its ignore == every unquantized Linear.
- test_ct_ignore_names_transformers_modules: every `ignore` entry names a Linear of the model as
  transformers 5 builds it (else compressed-tensors quantizes that Linear).
- test_ct_loads_in_transformers: from_pretrained(dtype=float32) with compressed-tensors installed:
  no missing/unexpected keys; after a forward (compressed-tensors decompresses on the first one)
  quantized Linears hold exactly fp8 * weight_scale, others exactly the base weights; logits equal
  the Python fake-quant reference (weights fp8 * s, inputs fake-quantized with ModelOpt's formula at
  amax = input_scale * 448) within LOGITS_TOL, and are >= 100x closer to it than to the base model.
- test_ct_transformers_vs_our_forward / test_our_forward_vs_fake_quant_reference: the same
  comparison with `autoquant model forward --model SCHEME_DIR` (skipped while our forward cannot load
  FP8 schemes).
- test_modelopt_config_vllm_rules: config.json quantization_config / hf_quant_config.json checked
  with vLLM's ModelOpt rules restated in Python (quant_helpers.vllm_*).
- test_modelopt_export_not_understood_by_transformers: transformers 5.x has no "modelopt" quantizer;
  it loads raw FP8 codes as weights and drops the scales. Documents that the modelopt export is for
  vLLM / TensorRT-LLM; fails (so we notice) if transformers starts handling it.

Tolerances: LOGITS_TOL = 1e-4 absolute on logits of magnitude ~2. In bf16 both sides round along the
way (compressed-tensors also rounds x / input_scale to bf16 before the FP8 cast; we scale in float32,
as FP8 engines do), so "within bf16 rounding" is measured against our float32 forward of the same
scheme: transformers' bf16 logits may be at most BF16_SLACK x as far from it as our own bf16 forward
is (which is itself within BF16_ULPS bf16 ulps of the largest logit), and must be BF16_RATIO x nearer
to it than to the base model's (mean |difference|; on this tiny random model the FP8 effect is only a
few bf16 ulps, so max |difference| cannot separate the two). transformers (compressed-tensors)
dequantizes weights to float32 and fake-quantizes inputs as x / s (s = input_scale) while ModelOpt and
our engine use x * (448 / amax); both are float32, so the differences are float32 rounding in the
scale and in matmul accumulation order (measured ~6e-7). One E4M3 rounding flip on a boundary would
move a logit by far less than the FP8-vs-base difference (~0.1), which the 100x check guards.
"""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import forward_helpers as fh
import quant_helpers as qh

LOGITS_TOL = 1e-4
BASE_RATIO = 100.0
BF16_ULPS = 8
BF16_SLACK = 1.5
BF16_RATIO = 1.3
# transformers versions the default format must load in: the venv's (newest) and the GPU machine's.
TF_517 = pathlib.Path(os.environ.get("AUTOQUANT_CACHE", pathlib.Path.home() / ".cache" / "autoquant")) / \
    "transformers-5.17"
TRANSFORMERS = {"newest": None, "5.17": TF_517}
CALIB = ["--samples", "8", "--seq-len", "32", "--images-per-sample", "1", "--image-size", "56x56", "--seed", "1"]
FORMATS = ["modelopt", "compressed-tensors"]
LAYOUTS = ["legacy", "v5"]

@pytest.fixture(scope="module")
def env(autoquant_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    legacy, calib = root / "model_legacy", root / "calib.safetensors"
    qh.run(autoquant_bin, "model", "init", "--preset", "tiny", "--out", legacy, "--seed", "0", check=True)
    legacy_f32 = root / "model_legacy_f32"
    qh.run(autoquant_bin, "model", "init", "--preset", "tiny", "--out", legacy_f32, "--seed", "0", "--dtype",
           "float32", check=True)
    qh.run(autoquant_bin, "calib", "synth", "--model", legacy, "--out", calib, *CALIB, check=True)
    v5 = qh.to_v5_layout(legacy, root / "model_v5")
    return {"root": root, "models": {"legacy": legacy, "v5": v5, "legacy_f32": legacy_f32}, "calib": calib,
            "cache": root / "cache",
            "tensors": {"legacy": qh.read_checkpoint(legacy), "v5": qh.read_checkpoint(v5)}}


@pytest.fixture(scope="module")
def schemes(autoquant_bin, env):
    out = {}
    for layout in LAYOUTS:
        for fmt in FORMATS:
            d = env["root"] / f"{layout}_{fmt}"
            qh.quantize(autoquant_bin, env["models"][layout], env["calib"], d, "--coverage", "0.5", "--format", fmt,
                        cache=env["cache"])
            out[(layout, fmt)] = d
    for layout in ("legacy", "legacy_f32"):
        d = env["root"] / f"{layout}_default"
        qh.quantize(autoquant_bin, env["models"][layout], env["calib"], d, "--coverage", "0.5", cache=env["cache"])
        out[(layout, "default")] = d
    return out


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(0)
    rows = [fh.random_text(gen, 5) + fh.image_block(56, 56) + fh.random_text(gen, 4),
            fh.random_text(gen, 2) + fh.image_block(56, 56) + fh.random_text(gen, 7)]
    return fh.make_inputs(rows, [(56, 56), (56, 56)], seed=1)


def _reference_logits(env, schemes, layout, fmt, inputs):
    model, _ = qh.fake_quant_reference_model(env["models"][layout], schemes[(layout, fmt)])
    return fh.hf_logits(model, inputs)


def _base_logits(env, layout, inputs):
    from transformers import Qwen2_5_VLForConditionalGeneration
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(env["models"][layout], dtype=torch.float32).eval()
    return fh.hf_logits(model, inputs)


def _our_logits_or_skip(autoquant_bin, scheme_dir, inputs, work):
    """`autoquant model forward` on an FP8 scheme; skipped while it rejects the scale tensors."""
    from safetensors.torch import load_file, save_file
    work.mkdir(parents=True, exist_ok=True)
    inp, out = work / "in.safetensors", work / "out.safetensors"
    save_file({k: v.contiguous() for k, v in inputs.items()}, inp)
    proc = qh.run(autoquant_bin, "model", "forward", "--model", scheme_dir, "--input", inp, "--output", out,
                  "--device", "cpu", "--dtype", "float32", "--overwrite")
    if proc.returncode != 0 and "unexpected" in proc.stderr and "_scale" in proc.stderr:
        pytest.skip("`autoquant model forward` does not load FP8 schemes yet: " + proc.stderr.strip()[:200])
    assert proc.returncode == 0, proc.stderr
    return load_file(out)["logits"]


# ----------------------------------------------------------------------------- FP8 bytes

@pytest.mark.parametrize("fmt", FORMATS)
def test_fp8_bytes_match_reference(env, schemes, fmt):
    tensors = qh.read_checkpoint(schemes[("legacy", fmt)])
    base = env["tensors"]["legacy"]
    modules = sorted(qh.fp8_modules(tensors))
    assert len(modules) >= 5, modules
    scale_shape = () if fmt == "modelopt" else (1,)
    worst = 0.0
    for m in modules:
        w = qh.to_tensor(base[m + ".weight"])
        # modelopt stores float32 scales; compressed-tensors the checkpoint's own dtype (bf16 here).
        scale_dt = "F32" if fmt == "modelopt" else base[m + ".weight"][0]
        q_ref, s_ref = qh.fp8_reference(w, qh.ST_DTYPES[scale_dt])
        dt, shape, data = tensors[m + ".weight"]
        assert (dt, shape) == ("F8_E4M3", tuple(w.shape)), m
        assert data == q_ref.contiguous().view(torch.uint8).numpy().tobytes(), f"{m}: FP8 bytes differ"
        dt, shape, data = tensors[m + ".weight_scale"]
        assert (dt, shape) == (scale_dt, scale_shape), (m, dt, shape)
        assert data == s_ref.reshape(1).contiguous().view(torch.uint8).numpy().tobytes(), \
            f"{m}: weight_scale {qh.to_tensor(tensors[m + '.weight_scale'])} != {s_ref} bit-exactly"
        s_ref = s_ref.float()
        dt, shape, _ = tensors[m + ".input_scale"]
        assert (dt, shape) == (scale_dt, scale_shape), (m, dt, shape)
        s_in = float(qh.to_tensor(tensors[m + ".input_scale"]).float().reshape(()))
        assert math.isfinite(s_in) and s_in > 0
        err = (q_ref.float() * s_ref - w.float()).abs()
        bound = qh.e4m3_error_bound(w, s_ref)
        assert bool((err <= bound).all()), f"{m}: max excess {float((err - bound).max())}"
        worst = max(worst, float((err / bound.clamp_min(1e-30)).max()))
        # The largest |W| maps to 448 exactly.
        assert float(q_ref.float().abs().max()) == 448.0
    print(f"{fmt}: {len(modules)} FP8 weights, worst error / bound = {worst:.3f}")


# ----------------------------------------------------------------------------- compressed-tensors

def test_ct_quantization_config(env, schemes):
    d = schemes[("legacy", "compressed-tensors")]
    qc = json.loads((d / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors"
    assert qc["quantization_status"] == "compressed"
    assert qc["format"] == "float-quantized"
    assert not (d / "hf_quant_config.json").exists()
    (group,) = qc["config_groups"].values()
    assert group["targets"] == ["Linear"]
    for key in ("weights", "input_activations"):
        args = group[key]
        assert (args["num_bits"], args["type"], args["strategy"], args["symmetric"], args["dynamic"]) == \
            (8, "float", "tensor", True, False), (key, args)
    tensors = qh.read_checkpoint(d)
    unquantized = qh.linear_modules(env["tensors"]["legacy"]) - qh.fp8_modules(tensors)

    def v5(name):  # ignore holds transformers 5.x module names, whatever the checkpoint's key layout
        if name.startswith("visual."):
            return "model." + name
        if name.startswith("model.") and not name.startswith(("model.language_model.", "model.visual.")):
            return "model.language_model." + name[len("model."):]
        return name

    assert set(qc["ignore"]) == {v5(n) for n in unquantized}
    assert len(qc["ignore"]) == len(set(qc["ignore"]))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ct_config_vllm_rules(env, schemes, layout):
    """vLLM's compressed-tensors rules (0.26 as 0.33): ignore names pass through the model's
    hf_to_vllm_mapper, a fused layer's shards must agree, and every Linear vLLM builds is quantized
    exactly where the checkpoint holds FP8 (vision and lm_head included), under one plainly named
    config group."""
    d = schemes[(layout, "compressed-tensors")]
    qc = json.loads((d / "config.json").read_text())["quantization_config"]
    assert list(qc["config_groups"]) == ["group_0"]  # llm-compressor #3028: suffixed names mis-match in vLLM
    ignore = [qh.vllm_map_name(e) if "." in e and not e.startswith("re:") else e for e in qc["ignore"]]
    tensors = qh.read_checkpoint(d)
    quantized = qh.fp8_modules(tensors)
    layers = qh.vllm_linear_layers(qh.linear_modules(env["tensors"][layout]))
    assert quantized and any("visual" in p for p in layers)
    for prefix, shards in sorted(layers.items()):
        states = {s in quantized for s in shards}
        assert len(states) == 1, f"{prefix}: fused shards {shards} differ in precision"
        if prefix == "language_model.lm_head":  # a ParallelLMHead: target "Linear" matches *Linear class names
            assert not states.pop(), "lm_head quantized: vLLM would load it unquantized"
            continue
        try:
            ignored = qh.vllm_ct_should_ignore(prefix, ignore)
        except qh.VllmFusedShardMismatch as e:
            pytest.fail(f"vLLM would raise: {e}")
        assert ignored == (not states.pop()), f"{prefix}: shards {shards}, vLLM ignores it: {ignored}"


def _hf_skeleton(model_dir):
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration
    with torch.device("meta"):
        return Qwen2_5_VLForConditionalGeneration._from_config(AutoConfig.from_pretrained(model_dir))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ct_ignore_names_transformers_modules(schemes, layout):
    d = schemes[(layout, "compressed-tensors")]
    qc = json.loads((d / "config.json").read_text())["quantization_config"]
    linears = {n for n, m in _hf_skeleton(d).named_modules() if isinstance(m, torch.nn.Linear)}
    unmatched = [e for e in qc["ignore"] if not e.startswith("re:") and e not in linears]
    assert not unmatched, f"{len(unmatched)} ignore entries name no transformers Linear, e.g. {unmatched[:3]}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ct_loads_in_transformers(env, schemes, inputs, layout):
    pytest.importorskip("compressed_tensors")
    from transformers import Qwen2_5_VLForConditionalGeneration
    d = schemes[(layout, "compressed-tensors")]
    model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(d, dtype=torch.float32,
                                                                     output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    assert not problems, problems
    logits = fh.hf_logits(model.eval(), inputs)  # decompresses the weights

    tensors = qh.read_checkpoint(d)
    base = env["tensors"][layout]
    quantized = qh.fp8_modules(tensors)
    modules = dict(model.named_modules())
    for m in qh.linear_modules(base):
        w = modules[qh.hf_module_name(m)].weight.detach()
        if m in quantized:
            expected = qh.to_tensor(tensors[m + ".weight"]).float() * \
                qh.to_tensor(tensors[m + ".weight_scale"]).float()
        else:
            expected = qh.to_tensor(base[m + ".weight"]).float()
        assert w.dtype == torch.float32 and torch.equal(w, expected), m

    ref = _reference_logits(env, schemes, layout, "compressed-tensors", inputs)
    base_logits = _base_logits(env, layout, inputs)
    d_ref, d_base = fh.max_abs_diff(logits, ref), fh.max_abs_diff(logits, base_logits)
    print(f"transformers CT vs fake-quant reference {d_ref:.3g}, vs base model {d_base:.3g}")
    assert d_ref <= LOGITS_TOL
    assert d_base >= BASE_RATIO * max(d_ref, 1e-7), (d_ref, d_base)


def test_ct_transformers_vs_our_forward(autoquant_bin, env, schemes, inputs, tmp_path):
    pytest.importorskip("compressed_tensors")
    from transformers import Qwen2_5_VLForConditionalGeneration
    d = schemes[("v5", "compressed-tensors")]
    ours = _our_logits_or_skip(autoquant_bin, d, inputs, tmp_path)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(d, dtype=torch.float32).eval()
    theirs = fh.hf_logits(model, inputs)
    base_logits = _base_logits(env, "v5", inputs)
    d_ours, d_base = fh.max_abs_diff(ours, theirs), fh.max_abs_diff(theirs, base_logits)
    print(f"transformers CT vs autoquant forward {d_ours:.3g}, vs base model {d_base:.3g}")
    assert d_ours <= LOGITS_TOL
    assert d_base >= BASE_RATIO * max(d_ours, 1e-7), (d_ours, d_base)


@pytest.mark.parametrize("layout,fmt", [("legacy", "modelopt"), ("legacy", "compressed-tensors"),
                                        ("v5", "compressed-tensors")])
def test_our_forward_vs_fake_quant_reference(autoquant_bin, env, schemes, inputs, tmp_path, layout, fmt):
    ours = _our_logits_or_skip(autoquant_bin, schemes[(layout, fmt)], inputs, tmp_path)
    ref = _reference_logits(env, schemes, layout, fmt, inputs)
    base_logits = _base_logits(env, layout, inputs)
    d_ref, d_base = fh.max_abs_diff(ours, ref), fh.max_abs_diff(ours, base_logits)
    print(f"{layout}/{fmt}: autoquant forward vs fake-quant reference {d_ref:.3g}, vs base model {d_base:.3g}")
    assert d_ref <= LOGITS_TOL
    assert d_base >= BASE_RATIO * max(d_ref, 1e-7), (d_ref, d_base)


def test_default_format_is_compressed_tensors(schemes):
    d = schemes[("legacy", "default")]
    qc = json.loads((d / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors"
    assert qh.quant_manifest(d)["format"] == "compressed-tensors"
    assert not (d / "hf_quant_config.json").exists()
    assert qh.read_checkpoint(d) == qh.read_checkpoint(schemes[("legacy", "compressed-tensors")])


def test_ct_layout_matches_compressed_tensors_compressor(env, schemes):
    """compressed-tensors' own compressor on the same base (bf16, transformers-5 names), quantized with our
    config.json's quantization_config and our stored scales: same tensor names, dtypes, shapes and FP8 bytes."""
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from transformers import Qwen2_5_VLForConditionalGeneration
    d = schemes[("v5", "compressed-tensors")]
    ours = qh.read_checkpoint(d)
    qc = json.loads((d / "config.json").read_text())["quantization_config"]
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(env["models"]["v5"], dtype=torch.bfloat16)
    config = QuantizationConfig.model_validate({**qc, "quantization_status": "initialized"})
    apply_quantization_config(model, config)
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "weight_scale"):
                module.weight_scale.copy_(qh.to_tensor(ours[name + ".weight_scale"]))
                module.input_scale.copy_(qh.to_tensor(ours[name + ".input_scale"]))
    ModelCompressor.from_pretrained_model(model, quantization_format="float-quantized").compress_model(model)
    ref = {k: v for k, v in model.state_dict().items() if not (k == "lm_head.weight" and model.config.tie_word_embeddings)}
    assert set(ref) == set(ours), {"only ours": set(ours) - set(ref), "only compressed-tensors": set(ref) - set(ours)}
    dtypes = {v: k for k, v in qh.ST_DTYPES.items()}
    base = env["tensors"]["v5"]
    differing = total = 0
    for name, t in ref.items():
        dt, shape, data = ours[name]
        assert (dt, shape) == (dtypes[t.dtype], tuple(t.shape)), (name, dt, shape, t.dtype, tuple(t.shape))
        if t.dtype != torch.float8_e4m3fn:
            continue
        # Same stored scale. compressed-tensors rounds W / s to bf16 before the FP8 cast (two roundings),
        # we divide in float32 (one): where the codes differ, ours must be the nearer one, one step away.
        mine = qh.to_tensor(ours[name])
        s_ = qh.to_tensor(ours[name[:-len(".weight")] + ".weight_scale"]).float()
        w = qh.to_tensor(base[name]).float()
        err_mine, err_ct = (mine.float() * s_ - w).abs(), (t.float() * s_ - w).abs()
        diff = mine.view(torch.uint8) != t.view(torch.uint8)
        assert bool((err_mine <= err_ct).all()), f"{name}: compressed-tensors' code is nearer somewhere"
        steps = (mine.view(torch.uint8)[diff].int() - t.view(torch.uint8)[diff].int()).abs()
        assert bool((steps == 1).all()), f"{name}: codes more than one E4M3 step apart"
        differing += int(diff.sum())
        total += diff.numel()
    # About 4 % here: a bf16 quotient lands on an E4M3 midpoint about once in 2^4 values.
    print(f"FP8 codes differing from compressed-tensors' double rounding: {differing} of {total}")


def _hf_logits_in(version, model_dir, inputs, dtype, work):
    """transformers logits from a subprocess running `version` ("newest": the venv's; "5.17": TF_517)."""
    from safetensors.torch import load_file, save_file
    extra = TRANSFORMERS[version]
    env = dict(os.environ)
    if extra is not None:
        if not (extra / "transformers").is_dir():
            pytest.fail(f"transformers 5.17 is not installed at {extra}: run scripts/setup.sh", pytrace=False)
        env["PYTHONPATH"] = os.pathsep.join([str(extra), env.get("PYTHONPATH", "")])
    work.mkdir(parents=True, exist_ok=True)
    inp, out = work / "in.safetensors", work / "out.safetensors"
    save_file({k: v.contiguous() for k, v in inputs.items()}, inp)
    script = pathlib.Path(__file__).resolve().parent / "hf_scheme_logits.py"
    proc = subprocess.run([sys.executable, str(script), str(model_dir), str(inp), dtype, str(out)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return load_file(out)["logits"], info


@pytest.mark.parametrize("version", list(TRANSFORMERS))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_default_format_in_transformers_matches_our_forward(autoquant_bin, env, schemes, inputs, tmp_path,
                                                            version, dtype):
    """The default-format scheme of a base stored in `dtype`, loaded in that dtype (the checkpoint's own:
    transformers 5.17 dequantizes in the stored scales' dtype, so it cannot load a bf16 scheme as float32)."""
    pytest.importorskip("compressed_tensors")
    import transformers
    layout = "legacy" if dtype == "bfloat16" else "legacy_f32"
    d = schemes[(layout, "default")]
    theirs, info = _hf_logits_in(version, d, inputs, dtype, tmp_path / "scheme")
    want_version = transformers.__version__ if version == "newest" else "5.17."
    assert info["transformers"].startswith(want_version), info
    assert not info["problems"], info
    assert info["weight_dtype"] == f"torch.{dtype}", info
    ours = fh.our_logits(autoquant_bin, d, inputs, tmp_path / "ours", dtype=dtype)
    if dtype == "float32":
        base_logits, _ = _hf_logits_in(version, env["models"][layout], inputs, dtype, tmp_path / "base")
        d_ours, d_base = fh.max_abs_diff(ours, theirs), fh.max_abs_diff(theirs, base_logits)
        print(f"transformers {info['transformers']} float32: vs autoquant forward {d_ours:.3g}, vs base {d_base:.3g}")
        assert d_ours <= LOGITS_TOL
        assert d_base >= BASE_RATIO * max(d_ours, 1e-7), (d_ours, d_base)
        return
    # bf16: both forwards round to bf16 along the way (compressed-tensors also rounds x / input_scale to
    # bf16 before the FP8 cast, we scale in float32 as FP8 engines do), so neither equals the other bit
    # for bit. Both are measured against our float32 forward of the same scheme: transformers must stay
    # within BF16_SLACK x the distance our own bf16 forward has from it, and be nearer to it than to the
    # base model's float32 logits (by mean |difference|, which the FP8 error dominates).
    ref = fh.our_logits(autoquant_bin, d, inputs, tmp_path / "ref", dtype="float32")
    base_ref = fh.our_logits(autoquant_bin, env["models"][layout], inputs, tmp_path / "base", dtype="float32")
    own_rounding = fh.max_abs_diff(ours, ref)
    d_theirs, d_ours = fh.max_abs_diff(theirs, ref), fh.max_abs_diff(theirs, ours)
    mean_ref, mean_base = float((theirs - ref).abs().mean()), float((theirs - base_ref).abs().mean())
    print(f"transformers {info['transformers']} bfloat16: vs our float32 forward {d_theirs:.3g} (our bf16 forward: "
          f"{own_rounding:.3g}), vs our bf16 forward {d_ours:.3g}; mean vs scheme {mean_ref:.3g}, vs base {mean_base:.3g}")
    assert 0 < own_rounding <= BF16_ULPS * 2.0 ** -8 * float(ref.abs().max())
    assert d_theirs <= BF16_SLACK * own_rounding
    assert d_ours <= 2 * BF16_SLACK * own_rounding
    assert mean_base >= BF16_RATIO * mean_ref, (mean_ref, mean_base)


# ----------------------------------------------------------------------------- modelopt vs vLLM

@pytest.mark.parametrize("layout", LAYOUTS)
def test_modelopt_config_vllm_rules(env, schemes, layout):
    d = schemes[(layout, "modelopt")]
    qc = json.loads((d / "config.json").read_text())["quantization_config"]
    hf = json.loads((d / "hf_quant_config.json").read_text())

    # Method selection (ModelOptFp8Config.override_quantization_method / from_config).
    assert qc["quant_method"].lower().startswith("modelopt")
    assert str(qc["quant_algo"]).upper() == "FP8", "one quantized format -> quant_algo FP8"
    assert "quantized_layers" not in qc or not qc["quantized_layers"]
    assert not qc.get("kv_cache_scheme"), "no KV-cache quantization was asked for (no k_scale/v_scale written)"
    assert isinstance(qc["ignore"], list)
    # hf_quant_config.json (read when config.json has no quantization_config) says the same.
    assert hf["quantization"]["quant_algo"] == qc["quant_algo"]
    assert hf["quantization"]["kv_cache_quant_algo"] is None
    assert sorted(hf["quantization"]["exclude_modules"]) == sorted(qc["ignore"])
    assert hf["producer"] == qc["producer"]
    assert (d / "config.json").exists() and json.loads((d / "config.json").read_text())["architectures"] == \
        ["Qwen2_5_VLForConditionalGeneration"]

    tensors = qh.read_checkpoint(d)
    quantized = qh.fp8_modules(tensors)
    linears = qh.linear_modules(env["tensors"][layout])
    assert quantized and quantized < linears
    exclude = qh.vllm_apply_mapper(qc["ignore"])
    layers = qh.vllm_linear_layers(linears)
    for prefix, shards in sorted(layers.items()):
        states = {s in quantized for s in shards}
        assert len(states) == 1, f"{prefix}: fused shards {shards} differ in precision"
        try:
            excluded = qh.vllm_is_layer_excluded(prefix, exclude)
        except qh.VllmFusedShardMismatch as e:
            pytest.fail(f"vLLM would raise: {e}")
        assert excluded == (not states.pop()), f"{prefix}: shards {shards}, quantized {shards[0] in quantized}, " \
                                               f"vLLM excludes it: {excluded}"
        if "visual" in prefix:
            assert excluded, f"{prefix}: vision Linear not excluded"
    assert qh.vllm_map_name("lm_head.weight")[: -len(".weight")] in layers
    # What ModelOptFp8LinearMethod creates for a quantized layer: weight fp8 [out, in], weight_scale and
    # input_scale float32 per tensor (one per shard; a 0-d or [1] tensor loads into that slot).
    scales = {k for k in tensors if k.endswith(("_scale", "_zero_point"))}
    assert scales == {f"{m}.{s}" for m in quantized for s in ("weight_scale", "input_scale")}
    for m in quantized:
        assert tensors[m + ".weight"][0] == "F8_E4M3" and len(tensors[m + ".weight"][1]) == 2
        for s in ("weight_scale", "input_scale"):
            dt, shape, _ = tensors[f"{m}.{s}"]
            assert dt == "F32" and math.prod(shape) == 1, (m, s, dt, shape)
    # Unquantized layers load as plain weights: base dtype, nothing FP8 among them.
    for m in linears - quantized:
        assert tensors[m + ".weight"][0] != "F8_E4M3", m


def test_modelopt_export_not_understood_by_transformers(schemes):
    from transformers import Qwen2_5_VLForConditionalGeneration
    d = schemes[("v5", "modelopt")]
    tensors = qh.read_checkpoint(d)
    model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(d, dtype=torch.float32,
                                                                     output_loading_info=True)
    quantized = qh.fp8_modules(tensors)
    dropped = {k for k in info["unexpected_keys"] if k.endswith(("weight_scale", "input_scale"))}
    assert len(dropped) == 2 * len(quantized), "transformers now reads the modelopt scales: test its loading"
    m = sorted(quantized)[0]
    w = dict(model.named_modules())[qh.hf_module_name(m)].weight.detach()
    assert torch.equal(w, qh.to_tensor(tensors[m + ".weight"]).float()), "raw FP8 codes expected (scale dropped)"

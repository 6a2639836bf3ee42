"""NVFP4 (W4A4 and weight-only) against the tools that define it, on the CPU.

- test_numerics_match_modelopt_export: `autoquant numerics --format nvfp4` packs, scales and
  dequantizes tensors (bf16 and float32, zero blocks, values beyond amax) bit for bit as ModelOpt
  0.47's NVFP4QTensor (installed) exports and dequantizes them.
- test_fake_quant_matches_modelopt_kernel: our fake quantizer (what the scores use) equals ModelOpt's
  NVFP4 fake quantizer bit for bit: its Triton kernel where CUDA is available, else the line-by-line
  restatement in nvfp4_reference.py (ModelOpt has no CPU path for it).
- test_vllm_input_matches_vllm_emulation: our activation quantization for evaluation equals vLLM's
  emulation (restated), bit for bit.
- test_export_bytes_match_modelopt: a tiny model quantized with --formats nvfp4 in both encodings:
  every NVFP4 weight and block scale is ModelOpt's export of the base weight with the stored global
  scale; the global scale is the maximum |W| over the fused GEMM's shards / 2688 (ModelOpt's
  preprocess_linear_fusion); compressed-tensors stores the reciprocals; the tensor names, dtypes
  and shapes are the ones vLLM's loaders read.
- test_mixed_configs: a NVFP4 + FP8 search at 6 effective bits writes ModelOpt's MIXED_PRECISION
  (quantized_layers, group_size 16, config groups by format) and compressed-tensors' config groups
  (group_0 NVFP4 nvfp4-pack-quantized, group_1 FP8 float-quantized, ignore = every BF16 Linear).
- test_transformers_loads_ct_nvfp4: transformers with compressed-tensors loads both NVFP4 schemes in
  bfloat16 (its NVFP4 decompression makes bfloat16 weights, so float32 models fail: recorded), with
  every decompressed weight equal to ModelOpt's dequantization rounded to bfloat16; the weight-only
  scheme's logits equal our forward within bf16 tolerance.
"""
import hashlib
import json
import pathlib

import pytest
import torch

import forward_helpers as fh
import nvfp4_reference as nr
import quant_helpers as qh

pytest.importorskip("modelopt")
from safetensors.torch import load_file, save_file  # noqa: E402

CALIB = ["--samples", "8", "--seq-len", "96", "--images-per-sample", "1", "--image-size", "56x56", "--seed", "1"]


def _tensors(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(48, 128, generator=g) * 0.05
    w[3, 16:32] = 0  # an all-zero block
    w[5, :16] *= 1e-4  # a block far below the tensor's amax
    out = {"w_bf16": w.to(torch.bfloat16), "w_f32": w.clone(), "x": torch.randn(7, 64, generator=g).to(torch.bfloat16)}
    # Calibrated amax below max |x|: values saturate at the top block scale.
    out["x.amax"] = (out["x"].abs().max().float() * 0.5).reshape(())
    return out


@pytest.fixture(scope="module")
def numerics(autoquant_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("nvfp4_numerics")
    t = _tensors(0)
    save_file(t, root / "in.safetensors")
    qh.run(autoquant_bin, "numerics", "--format", "nvfp4", "--in", root / "in.safetensors", "--out",
           root / "out.safetensors", check=True)
    return t, load_file(root / "out.safetensors")


def _amax(t, name):
    return t.get(name + ".amax", t[name].abs().max().float())


@pytest.mark.parametrize("name", ["w_bf16", "w_f32", "x"])
def test_numerics_match_modelopt_export(numerics, name):
    t, out = numerics
    packed, scale, wsf2 = nr.modelopt_export(t[name], _amax(t, name))
    assert torch.equal(out[name + ".packed"], packed)
    assert torch.equal(out[name + ".block_scale"].view(torch.uint8), scale.view(torch.uint8))
    assert torch.equal(out[name + ".global_scale"], wsf2.float())
    deq = nr.modelopt_dequant(packed, scale, wsf2, t[name].shape)
    assert torch.equal(out[name + ".dequant"], deq)


@pytest.mark.parametrize("name", ["w_bf16", "w_f32", "x"])
def test_fake_quant_matches_modelopt_kernel(numerics, name):
    t, out = numerics
    ref = nr.modelopt_fake_quant(t[name], _amax(t, name))
    assert out[name + ".fake"].dtype == t[name].dtype
    assert torch.equal(out[name + ".fake"], ref)
    # Away from the zero / tiny-block rules the fake quantizer is the export's dequantization.
    deq = out[name + ".dequant"].to(t[name].dtype)
    normal = t[name].float().reshape(t[name].shape[0], -1, 16).abs().amax(-1) > _amax(t, name) * 1e-2
    mask = normal.repeat_interleave(16, dim=-1)
    assert torch.equal(out[name + ".fake"][mask], deq[mask])


def test_vllm_input_matches_vllm_emulation(numerics):
    t, out = numerics
    gs = 1.0 / (_amax(t, "x").float() / (6.0 * 448.0))
    assert torch.equal(out["x.vllm_input"], nr.vllm_quant_dequant_input(t["x"], gs))


@pytest.fixture(scope="module")
def env(autoquant_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("nvfp4")
    model, calib = root / "model", root / "calib.safetensors"
    qh.run(autoquant_bin, "model", "init", "--preset", "tiny", "--out", model, "--seed", "0", check=True)
    qh.run(autoquant_bin, "calib", "synth", "--model", model, "--out", calib, *CALIB, check=True)
    schemes = {}
    for name, args in {
        "ct": ["--formats", "nvfp4", "--coverage", "1"],
        "modelopt": ["--formats", "nvfp4", "--coverage", "1", "--format", "modelopt"],
        "ct_w4a16": ["--formats", "w4a16_nvfp4", "--coverage", "1"],
        "mixed_ct": ["--formats", "nvfp4,fp8", "--effective-bits", "6"],
        "mixed_modelopt": ["--formats", "nvfp4,fp8", "--effective-bits", "6", "--format", "modelopt"],
    }.items():
        qh.quantize(autoquant_bin, model, calib, root / name, *args, cache=root / "cache")
        schemes[name] = root / name
    return {"model": model, "base": qh.read_checkpoint(model), "schemes": schemes}


def _nvfp4_modules(tensors: dict, weight_name: str) -> set:
    return {k[:-len(weight_name) - 1] for k, (dt, _, _) in tensors.items()
            if k.endswith("." + weight_name) and dt == "U8"}


def _fused_parent(m: str) -> str:
    for shard, parent in (("q_proj", "qkv"), ("k_proj", "qkv"), ("v_proj", "qkv"), ("gate_proj", "gate_up"),
                          ("up_proj", "gate_up")):
        if m.endswith("." + shard):
            return m[: -len(shard)] + parent
    return m


@pytest.mark.parametrize("encoding", ["ct", "modelopt"])
def test_export_bytes_match_modelopt(env, encoding):
    ct = encoding == "ct"
    tensors = qh.read_checkpoint(env["schemes"][encoding])
    weight_name = "weight_packed" if ct else "weight"
    modules = _nvfp4_modules(tensors, weight_name)
    assert modules == qh.linear_modules(env["base"]) - {m for m in qh.linear_modules(env["base"]) if "visual" in m}
    group_amax = {}
    for m in modules:
        w = qh.to_tensor(env["base"][m + ".weight"])
        p = _fused_parent(m)
        group_amax[p] = max(group_amax.get(p, 0.0), w.abs().max().float().item())
    for m in sorted(modules):
        w = qh.to_tensor(env["base"][m + ".weight"])
        g_name, i_name = ("weight_global_scale", "input_global_scale") if ct else ("weight_scale_2", "input_scale")
        dt, shape, _ = tensors[m + "." + g_name]
        assert dt == "F32" and list(shape) == ([1] if ct else []), (m, dt, shape)
        g = qh.to_tensor(tensors[m + "." + g_name]).reshape(())
        amax = torch.tensor(group_amax[_fused_parent(m)])
        if ct:
            assert torch.equal(g, (6.0 * 448.0) / amax), m  # torch: reciprocal(amax) * 2688, as compressed-tensors
        else:
            assert torch.equal(g, amax / (6.0 * 448.0)), m
        packed, scale, _ = nr.modelopt_export(w, amax)
        assert torch.equal(qh.to_tensor(tensors[m + "." + weight_name]), packed), m
        stored_scale = qh.to_tensor(tensors[m + ".weight_scale"])
        assert stored_scale.dtype == torch.float8_e4m3fn and list(stored_scale.shape) == [w.shape[0], w.shape[1] // 16]
        assert torch.equal(stored_scale.view(torch.uint8), scale.view(torch.uint8)), m
        i = qh.to_tensor(tensors[m + "." + i_name]).reshape(())
        assert torch.isfinite(i) and i > 0, m
    # Shards of a fused GEMM share their input scale too.
    by_parent = {}
    for m in modules:
        i = qh.to_tensor(tensors[m + "." + ("input_global_scale" if ct else "input_scale")]).item()
        by_parent.setdefault(_fused_parent(m), set()).add(i)
    assert all(len(v) == 1 for v in by_parent.values()), by_parent


def test_weight_only_has_no_input_scale(env):
    tensors = qh.read_checkpoint(env["schemes"]["ct_w4a16"])
    assert _nvfp4_modules(tensors, "weight_packed")
    assert not [k for k in tensors if k.endswith("input_global_scale") or k.endswith("input_scale")]
    cfg = json.loads((env["schemes"]["ct_w4a16"] / "config.json").read_text())["quantization_config"]
    assert cfg["config_groups"]["group_0"]["input_activations"] is None
    assert cfg["format"] == "nvfp4-pack-quantized"


def test_mixed_configs(env):
    base_linears = qh.linear_modules(env["base"])
    # ModelOpt MIXED_PRECISION
    d = env["schemes"]["mixed_modelopt"]
    hf = json.loads((d / "hf_quant_config.json").read_text())["quantization"]
    assert hf["quant_algo"] == "MIXED_PRECISION"
    layers = hf["quantized_layers"]
    algos = {v["quant_algo"] for v in layers.values()}
    assert algos == {"NVFP4", "FP8"}, algos
    for name, v in layers.items():
        assert v == ({"quant_algo": "NVFP4", "group_size": 16} if v["quant_algo"] == "NVFP4" else {"quant_algo": "FP8"})
    tensors = qh.read_checkpoint(d)
    for name, v in layers.items():
        dt = tensors[name + ".weight"][0]
        assert dt == ("U8" if v["quant_algo"] == "NVFP4" else "F8_E4M3"), (name, dt)
    cfg = json.loads((d / "config.json").read_text())["quantization_config"]
    assert cfg["quant_algo"] == "MIXED_PRECISION" and cfg["quantized_layers"] == layers
    targets = {g["weights"]["num_bits"]: set(g["targets"]) for g in cfg["config_groups"].values()}
    assert targets[4] == {n for n, v in layers.items() if v["quant_algo"] == "NVFP4"}
    assert targets[8] == {n for n, v in layers.items() if v["quant_algo"] == "FP8"}
    # The search ran: a 6-bit average with NVFP4 (4.5) and FP8 (8) needs both.
    manifest = qh.quant_manifest(d)
    assert abs(manifest["effective_bits"] - 6.0) < 0.5 and manifest["effective_bits"] <= 6.0 + 1e-9
    # compressed-tensors
    d = env["schemes"]["mixed_ct"]
    cfg = json.loads((d / "config.json").read_text())["quantization_config"]
    assert cfg["format"] == "mixed-precision"
    g0, g1 = cfg["config_groups"]["group_0"], cfg["config_groups"]["group_1"]
    assert g0["format"] == "nvfp4-pack-quantized" and g0["weights"]["strategy"] == "tensor_group"
    assert g0["weights"]["group_size"] == 16 and g0["input_activations"]["dynamic"] == "local"
    assert g1["format"] == "float-quantized" and g1["weights"]["num_bits"] == 8
    tensors = qh.read_checkpoint(d)
    base = env["base"]
    for n in g0["targets"]:
        assert tensors[qh.checkpoint_module_name(n, base) + ".weight_packed"][0] == "U8", n
    for n in g1["targets"]:
        assert tensors[qh.checkpoint_module_name(n, base) + ".weight"][0] == "F8_E4M3", n
    ignored = {qh.checkpoint_module_name(n, base) for n in cfg["ignore"] if n != "lm_head" or "lm_head.weight" in base}
    quantized = {qh.checkpoint_module_name(n, base) for n in g0["targets"] + g1["targets"]}
    assert ignored | quantized == base_linears and not ignored & quantized
    assert any("visual" in n for n in ignored)


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(0)
    rows = [fh.random_text(gen, 5) + fh.image_block(56, 56) + fh.random_text(gen, 4)]
    return fh.make_inputs(rows, [(56, 56)], seed=1)


def _our_logits(autoquant_bin, scheme_dir, inputs, work, dtype):
    work.mkdir(parents=True, exist_ok=True)
    inp, out = work / "in.safetensors", work / "out.safetensors"
    save_file({k: v.contiguous() for k, v in inputs.items()}, inp)
    qh.run(autoquant_bin, "model", "forward", "--model", scheme_dir, "--input", inp, "--output", out, "--device", "cpu",
           "--dtype", dtype, "--overwrite", check=True)
    return load_file(out)["logits"].float()


@pytest.mark.parametrize("scheme", ["ct", "ct_w4a16"])
def test_transformers_loads_ct_nvfp4(autoquant_bin, env, inputs, tmp_path, scheme):
    pytest.importorskip("compressed_tensors")
    from transformers import Qwen2_5_VLForConditionalGeneration
    d = env["schemes"][scheme]
    model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(d, dtype=torch.bfloat16,
                                                                     output_loading_info=True)
    assert not {k: v for k, v in info.items() if v}
    theirs = fh.hf_logits(model.eval(), inputs).float()  # decompresses the weights
    tensors = qh.read_checkpoint(d)
    modules = dict(model.named_modules())
    for m in _nvfp4_modules(tensors, "weight_packed"):
        packed = qh.to_tensor(tensors[m + ".weight_packed"])
        wsf2 = 1.0 / qh.to_tensor(tensors[m + ".weight_global_scale"]).reshape(())
        deq = nr.modelopt_dequant(packed, qh.to_tensor(tensors[m + ".weight_scale"]), wsf2,
                                  (packed.shape[0], packed.shape[1] * 2))
        w = modules[qh.hf_module_name(m)].weight.detach()
        assert w.dtype == torch.bfloat16
        # compressed-tensors multiplies by the block scale over its reciprocal global scale, in float32.
        torch.testing.assert_close(w.float(), deq.to(torch.bfloat16).float(), rtol=2 ** -7, atol=0)
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(env["model"], dtype=torch.bfloat16).eval()
    base_logits = fh.hf_logits(base, inputs).float()
    ours = _our_logits(autoquant_bin, d, inputs, tmp_path, "bfloat16")
    d_ours, d_base = fh.max_abs_diff(ours, theirs), fh.max_abs_diff(theirs, base_logits)
    print(f"{scheme}: transformers CT vs autoquant forward {d_ours:.3g}, vs base model {d_base:.3g}")
    if scheme == "ct_w4a16":
        # Weight-only: the same weights in bfloat16 on both sides; only bf16 rounding differs.
        assert d_ours <= 0.1 * d_base, (d_ours, d_base)
    with pytest.raises(RuntimeError, match="dtype"):
        model32 = Qwen2_5_VLForConditionalGeneration.from_pretrained(d, dtype=torch.float32)
        fh.hf_logits(model32.eval(), inputs)


def _max_dw(line: str) -> float:
    return float(line.split("max |dw| ")[1].split()[0])


def test_diff_understands_formats_and_scales(autoquant_bin, env, tmp_path):
    """`autoquant diff` checks each NVFP4 scheme against its manifest in either encoding, compares
    NVFP4, FP8 and BF16 weights after dequantizing each in its format, and reports a copy whose
    weight bytes are equal but whose global scales differ as different (|dw| > 0), not identical."""
    s = env["schemes"]
    proc = qh.run(autoquant_bin, "diff", s["ct"], s["modelopt"], s["mixed_ct"], s["ct_w4a16"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "agrees with its manifest: NO" not in proc.stdout
    # ct and modelopt hold the same NVFP4 bytes in two encodings: the same weights up to the rounding of
    # the reciprocal global scale compressed-tensors stores (one float32 ulp of the scale).
    line = next(l for l in proc.stdout.splitlines() if " ct vs modelopt" in l)
    assert "0 groups differ" in line, line
    assert _max_dw(line) < 1e-6, line
    # A copy with one global scale doubled: same weight bytes, different weights.
    copy = qh.copy_scheme(s["ct"], tmp_path / "scaled")
    shard = next(copy.glob("*.safetensors"))
    tensors = load_file(shard)
    key = next(k for k in sorted(tensors) if k.endswith("mlp.down_proj.weight_global_scale"))
    tensors[key] = tensors[key] * 2
    shard.unlink()
    save_file(tensors, shard, metadata={"format": "pt"})
    # Re-record its digest, as an export that chose another scale would have (else diff refuses the copy).
    manifest_path = qh.quant_manifest_path(copy)
    m = json.loads(manifest_path.read_text())
    m["integrity"]["tensors"][key]["sha256"] = hashlib.sha256(tensors[key].numpy().tobytes()).hexdigest()
    manifest_path.write_text(json.dumps(m))
    proc = qh.run(autoquant_bin, "diff", s["ct"], copy)
    line = next(l for l in proc.stdout.splitlines() if " vs " in l)
    assert "IDENTICAL" not in line and _max_dw(line) > 1e-3, line
    # The manifest says NVFP4 where the checkpoint holds W4A16: refused.
    bad = qh.copy_scheme(s["ct_w4a16"], tmp_path / "lying")
    manifest_path = qh.quant_manifest_path(bad)
    m = json.loads(manifest_path.read_text())
    for g in m["groups"].values():
        if g.get("chosen") == "W4A16_NVFP4":
            g["chosen"] = "NVFP4"
    manifest_path.write_text(json.dumps(m))
    proc = qh.run(autoquant_bin, "diff", s["ct"], bad)
    assert proc.returncode != 0
    assert "manifest says NVFP4 but" in proc.stdout and "stored as W4A16_NVFP4" in proc.stdout, proc.stdout

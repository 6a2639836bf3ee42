"""Helpers for the scheme/export tests (test_quantize_schemes.py, test_export_formats.py):
running `autoquant quantize`/`diff`, reading scheme directories byte for byte, the FP8 E4M3
reference quantization, and vLLM's ModelOpt exclusion rules restated in Python."""
import fnmatch
import json
import pathlib
import re
import shutil
import subprocess

import torch

E4M3_MAX = 448.0
# safetensors dtype names -> torch dtypes (what the schemes contain)
ST_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F8_E4M3": torch.float8_e4m3fn,
             "I64": torch.int64, "U8": torch.uint8}


# ----------------------------------------------------------------------------- running the CLI

def run(binary, *args, check=False) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, f"{args}: rc {proc.returncode}\n{proc.stderr[-4000:]}"
    return proc


def quantize(binary, model, calib, out, *extra, cache=None, check=True):
    """`autoquant quantize ... --json`; returns (proc, parsed JSON or None)."""
    args = ["quantize", "--model", model, "--calib", calib, "--out", out, "--device", "cpu", "--json", *extra]
    if cache is not None:
        args += ["--baseline-cache", cache]
    proc = run(binary, *args, check=check)
    summary = json.loads(proc.stdout) if proc.returncode == 0 else None
    return proc, summary


def has_subcommand(binary, name: str) -> bool:
    proc = run(binary, "--help")
    return any(line.strip().split(" ")[0] == name for line in proc.stdout.splitlines())


def diff(binary, *dirs):
    """`autoquant diff DIR... --json` -> (proc, parsed JSON or None)."""
    proc = run(binary, "diff", *dirs, "--json")
    try:
        parsed = json.loads(proc.stdout)
    except json.JSONDecodeError:
        parsed = None
    return proc, parsed


def copy_scheme(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- reading checkpoints

def _read_safetensors_raw(path: pathlib.Path) -> dict:
    """name -> (dtype string, shape tuple, raw bytes), straight from the file (no torch conversion)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = (info["dtype"], tuple(info["shape"]), body[a:b])
    return out


def read_checkpoint(d: pathlib.Path) -> dict:
    """All tensors of a checkpoint dir (single file or index + shards), raw. Asserts that the index
    names every tensor once, and in the shard that holds it."""
    d = pathlib.Path(d)
    index = d / "model.safetensors.index.json"
    if not index.exists():
        return _read_safetensors_raw(d / "model.safetensors")
    weight_map = json.loads(index.read_text())["weight_map"]
    out = {}
    for shard in sorted(set(weight_map.values())):
        for name, t in _read_safetensors_raw(d / shard).items():
            assert name not in out, f"{name} in two shards"
            assert weight_map.get(name) == shard, f"index says {name} is in {weight_map.get(name)}, found in {shard}"
            out[name] = t
    assert set(out) == set(weight_map), set(out) ^ set(weight_map)
    return out


def to_tensor(raw) -> torch.Tensor:
    dtype, shape, data = raw
    t = torch.frombuffer(bytearray(data), dtype=ST_DTYPES[dtype]) if data else torch.empty(0, dtype=ST_DTYPES[dtype])
    return t.reshape(shape)


def layer_sensitivity(scheme_dir: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(scheme_dir) / "layer-sensitivity"


def _one(d: pathlib.Path, pattern: str) -> pathlib.Path:
    found = sorted(d.glob(pattern))
    assert len(found) == 1, f"{d}: expected one {pattern}, found {found}"
    return found[0]


def quant_manifest_path(scheme_dir) -> pathlib.Path:
    return _one(layer_sensitivity(scheme_dir), "*_quant_manifest.json")


def quant_manifest(scheme_dir) -> dict:
    return json.loads(quant_manifest_path(scheme_dir).read_text())


def coverage_manifest(scheme_dir) -> dict:
    return json.loads(_one(layer_sensitivity(scheme_dir), "*_coverage_from_baseline.json").read_text())


def quantized_groups(manifest: dict) -> set:
    return {k for k, g in manifest["groups"].items() if g["chosen"] != "NONE"}


def checkpoint_module_name(module: str, base_keys) -> str:
    """The base checkpoint's name for a model module (legacy checkpoints store
    model.language_model.X as model.X and model.visual.X as visual.X)."""
    candidates = [module]
    if module.startswith("model.language_model."):
        candidates.append("model." + module[len("model.language_model."):])
    if module.startswith("model.visual."):
        candidates.append(module[len("model."):])
    for c in candidates:
        if c + ".weight" in base_keys:
            return c
    raise KeyError(f"{module}: none of {candidates} has a .weight in the base checkpoint")


def fp8_modules(tensors: dict) -> set:
    """Modules whose .weight is stored as F8_E4M3."""
    return {k[:-len(".weight")] for k, (dt, _, _) in tensors.items() if k.endswith(".weight") and dt == "F8_E4M3"}


def linear_modules(base_tensors: dict) -> set:
    """The base checkpoint's Linear modules: 2-D .weight, not embeddings, not the patch embed."""
    return {k[:-len(".weight")] for k, (_, shape, _) in base_tensors.items()
            if k.endswith(".weight") and len(shape) == 2 and "embed" not in k}


# ----------------------------------------------------------------------------- FP8 E4M3 reference

def fp8_reference(w: torch.Tensor, scale_dtype=torch.float32):
    """What the export must write for base weight w: scale = max|W| / 448 computed in float32 and
    stored in scale_dtype, q = clamp(W / stored scale, +-448) (float32) cast to float8_e4m3fn."""
    w = w.float()
    scale = (w.abs().max() / E4M3_MAX).to(scale_dtype)
    q = (w / scale.float()).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale


def e4m3_error_bound(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per element bound on |dequant(q) - w| for round-to-nearest E4M3 with a multiplier scale.
    E4M3: 3 mantissa bits, min normal exponent -6, so the spacing between neighbours is
    2^(e-3) at |x| in [2^e, 2^(e+1)) for e >= -6, and 2^-9 for subnormals (|x| < 2^-6).
    Rounding to nearest errs by at most half a spacing: |x| * 2^-4 for normals (relative, bounded
    by the spacing at the lower end of the binade) and 2^-10 absolute for subnormals; both scaled
    back by `scale`. A small float32 slack (1e-6 relative) covers the division w / scale."""
    x = (w.float() / scale).abs()
    normal = x >= 2.0 ** -6
    bound_x = torch.where(normal, x * 2.0 ** -4, torch.full_like(x, 2.0 ** -10))
    return bound_x * scale * (1 + 1e-6) + w.float().abs() * 1e-7


def fake_quant_fp8(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """ModelOpt's fake quantizer (core/quant/fp8.h FakeQuantFp8): s = 448 / amax in float32;
    y = e4m3(clamp(x * s, +-448)) * (1 / s); amax <= 2^-24 or not finite counts as 1."""
    amax = amax.float().reshape(())
    if not torch.isfinite(amax) or amax <= 2.0 ** -24:
        amax = torch.tensor(1.0)
    s = torch.tensor(E4M3_MAX, dtype=torch.float32) / amax
    y = (x.float() * s).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).float() * (1.0 / s)
    return y.to(x.dtype)


# ----------------------------------------------------------------------------- vLLM's ModelOpt rules

# vLLM Qwen2_5_VLForConditionalGeneration: packed_modules_mapping and hf_to_vllm_mapper
# (vllm/model_executor/models/qwen2_5_vl.py). The vision MLP also fuses gate/up into gate_up_proj.
VLLM_PACKED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
VLLM_PREFIX_MAP = [  # first match wins, as WeightsMapper.orig_to_new_prefix applies them
    ("model.language_model.", "language_model.model."),
    ("model.visual.", "visual."),
    ("lm_head.", "language_model.lm_head."),
    ("model.", "language_model.model."),
]


def vllm_map_name(name: str) -> str:
    for old, new in VLLM_PREFIX_MAP:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def vllm_apply_mapper(exclude: list) -> list:
    """ModelOptQuantConfigBase.apply_vllm_mapper: 'x*' (not 'x.*') -> 'x', 'x.*'; then rename."""
    out = []
    for e in exclude:
        if len(e) >= 2 and e[-1] == "*" and e[-2] != ".":
            out += [e[:-1], e[:-1] + ".*"]
        else:
            out.append(e)
    return [vllm_map_name(e) for e in out]


class VllmFusedShardMismatch(ValueError):
    pass


def vllm_is_layer_skipped(prefix: str, ignored: list) -> bool:
    """vllm quantization/utils/quant_utils.is_layer_skipped with the fused mapping."""
    proj = prefix.split(".")[-1]
    if proj in VLLM_PACKED:
        states = [(prefix[: -len(proj)] + shard) in ignored for shard in VLLM_PACKED[proj]]
        if any(states) and not all(states):
            raise VllmFusedShardMismatch(f"some but not all shards of {prefix} are excluded: {states}")
        return all(states)
    return prefix in ignored


def vllm_is_layer_excluded(prefix: str, exclude: list) -> bool:
    """ModelOptQuantConfigBase.is_layer_excluded (exclude already passed through the mapper)."""
    if not exclude:
        return False
    if vllm_is_layer_skipped(prefix, exclude):
        return True
    for e in exclude:  # legacy substring match, also with "language_model." stripped
        if e != prefix and (e in prefix or (prefix.startswith("language_model.")
                                            and e in prefix.removeprefix("language_model."))):
            return True
    return any(fnmatch.fnmatch(prefix, e) for e in exclude)


def vllm_ct_should_ignore(prefix: str, ignore: list) -> bool:
    """compressed_tensors/utils.should_ignore_layer (vLLM 0.26 and 0.33; `ignore` already passed through
    the mapper): a fused layer is ignored when its shards are, and its shards must agree."""
    def match(name):
        return any(name == t or (t.startswith("re:") and re.match(t[3:], name)) for t in ignore)
    proj = prefix.split(".")[-1]
    if proj in VLLM_PACKED and prefix not in ignore:
        states = [match(prefix[: -len(proj)] + shard) for shard in VLLM_PACKED[proj]]
        if any(states) and not all(states):
            raise VllmFusedShardMismatch(f"Found a different quantization schemes for {VLLM_PACKED[proj]} in {prefix}")
        return states[0]
    return match(prefix)


def vllm_linear_layers(checkpoint_modules) -> dict:
    """vLLM layer prefix -> list of the checkpoint modules (shards) it loads, for Qwen2.5-VL."""
    layers = {}
    for m in sorted(checkpoint_modules):
        vname = vllm_map_name(m + ".weight")[: -len(".weight")]  # the mapper renames weight names
        head, _, proj = vname.rpartition(".")
        fused = next((f for f, shards in VLLM_PACKED.items() if proj in shards), None)
        key = f"{head}.{fused}" if fused else vname
        layers.setdefault(key, []).append(m)
    return layers


# ----------------------------------------------------------------------------- transformers side

def hf_module_name(checkpoint_module: str) -> str:
    """transformers 5.x module name for a checkpoint module name (either key layout)."""
    if checkpoint_module.startswith(("model.language_model.", "model.visual.")) or checkpoint_module == "lm_head":
        return checkpoint_module
    if checkpoint_module.startswith("visual."):
        return "model." + checkpoint_module
    if checkpoint_module.startswith("model."):
        return "model.language_model." + checkpoint_module[len("model."):]
    return checkpoint_module


def to_v5_layout(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    """A copy of a legacy-named checkpoint dir with transformers-5 key names."""
    from safetensors.torch import save_file
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".json":
            shutil.copy(f, dst / f.name)

    def v5(k):
        if k.startswith("visual."):
            return "model." + k
        if k.startswith("model.") and not k.startswith(("model.visual.", "model.language_model.")):
            return "model.language_model." + k[len("model."):]
        return k

    save_file({v5(k): to_tensor(t).clone() for k, t in read_checkpoint(src).items()}, dst / "model.safetensors",
              metadata={"format": "pt"})
    return dst


def fake_quant_reference_model(base_dir, scheme_dir):
    """The base model in transformers (float32) with every FP8 module of the scheme replaced by
    ModelOpt-style fake quantization: weight = fp8 * weight_scale, input fake-quantized with
    amax = input_scale * 448 (quant_helpers.fake_quant_fp8). Returns (model, {hf module: ckpt module})."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32).eval()
    tensors = read_checkpoint(scheme_dir)
    modules = dict(model.named_modules())
    mapping = {}
    for name in sorted(fp8_modules(tensors)):
        lin = modules[hf_module_name(name)]
        w = to_tensor(tensors[name + ".weight"]).float() * to_tensor(tensors[name + ".weight_scale"]).float().reshape(())
        with torch.no_grad():
            lin.weight.copy_(w)
        amax = to_tensor(tensors[name + ".input_scale"]).float().reshape(()) * E4M3_MAX
        lin.register_forward_pre_hook(lambda mod, args, a=amax: (fake_quant_fp8(args[0], a), *args[1:]))
        mapping[hf_module_name(name)] = name
    return model, mapping

"""Our safetensors reader and writer against the Python `safetensors` package.

Direction 1: files written by `safetensors` / `huggingface_hub` are read by our
C++ reader (tests/tools/st_tool dump) and every tensor's bytes must match.
Direction 2: tensors written by our C++ writer (st_tool write) are loaded by
`safetensors` and must match bit for bit.
"""
import json
import subprocess

import pytest
import torch
from huggingface_hub import save_torch_state_dict
from safetensors import safe_open
from safetensors.torch import save_file

from aq_paths import binary

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


def raw(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def sample_tensors() -> dict:
    g = torch.Generator().manual_seed(1234)
    base = torch.randn(6, 5, generator=g)
    out = {}
    for name, dt in DTYPES.items():
        if dt.is_floating_point:
            t = (base * 37).clamp(-400, 400).to(dt)
        elif dt == torch.bool:
            t = base > 0
        elif dt == torch.uint8:
            t = torch.randint(0, 256, (6, 5), generator=g).to(dt)
        else:
            t = torch.randint(-100, 100, (6, 5), generator=g).to(dt)
        out[f"t.{name}"] = t
        out[f"scalar.{name}"] = t.reshape(-1)[3].clone()  # 0-d
        out[f"empty.{name}"] = torch.empty((0, 4), dtype=dt)
    out["odd.shape"] = torch.randn(3, 1, 7, generator=g)
    return out


def dump(path, out_dir):
    subprocess.run([binary("st_tool"), "dump", path, out_dir], check=True)
    return json.loads((out_dir / "manifest.json").read_text())


def assert_dump_matches(manifest, out_dir, tensors):
    assert sorted(e["name"] for e in manifest["tensors"]) == sorted(tensors)
    for e in manifest["tensors"]:
        t = tensors[e["name"]]
        assert DTYPES[e["dtype"]] == t.dtype, e["name"]
        assert e["shape"] == list(t.shape), e["name"]
        assert (out_dir / e["file"]).read_bytes() == raw(t), e["name"]


def test_reads_python_written_file_bit_exactly(tmp_path):
    tensors = sample_tensors()
    save_file(tensors, tmp_path / "py.safetensors", metadata={"format": "pt", "note": "from python"})
    manifest = dump(tmp_path / "py.safetensors", tmp_path / "dump")
    assert_dump_matches(manifest, tmp_path / "dump", tensors)
    assert manifest["metadata"] == {"format": "pt", "note": "from python"}


def test_reads_huggingface_sharded_checkpoint(tmp_path):
    g = torch.Generator().manual_seed(7)
    tensors = {f"model.layers.{i}.mlp.weight": torch.randn(64, 32, generator=g).to(torch.bfloat16)
               for i in range(6)}
    tensors["model.norm.weight"] = torch.ones(32)
    (tmp_path / "ckpt").mkdir()
    save_torch_state_dict(tensors, tmp_path / "ckpt", max_shard_size=10_000)
    index = json.loads((tmp_path / "ckpt" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # really sharded
    manifest = dump(tmp_path / "ckpt", tmp_path / "dump")
    assert_dump_matches(manifest, tmp_path / "dump", tensors)


def write_with_cpp(tensors, tmp_path, out, shard_bytes=None, metadata=None):
    src = tmp_path / "raw"
    src.mkdir(exist_ok=True)
    entries = []
    inverse = {v: k for k, v in DTYPES.items()}
    for i, (name, t) in enumerate(tensors.items()):
        (src / f"{i}.bin").write_bytes(raw(t))
        entries.append({"name": name, "dtype": inverse[t.dtype], "shape": list(t.shape), "file": f"{i}.bin"})
    (src / "manifest.json").write_text(json.dumps({"tensors": entries, "metadata": metadata or {}}))
    cmd = [binary("st_tool"), "write", src / "manifest.json", out]
    if shard_bytes:
        cmd += ["--shard-bytes", str(shard_bytes)]
    subprocess.run(cmd, check=True)


def test_python_reads_our_file_bit_exactly(tmp_path):
    tensors = sample_tensors()
    write_with_cpp(tensors, tmp_path, tmp_path / "cpp.safetensors", metadata={"format": "pt"})
    with safe_open(tmp_path / "cpp.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert sorted(f.keys()) == sorted(tensors)
        for name, t in tensors.items():
            got = f.get_tensor(name)
            assert got.dtype == t.dtype and got.shape == t.shape, name
            assert raw(got) == raw(t), name


def test_python_reads_our_sharded_checkpoint(tmp_path):
    g = torch.Generator().manual_seed(3)
    tensors = {f"w{i}": torch.randn(50, 20, generator=g).to(torch.float16) for i in range(7)}
    write_with_cpp(tensors, tmp_path, tmp_path / "ckpt", shard_bytes=5000)
    index = json.loads((tmp_path / "ckpt" / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) == 4 and files[0] == "model-00001-of-00004.safetensors"
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    for name, t in tensors.items():
        with safe_open(tmp_path / "ckpt" / index["weight_map"][name], framework="pt") as f:
            assert raw(f.get_tensor(name)) == raw(t), name


def test_inspect_json_lists_what_python_wrote(tmp_path):
    tensors = sample_tensors()
    save_file(tensors, tmp_path / "py.safetensors")
    out = subprocess.run([binary("autoquant"), "inspect", "--json", tmp_path / "py.safetensors"],
                         check=True, capture_output=True, text=True).stdout
    listing = json.loads(out)
    got = {t["name"]: t for t in listing["tensors"]}
    assert set(got) == set(tensors)
    inverse = {v: k for k, v in DTYPES.items()}
    for name, t in tensors.items():
        assert got[name]["dtype"] == inverse[t.dtype]
        assert got[name]["shape"] == list(t.shape)
        assert got[name]["bytes"] == t.numel() * t.element_size()
    assert listing["total_bytes"] == sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize("content,needle", [
    (b"\x05\x00", "truncated"),
    ((1000).to_bytes(8, "little") + b"{}", "beyond the end of the file"),
    ((9).to_bytes(8, "little") + b"not json!", "not valid JSON"),
])
def test_inspect_reports_malformed_files_clearly(tmp_path, content, needle):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    r = subprocess.run([binary("autoquant"), "inspect", bad], capture_output=True, text=True)
    assert r.returncode == 2
    assert needle in r.stderr and "bad.safetensors" in r.stderr

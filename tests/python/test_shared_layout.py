"""The shared-shard layout (`--layout shared`, the daemon's default): each layer group's BF16 and FP8
versions and the rest of the model are stored once as read-only content-addressed blobs under
<root>/.autoquant/blobs/sha256/ and hard-linked into every scheme directory.

One tiny random model, one calibration set and one baseline cache; schemes at coverage 0.1, 0.5 and
1.0, each exported standalone and shared (compressed-tensors), plus modelopt-format ones.

- test_shared_equals_standalone: read with the `safetensors` package through each directory's index,
  a shared scheme holds exactly the tensors (names, dtypes, shapes, bytes) of the standalone scheme
  of the same coverage, and the same config.json; so every check test_quantize_schemes.py makes of
  standalone schemes holds for shared ones.
- test_blobs_written_once: the first scheme writes every blob it needs; later ones write only the
  groups whose version they are the first to use; across the sweep each blob is written once
  (bytes written in total == bytes in the store) and every scheme file is a hard link of a store
  file (same inode, mode 0444).
- test_deleting_a_scheme_leaves_the_others: rm -rf of one scheme; the others still pass
  `autoquant diff` (digests re-hashed from disk) and the store still verifies.
- test_transformers_loads_shared_scheme: transformers (with compressed-tensors) loads a shared
  scheme and gives logits identical to the standalone one's.
- test_copy_fallback_across_filesystems: with the blob store on another filesystem (/dev/shm) the
  blobs are copied (blobs_copied > 0, link count 1) and the scheme verifies.
- test_damaged_blob_is_rewritten: a byte flipped in a stored blob makes the next export (a new
  process) store it again and publish a scheme that verifies; the scheme that linked the damaged
  file fails `autoquant diff` naming the tensor.
- test_gc_frees_only_what_no_scheme_links: `autoquant gc` after one of two schemes is deleted frees
  the blobs only it linked (its bytes, not the other's), keeps every blob the other links, and the
  other still passes `autoquant diff`; a second gc removes nothing.
- test_daemon_default_is_shared: autoquantd writes shared schemes unless the job asks for
  standalone (OUTPUT_LAYOUT_STANDALONE), and reports blobs_reused / blobs_written in the job result.
"""
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import pytest
from safetensors import safe_open

import quant_helpers as qh

COVERAGES = [0.1, 0.5, 1.0]
CALIB = ["--samples", "8", "--seq-len", "32", "--images-per-sample", "1", "--image-size", "56x56"]


def name(cov):
    return f"top{int(round(cov * 100))}"


@pytest.fixture(scope="module")
def base(autoquant_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    model, calib, cache = root / "model", root / "calib.safetensors", root / "cache"
    qh.run(autoquant_bin, "model", "init", "--preset", "tiny", "--out", model, "--seed", "0", check=True)
    qh.run(autoquant_bin, "calib", "synth", "--model", model, "--out", calib, *CALIB, "--seed", "1", check=True)
    return {"root": root, "model": model, "calib": calib, "cache": cache}


@pytest.fixture(scope="module")
def sweep(autoquant_bin, base):
    """layout -> coverage -> {"dir", "summary"}; the shared ones under <root>/shared (store in
    <root>/shared/.autoquant/blobs), the standalone ones under <root>/standalone."""
    out = {}
    for layout in ("standalone", "shared"):
        out[layout] = {}
        for cov in COVERAGES:
            d = base["root"] / layout / name(cov)
            _, summary = qh.quantize(autoquant_bin, base["model"], base["calib"], d, "--coverage", str(cov),
                                     "--layout", layout, cache=base["cache"])
            out[layout][cov] = {"dir": d, "summary": summary}
    return out


def read_via_index(d: pathlib.Path) -> dict:
    """name -> (dtype, shape, bytes) through model.safetensors.index.json, with the safetensors package."""
    weight_map = json.loads((d / "model.safetensors.index.json").read_text())["weight_map"]
    out = {}
    for shard in sorted(set(weight_map.values())):
        with safe_open(str(d / shard), framework="pt") as f:
            for k in f.keys():
                assert weight_map[k] == shard, (k, shard)
                t = f.get_tensor(k)
                out[k] = (str(t.dtype), tuple(t.shape), t.contiguous().view(-1).view(dtype=__import__("torch").uint8)
                          .numpy().tobytes() if t.numel() else b"")
    assert set(out) == set(weight_map)
    return out


def store_files(root: pathlib.Path) -> list:
    return sorted((root / ".autoquant" / "blobs" / "sha256").glob("*.safetensors"))


@pytest.mark.parametrize("cov", COVERAGES)
def test_shared_equals_standalone(sweep, cov):
    a, b = sweep["standalone"][cov]["dir"], sweep["shared"][cov]["dir"]
    assert sweep["shared"][cov]["summary"]["layout"] == "shared"
    assert sweep["standalone"][cov]["summary"]["layout"] == "standalone"
    ta, tb = read_via_index(a), read_via_index(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k] == tb[k], k
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
    # Only blob files and the usual side files: nothing another loader could pick up twice.
    shards = {p.name for p in b.glob("*.safetensors")}
    assert shards == set(json.loads((b / "model.safetensors.index.json").read_text())["weight_map"].values())


def test_blobs_written_once(sweep):
    shared = sweep["shared"]
    root = shared[COVERAGES[0]]["dir"].parent
    first = shared[COVERAGES[0]]["summary"]
    assert first["blobs_reused"] == 0 and first["blobs_written"] > 0 and first["blobs_copied"] == 0
    written = sum(shared[c]["summary"]["blobs_written"] for c in COVERAGES)
    files = store_files(root)
    assert written == len(files)
    assert sum(shared[c]["summary"]["export_bytes"] for c in COVERAGES) <= sum(p.stat().st_size for p in files)
    for c in COVERAGES[1:]:
        s = shared[c]["summary"]
        assert s["blobs_reused"] > 0, s  # the rest of the model and the groups both schemes keep in BF16 or FP8
        assert s["export_bytes"] < s["export_tensor_bytes"], s
    inodes = {p.stat().st_ino: p for p in files}
    for c in COVERAGES:
        for f in shared[c]["dir"].glob("*.safetensors"):
            st = f.stat()
            assert st.st_ino in inodes, f"{f} is not a link of a stored blob"
            assert stat.S_IMODE(st.st_mode) == 0o444, f
            assert f.name == "model-" + inodes[st.st_ino].stem + ".safetensors"


def test_deleting_a_scheme_leaves_the_others(autoquant_bin, base, sweep, tmp_path):
    # Work on hard-linked copies so the module's other tests keep their schemes.
    root = tmp_path / "models"
    shutil.copytree(sweep["shared"][COVERAGES[0]]["dir"].parent, root, copy_function=os.link)
    before = {p: p.stat().st_nlink for p in store_files(root)}
    shutil.rmtree(root / name(COVERAGES[0]))
    proc, parsed = qh.diff(autoquant_bin, *(root / name(c) for c in COVERAGES[1:]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for p, n in before.items():
        assert p.exists()
        assert p.stat().st_nlink <= n
    blob_tool = [str(autoquant_bin), "diff", str(root / name(COVERAGES[-1]))]
    assert subprocess.run(blob_tool, capture_output=True).returncode == 0


def test_transformers_loads_shared_scheme(base, sweep):
    pytest.importorskip("compressed_tensors")
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration
    ids = torch.tensor([[1, 5, 9, 17, 33, 2, 7, 11]])
    logits = {}
    for layout in ("standalone", "shared"):
        m = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(sweep[layout][0.5]["dir"]), dtype=torch.float32)
        with torch.no_grad():
            logits[layout] = m(input_ids=ids).logits
    assert torch.equal(logits["standalone"], logits["shared"])


def test_copy_fallback_across_filesystems(autoquant_bin, base, sweep, tmp_path):
    shm = pathlib.Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the test's temporary directory")
    store = shm / f"aq-blobs-{os.getpid()}"
    try:
        out = tmp_path / "top50"
        _, s = qh.quantize(autoquant_bin, base["model"], base["calib"], out, "--coverage", "0.5", "--layout", "shared",
                           "--blob-store", store, cache=base["cache"])
        assert s["blobs_copied"] > 0 and s["blobs_copied"] == s["blobs_reused"] + s["blobs_written"], s
        for f in out.glob("*.safetensors"):
            assert f.stat().st_nlink == 1, f
        proc, _ = qh.diff(autoquant_bin, out)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert read_via_index(out) == read_via_index(sweep["standalone"][0.5]["dir"])
    finally:
        shutil.rmtree(store, ignore_errors=True)


def test_damaged_blob_is_rewritten(autoquant_bin, base, tmp_path):
    root = tmp_path / "models"
    a = root / "a"
    _, s = qh.quantize(autoquant_bin, base["model"], base["calib"], a, "--coverage", "0.5", "--layout", "shared",
                       cache=base["cache"])
    # Flip a data byte of the largest stored blob (the rest of the model: embeddings and more).
    victim = max(store_files(root), key=lambda p: p.stat().st_size)
    os.chmod(victim, 0o644)
    with open(victim, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(8 + n + 16)
        c = f.read(1)
        f.seek(8 + n + 16)
        f.write(bytes([c[0] ^ 0x5A]))
    b = root / "b"
    _, s2 = qh.quantize(autoquant_bin, base["model"], base["calib"], b, "--coverage", "0.5", "--layout", "shared",
                        cache=base["cache"])
    assert s2["blobs_written"] >= 1, s2
    proc, _ = qh.diff(autoquant_bin, b)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc, _ = qh.diff(autoquant_bin, a)
    assert proc.returncode != 0
    assert "does not match its recorded SHA-256" in proc.stdout + proc.stderr


def test_gc_frees_only_what_no_scheme_links(autoquant_bin, base, tmp_path):
    root = tmp_path / "models"
    for cov in (0.1, 1.0):
        qh.quantize(autoquant_bin, base["model"], base["calib"], root / name(cov), "--coverage", str(cov),
                    "--layout", "shared", cache=base["cache"])
    keep = {f.stat().st_ino for f in (root / "top100").glob("*.safetensors")}
    only_top10 = [f for f in (root / "top10").glob("*.safetensors") if f.stat().st_ino not in keep]
    assert only_top10, "top10 and top100 should not share every blob"
    freed = sum(f.stat().st_size for f in only_top10)
    shutil.rmtree(root / "top10")
    proc = qh.run(autoquant_bin, "gc", "--models-root", root, "--min-age-seconds", "0", "--json", check=True)
    r = json.loads(proc.stdout)
    assert r["blobs_removed"] == len(only_top10) and r["bytes_freed"] == freed, r
    assert {p.stat().st_ino for p in store_files(root)} == keep
    proc, _ = qh.diff(autoquant_bin, root / "top100")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again = json.loads(qh.run(autoquant_bin, "gc", "--models-root", root, "--min-age-seconds", "0", "--json",
                              check=True).stdout)
    assert again["blobs_removed"] == 0 and again["refs_removed"] == 0, again
    missing = qh.run(autoquant_bin, "gc", "--models-root", tmp_path / "nothing-here")
    assert missing.returncode != 0 and "holds no shared-layout schemes" in missing.stderr


def test_daemon_default_is_shared(daemon):
    from daemon_helpers import stubs
    pb, _ = stubs()
    ids = {}
    for scheme, layout in (("d10", pb.OUTPUT_LAYOUT_UNSPECIFIED), ("d50", pb.OUTPUT_LAYOUT_UNSPECIFIED),
                           ("s50", pb.OUTPUT_LAYOUT_STANDALONE)):
        spec = pb.SchemeSpec(scheme=scheme, coverage=0.1 if scheme == "d10" else 0.5, layout=layout)
        ids[scheme] = daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec)).id
    jobs = {k: daemon.wait_job(v) for k, v in ids.items()}
    for k, j in jobs.items():
        assert j.state == pb.JOB_STATE_SUCCEEDED, (k, j.message)
    m = {k: dict(j.result.metrics) for k, j in jobs.items()}
    assert m["d10"]["blobs_written"] > 0 and m["d50"]["blobs_reused"] > 0, m
    assert "blobs_reused" not in m["s50"], m["s50"]
    assert m["s50"]["export_bytes"] == m["s50"]["export_tensor_bytes"]
    root = daemon.root
    assert store_files(root)
    assert read_via_index(root / "d50") == read_via_index(root / "s50")
    for f in (root / "s50").glob("*.safetensors"):
        assert f.stat().st_nlink == 1

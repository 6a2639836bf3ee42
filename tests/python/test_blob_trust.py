"""The shared layout's blob store under a models root another local user can write (issue 23), end to
end through autoquantd:

- test_a_planted_self_consistent_blob_and_its_ref_are_not_used: before the first sweep a co-tenant
  plants, for every FP8 piece the daemon will need, a blob that checks out against itself (its name
  hashes its header, its header holds its tensors' digests) with the weight scales x64, and a
  refs/<key> naming it, as earlier versions looked blobs up. The daemon finds blobs only through the
  records in its job store, so the scheme's weights equal those of a clean run, and none of its
  files is a planted blob.
- test_a_symlinked_blob_store_fails_the_job_and_writes_nothing_at_its_target: `.autoquant/blobs` as a
  symlink to a directory outside the root: the job fails saying to remove the link, nothing is
  written at the link's target and nothing is published.
- test_gc_while_the_daemon_exports_refuses_and_removes_nothing_it_needs: the daemon is paused
  (AUTOQUANT_CRASH_SIGNAL=SIGSTOP) mid-export of a scheme whose blobs an earlier, deleted scheme
  stored (link count 1, old enough for any --min-age-seconds 0); `autoquant gc` refuses, naming the
  daemon, and removes nothing; resumed, the export reuses every blob and the scheme verifies.

The co-tenant's keys: earlier versions published them as refs/<key>; this one keeps them in the job
store (blobs table). The tests read them from either, so that they run, and fail, against both."""
import hashlib
import json
import os
import pathlib
import shutil
import signal
import sqlite3
import struct
import time

import pytest

import quant_helpers as qh
from daemon_helpers import Daemon, stubs, wait_stopped

pb = stubs()[0]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One baseline cache for every daemon here: equal plans, and one baseline computation."""
    return tmp_path_factory.mktemp("baselines")


def blob_dir(root: pathlib.Path) -> pathlib.Path:
    return root / ".autoquant" / "blobs"


def read_header(path: pathlib.Path):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data, 8 + n


def tensor_digests(scheme: pathlib.Path) -> dict:
    """tensor name -> SHA-256 of its bytes as the scheme's files hold them (read through the index)."""
    weight_map = json.loads((scheme / "model.safetensors.index.json").read_text())["weight_map"]
    out = {}
    for shard in sorted(set(weight_map.values())):
        header, data, start = read_header(scheme / shard)
        for name, t in header.items():
            if name != "__metadata__":
                b, e = t["data_offsets"]
                out[name] = hashlib.sha256(data[start + b:start + e]).hexdigest()
    assert set(out) == set(weight_map)
    return out


def recorded_blobs(root: pathlib.Path) -> dict:
    """key -> blob id of what a run stored: refs/ (earlier versions) or the job store's records."""
    refs = blob_dir(root) / "refs"
    if refs.is_dir():
        return {p.name: p.read_text().strip() for p in refs.iterdir()}
    with sqlite3.connect(root / ".autoquant" / "jobs.db") as db:
        return dict(db.execute("SELECT key, id FROM blobs").fetchall())


def tampered(blob: pathlib.Path):
    """(file bytes, id) of a self-consistent copy of `blob` with every weight scale x64, or None when
    it holds no scale. Same tensors, same order and offsets; the digests in its header are updated."""
    header, data, start = read_header(blob)
    import torch
    body = bytearray(data[start:])
    changed = False
    for name, t in header.items():
        if name == "__metadata__" or not name.endswith("weight_scale"):
            continue
        b, e = t["data_offsets"]
        dtype = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}[t["dtype"]]
        scale = torch.frombuffer(bytearray(body[b:e]), dtype=dtype) * 64  # a power of two: exact
        body[b:e] = scale.view(torch.uint8).numpy().tobytes()
        header["__metadata__"]["sha256:" + name] = hashlib.sha256(bytes(body[b:e])).hexdigest()
        changed = True
    if not changed:
        return None
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    head = struct.pack("<Q", len(text)) + text
    return head + bytes(body), hashlib.sha256(head).hexdigest()


def submit(d: Daemon, scheme: str, coverage=0.5):
    return d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme=scheme, coverage=coverage)))


def run_scheme(base, calib, root, cache, scheme, *extra, env=None):
    d = Daemon(base, calib, root, "--baseline-cache", cache, *extra, env=env).start()
    try:
        job = d.wait_job(submit(d, scheme).id)
    finally:
        assert d.stop() == 0, d.stop_report()
    return job


def test_a_planted_self_consistent_blob_and_its_ref_are_not_used(tmp_path, daemon_inputs, autoquant_bin, cache):
    base, calib = daemon_inputs
    clean = tmp_path / "clean"
    job = run_scheme(base, calib, clean, cache, "s")
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.message
    want = tensor_digests(clean / "s")

    victim = tmp_path / "victim"
    sha = blob_dir(victim) / "sha256"
    sha.mkdir(parents=True, mode=0o755)
    for d in (victim, victim / ".autoquant"):
        d.chmod(0o755)  # the daemon refuses a root others can write (they can here only through its user)
    (blob_dir(victim) / "refs").mkdir(mode=0o755)
    planted = {}
    for key, blob_id in recorded_blobs(clean).items():
        bad = tampered(blob_dir(clean) / "sha256" / f"{blob_id}.safetensors")
        if bad is None:
            continue
        data, bad_id = bad
        path = sha / f"{bad_id}.safetensors"
        path.write_bytes(data)
        path.chmod(0o444)
        (blob_dir(victim) / "refs" / key).write_text(bad_id + "\n")
        planted[path.stat().st_ino] = path
    assert planted, "the clean run stored no FP8 piece to imitate"
    # Each planted blob checks out against itself, as the C++ side verifies a blob.
    for path in planted.values():
        header, data, start = read_header(path)
        assert hashlib.sha256(data[:start]).hexdigest() == path.stem

    job = run_scheme(base, calib, victim, cache, "s")
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.message
    got = tensor_digests(victim / "s")
    wrong = sorted(k for k in want if got.get(k) != want[k])
    assert not wrong, f"the scheme holds planted tensors: {wrong[:5]}"
    linked = [f.name for f in (victim / "s").glob("*.safetensors") if f.stat().st_ino in planted]
    assert not linked, f"planted blobs linked into the scheme: {linked}"
    proc, _ = qh.diff(autoquant_bin, victim / "s")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_symlinked_blob_store_fails_the_job_and_writes_nothing_at_its_target(tmp_path, daemon_inputs, cache):
    base, calib = daemon_inputs
    root = tmp_path / "models"
    (root / ".autoquant").mkdir(parents=True, mode=0o755)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / ".autoquant" / "blobs").symlink_to(outside, target_is_directory=True)
    job = run_scheme(base, calib, root, cache, "s")
    assert job.state == pb.JOB_STATE_FAILED, job
    assert f"{root / '.autoquant' / 'blobs'} is a symbolic link" in job.message, job.message
    assert "Remove the link" in job.message, job.message
    assert list(outside.rglob("*")) == [], "blobs were written through the link"
    assert not os.path.lexists(root / "s"), "a scheme was published"


def test_gc_while_the_daemon_exports_refuses_and_removes_nothing_it_needs(tmp_path, daemon_inputs, autoquant_bin,
                                                                           cache):
    base, calib = daemon_inputs
    root = tmp_path / "models"
    job = run_scheme(base, calib, root, cache, "a")
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.message
    # Its scheme deleted, every blob it stored is linked by nothing (link count 1).
    shutil.rmtree(root / "a")
    sha = blob_dir(root) / "sha256"
    stored = {p.name: p.stat().st_ino for p in sha.glob("*.safetensors")}
    assert stored and all(p.stat().st_nlink == 1 for p in sha.glob("*.safetensors"))

    d = Daemon(base, calib, root, "--baseline-cache", cache,
               env={"AUTOQUANT_CRASH_AT": "export:1", "AUTOQUANT_CRASH_SIGNAL": "SIGSTOP"}).start()
    try:
        job = submit(d, "b")
        wait_stopped(d)  # mid-export: some blobs linked into the staging directory, the rest not yet
        proc = qh.run(autoquant_bin, "gc", "--models-root", root, "--min-age-seconds", "0", "--json")
        assert proc.returncode != 0, f"gc ran under a running export: {proc.stdout}"
        assert "in use by a running export" in proc.stderr, proc.stderr
        assert f"pid {d.proc.pid} (autoquantd)" in proc.stderr, proc.stderr
        assert {p.name: p.stat().st_ino for p in sha.glob("*.safetensors")} == stored, "gc removed blobs"
        os.kill(d.proc.pid, signal.SIGCONT)
        done = d.wait_job(job.id)
        assert done.state == pb.JOB_STATE_SUCCEEDED, done.message
        m = dict(done.result.metrics)
        assert m["blobs_written"] == 0 and m["blobs_reused"] == len(stored), m
        # Idle again: gc runs (and the new scheme links every blob, so nothing goes).
        proc = qh.run(autoquant_bin, "gc", "--models-root", root, "--min-age-seconds", "0", "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["blobs_removed"] == 0, proc.stdout
    finally:
        if d.proc.poll() is None:
            os.kill(d.proc.pid, signal.SIGCONT)
        assert d.stop() == 0, d.stop_report()
    proc, _ = qh.diff(autoquant_bin, root / "b")
    assert proc.returncode == 0, proc.stdout + proc.stderr

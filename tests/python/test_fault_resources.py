"""autoquantd when resources run out or its inputs are damaged:
  - a models root on a small filesystem (a size-limited tmpfs) that fills during export: that job
    FAILED with a message saying the disk is full, nothing partial left, the next job runs;
  - an out-of-memory inside a job (injected into torch's CPU allocator at a named point,
    AUTOQUANT_OOM_AT, as a full GPU would throw it) in each phase: FAILED with RESOURCE_EXHAUSTED, the
    daemon goes on serving and runs the next job;
  - a corrupted base checkpoint, calibration file or job database at start: a clear error, a
    non-zero exit, and the damaged file left exactly as it was."""
import hashlib
import os
import pathlib
import subprocess
import uuid

import pytest

from daemon_helpers import Daemon, small_tmpfs, staging_leftovers, stubs
from quant_helpers import diff

pb, _ = stubs()
SUCCEEDED, FAILED = pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED


def submit(d, scheme, coverage, **kw):
    return d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme=scheme, coverage=coverage, **kw)))


def schemes(root):
    return sorted(p.name for p in pathlib.Path(root).iterdir() if not p.name.startswith("."))


@pytest.fixture
def small_fs(tmp_path):
    """A 6 MiB tmpfs mounted for the test, unmounted after."""
    with small_tmpfs(tmp_path / "small-fs", "6m") as mnt:
        yield mnt


@pytest.mark.parametrize("layout", ["standalone", "shared"])
def test_full_disk_during_export_fails_that_job_cleanly_and_the_next_runs(tmp_path, small_fs, daemon_inputs,
                                                                          autoquant_bin, layout):
    base, calib = daemon_inputs
    root = small_fs / "models"
    # The job store and baseline cache live elsewhere: only the export meets the full disk.
    d = Daemon(base, calib, root, "--store", f"sqlite:{tmp_path / 'jobs.db'}", "--baseline-cache",
               tmp_path / "baselines", "--layout", layout).start()
    try:
        first = d.wait_job(submit(d, "disk-a", 0.5).id)
        assert first.state == SUCCEEDED, first.message
        size = sum(f.stat().st_size for f in (root / "disk-a").rglob("*") if f.is_file())
        st = os.statvfs(small_fs)
        free = st.f_bavail * st.f_frsize
        assert free > size, "the test's filesystem is too small for even one scheme"
        filler = small_fs / "filler"
        # Standalone: leave about half a scheme of room. Shared: the next scheme (another coverage) needs
        # only the blobs of the groups that change version, so leave almost none.
        with open(filler, "wb") as f:
            f.write(b"\0" * (free - (size // 2 if layout == "standalone" else 4096)))

        full = d.wait_job(submit(d, "disk-b", 0.5 if layout == "standalone" else 0.1).id)
        assert full.state == FAILED
        assert "RESOURCE_EXHAUSTED" in full.message and "disk is full" in full.message, full.message
        assert schemes(root) == ["disk-a"], "a partial scheme was left on the full disk"
        assert staging_leftovers(root) == []
        blobs = root / ".autoquant" / "blobs"
        assert [p.name for p in blobs.rglob("*") if ".tmp-" in p.name] == [], "a half-written blob was left"

        filler.unlink()
        again = d.wait_job(submit(d, "disk-c", 0.5).id)
        assert again.state == SUCCEEDED, again.message
        for name in ("disk-a", "disk-c"):
            proc, _ = diff(autoquant_bin, root / name)
            assert proc.returncode == 0, proc.stderr
    finally:
        assert d.stop() == 0, d.stop_report()


@pytest.mark.parametrize("point", ["calibrate:2", "score:2", "export:1", "evaluate:1"])
def test_out_of_memory_in_a_job_fails_it_with_resource_exhausted_and_the_daemon_goes_on(tmp_path, daemon_inputs,
                                                                                        autoquant_bin, point):
    base, calib = daemon_inputs
    root = tmp_path / "models"
    eval_set = tmp_path / "eval.safetensors"
    subprocess.run([str(autoquant_bin), "calib", "synth", "--model", str(base), "--out", str(eval_set), "--samples",
                    "2", "--seq-len", "64", "--images-per-sample", "0", "--seed", "31"], check=True, capture_output=True)
    d = Daemon(base, calib, root, "--eval-set", eval_set, "--eval-generate-tokens", 2, "--eval-generate-prompts", 1,
               env={"AUTOQUANT_OOM_AT": point}).start()
    try:
        hit = d.wait_job(submit(d, "oom-a", 0.5, evaluate=True).id)
        assert hit.state == FAILED, f"{point}: {hit.message}"
        assert hit.message.startswith("RESOURCE_EXHAUSTED"), hit.message
        assert "injected out of memory" in hit.message, hit.message
        if point.startswith("evaluate"):  # the scheme was published and verified before its evaluation ran
            assert "was written to" in hit.message and schemes(root) == ["oom-a"]
        else:
            assert schemes(root) == []
        assert staging_leftovers(root) == []
        nxt = d.wait_job(submit(d, "oom-b", 0.75, evaluate=True).id)
        assert nxt.state == SUCCEEDED, nxt.message
        proc, _ = diff(autoquant_bin, root / "oom-b")
        assert proc.returncode == 0, proc.stderr
    finally:
        assert d.stop() == 0, d.stop_report()


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def start_fails(*args):
    proc = subprocess.run(Daemon(*args).args, capture_output=True, text=True, timeout=120)
    return proc


def flip_middle(path, n=64, align=1):
    data = bytearray(pathlib.Path(path).read_bytes())
    mid = len(data) // 2 // align * align
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    pathlib.Path(path).write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "garbage-header"])
def test_corrupted_base_checkpoint_stops_the_start_with_a_clear_error(tmp_path, daemon_inputs, damage):
    base, calib = daemon_inputs
    bad = tmp_path / "base"
    subprocess.run(["cp", "-r", str(base), str(bad)], check=True)
    shard = next(bad.glob("*.safetensors"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\xff" * 8 + data[8:])
    before = sha256(shard)
    proc = start_fails(bad, calib, tmp_path / "models")
    assert proc.returncode in (1, 2), proc.stderr  # 1: failed to start; 2: an input its flag names is invalid
    assert "loading the model" in proc.stderr and shard.name in proc.stderr, proc.stderr
    assert proc.stdout.strip().isdigit()  # it had bound its port; nothing else on stdout
    assert sha256(shard) == before


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty"])
def test_corrupted_calibration_file_stops_the_start_with_a_clear_error(tmp_path, daemon_inputs, damage):
    base, calib = daemon_inputs
    bad = tmp_path / "calib.safetensors"
    data = pathlib.Path(calib).read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 3])
    elif damage == "empty":
        bad.write_bytes(b"")
    else:  # the header's JSON damaged: its first bytes after the length prefix
        bad.write_bytes(data[:8] + b"\x00" * 16 + data[24:])
    before = sha256(bad)
    proc = start_fails(base, bad, tmp_path / "models")
    assert proc.returncode in (1, 2), proc.stderr  # 1: failed to start; 2: an input its flag names is invalid
    assert "loading the model" in proc.stderr and "calib.safetensors" in proc.stderr, proc.stderr
    assert sha256(bad) == before


@pytest.mark.parametrize("damage", ["garbage", "flipped-page"])
def test_corrupted_job_database_stops_the_start_and_is_not_overwritten(tmp_path, daemon_inputs, damage):
    base, calib = daemon_inputs
    root = tmp_path / "models"
    db = tmp_path / "jobs.db"
    if damage == "garbage":
        db.write_bytes(uuid.uuid4().bytes * 4096)
    else:  # a real store with jobs in it, damaged in the middle of its pages
        d = Daemon(base, calib, root, "--store", f"sqlite:{db}").start()
        try:
            for i in range(30):
                submit(d, f"db-{i}", 0.5)
        finally:
            assert d.stop() == 0, d.stop_report()  # a clean close folds the WAL into the file
        assert not pathlib.Path(f"{db}-wal").exists()
        # At a page's start (its b-tree header and cell pointers): bytes in a page's unused space are
        # damage no check can see, and where the middle falls depends on how big the rows are.
        flip_middle(db, 512, align=4096)
    before = sha256(db)
    proc = start_fails(base, calib, root, "--store", f"sqlite:{db}")
    assert proc.returncode in (1, 2), proc.stderr  # 1: failed to start; 2: an input its flag names is invalid
    assert "job store" in proc.stderr and ("not a readable SQLite database" in proc.stderr
                                            or "integrity check" in proc.stderr), proc.stderr
    assert "move it aside" in proc.stderr
    assert sha256(db) == before

"""The job store's failures are loud and strand nothing: a disk that fills under a running job
(a real, small tmpfs) makes health NOT_SERVING, submits RESOURCE_EXHAUSTED "the disk holding ... is
full", counts autoquant_store_errors_total, and once space returns the job finishes and the queue goes
on without a restart. An empty jobs.db is refused, not taken for a new store. After a restart with
another --model, the jobs submitted against the old one fail with what to do instead of running."""
import errno
import pathlib
import subprocess
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2

from daemon_helpers import Daemon, small_tmpfs, stubs

pb, _ = stubs()
SUCCEEDED, FAILED, QUEUED, RUNNING = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_QUEUED,
                                      pb.JOB_STATE_RUNNING)
NOT_SERVING, SERVING = health_pb2.HealthCheckResponse.NOT_SERVING, health_pb2.HealthCheckResponse.SERVING


def submit(d, scheme, coverage=0.5):
    return d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme=scheme, coverage=coverage)))


def wait_for(what, condition, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def metric(d, name) -> float:
    info = d.call("GetServerInfo", pb.GetServerInfoRequest())
    text = urllib.request.urlopen(f"http://{info.metrics_address}/metrics", timeout=10).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name))


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs of its own (test_fault_resources.py's full-disk test uses one too)."""
    with small_tmpfs(tmp_path / "small-disk", "8m") as mnt:
        yield mnt


def fill(path: pathlib.Path):
    """Writes `path` until its filesystem is full (down to the last 4 KiB)."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 4096):
            while True:
                try:
                    f.write(b"\0" * chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break


def test_full_disk_is_loud_and_the_job_finishes_once_space_returns(tmp_path, daemon_inputs, slow_calib, small_disk):
    base, _ = daemon_inputs
    store = small_disk / "jobs.db"
    d = Daemon(base, slow_calib, tmp_path / "models", "--store", f"sqlite:{store}").start()
    try:
        job = submit(d, "full-a")
        d.wait_job(job.id, states={RUNNING})
        filler = small_disk / "filler"
        fill(filler)
        # The job's progress and end cannot be stored: health says so, and the job stays RUNNING (not lost).
        wait_for("health NOT_SERVING", lambda: d.health() == NOT_SERVING)
        with pytest.raises(grpc.RpcError) as refused:
            submit(d, "full-b")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
        assert f"the disk holding the job store {store} is full" in refused.value.details(), refused.value.details()
        assert metric(d, "autoquant_store_errors_total") > 0
        assert "job store:" in d.log() and "failed" in d.log(), d.log()
        assert d.call("GetStatus", pb.GetStatusRequest(job_id=job.id)).state == RUNNING

        filler.unlink()  # space returns: nobody restarts anything
        done = d.wait_job(job.id, timeout=300)
        assert done.state == SUCCEEDED, done.message
        wait_for("health SERVING", lambda: d.health() == SERVING)
        after = submit(d, "full-b")
        assert d.wait_job(after.id, timeout=300).state == SUCCEEDED
    finally:
        assert d.stop() == 0, d.stop_report()


def test_empty_job_store_file_is_refused_with_what_to_do(tmp_path, daemon_inputs):
    base, calib = daemon_inputs
    root = tmp_path / "models"
    store = root / ".autoquant" / "jobs.db"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"")
    d = Daemon(base, calib, root)
    r = subprocess.run(d.args, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stdout == "", r.stdout + r.stderr
    assert f"job store {store} is an empty file" in r.stderr and "move it aside" in r.stderr, r.stderr
    assert store.read_bytes() == b""  # left as it was


def test_restart_with_another_model_fails_its_queued_jobs_with_what_to_do(tmp_path, daemon_inputs, slow_calib,
                                                                          autoquant_bin):
    base, _ = daemon_inputs
    other = tmp_path / "other-base"
    subprocess.run([str(autoquant_bin), "model", "init", "--preset", "tiny", "--out", str(other), "--seed", "7"],
                   check=True, capture_output=True)
    root = tmp_path / "models"
    d = Daemon(base, slow_calib, root).start()
    try:
        old_fp = d.call("GetServerInfo", pb.GetServerInfoRequest()).model_fingerprint
        jobs = [submit(d, "m-a"), submit(d, "m-b")]
        d.wait_job(jobs[0].id, states={RUNNING})
    finally:
        assert d.stop() == 0, d.stop_report()  # drains: the running job goes back to the queue

    d2 = Daemon(other, slow_calib, root).start()
    try:
        new_fp = d2.call("GetServerInfo", pb.GetServerInfoRequest()).model_fingerprint
        assert new_fp != old_fp
        for j in jobs:
            done = d2.wait_job(j.id, timeout=300)
            assert done.state == FAILED, (done.state, done.message)
            assert f"submitted against model {old_fp[:12]}" in done.message, done.message
            assert f"this daemon serves model {new_fp[:12]}" in done.message and "resubmit" in done.message
        assert not (root / "m-a").exists() and not (root / "m-b").exists()  # never run on the other model
        fresh = submit(d2, "m-c")
        assert d2.wait_job(fresh.id, timeout=300).state == SUCCEEDED
    finally:
        assert d2.stop() == 0, d2.stop_report()

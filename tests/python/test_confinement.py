"""Confinement under a models root that another local user can write (issue 23): the daemon writes
only through directories it holds open, publishes only the directory it wrote, reads schemes without
following symlinks or opening FIFOs, refuses a models root others can write unless told
--insecure-models-root, and never creates anything inside its inputs.

The swap tests pause the daemon with a crash point (AUTOQUANT_CRASH_SIGNAL=SIGSTOP, crash_point.h)
and swap the staging directory for a symlink while it is stopped, as an attacker who wins the race
would, then let it go on."""
import hashlib
import os
import pathlib
import shutil
import signal
import subprocess
import time

import grpc
import pytest

from daemon_helpers import BUILD_DIR, TEST_DEVICE, Daemon, stubs, wait_stopped

pb = stubs()[0]


def tree(d: pathlib.Path):
    """Every entry below `d` with what it holds: a swap that wrote through a link changes it."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_file():
            out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[rel] = ("dir",)
    return out


@pytest.mark.parametrize("point", ["export:1", "publish"])
def test_a_staging_directory_swapped_for_a_symlink_is_neither_written_through_nor_published(
        tmp_path, daemon_inputs, point):
    """Paused mid-export (export:1) or just before the rename (publish), the staging directory is
    renamed away and a symlink that leads to the daemon's own --model directory put in its place: nothing is
    written there, no scheme (let alone a symlink) is published, and the job fails saying why."""
    base, calib = daemon_inputs
    model = tmp_path / "base"
    shutil.copytree(base, model)  # the victim: a copy, so a regression cannot damage the shared inputs
    before = tree(model)
    root = tmp_path / "models"
    d = Daemon(model, calib, root, env={"AUTOQUANT_CRASH_AT": point, "AUTOQUANT_CRASH_SIGNAL": "SIGSTOP"}).start()
    try:
        job = d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme="swapped", coverage=0.5)))
        wait_stopped(d)
        staging = [p for p in root.iterdir() if p.name.startswith(".swapped.tmp-") and ".owner-" not in p.name]
        assert len(staging) == 1, sorted(p.name for p in root.iterdir())
        staging[0].rename(root / "moved-away")
        # Whatever path below the staging directory the daemon writes by, it would land in --model.
        trap = tmp_path / "trap"
        trap.mkdir()
        (trap / "swapped").symlink_to(model, target_is_directory=True)
        staging[0].symlink_to(trap, target_is_directory=True)
        os.kill(d.proc.pid, signal.SIGCONT)
        done = d.wait_job(job.id)
        assert tree(model) == before, "the daemon wrote into its --model directory through the planted link"
        assert done.state == pb.JOB_STATE_FAILED, done
        assert "moved or replaced" in done.message, done.message
        assert not os.path.lexists(root / "swapped"), "something was published"
        assert staging[0].is_symlink()  # the attacker's link is not the daemon's to remove
    finally:
        if d.proc.poll() is None:
            os.kill(d.proc.pid, signal.SIGCONT)
        assert d.stop() == 0, d.stop_report()


def test_reports_read_no_fifo_and_follow_no_symlink_below_a_scheme(tmp_path, daemon_inputs):
    """A FIFO planted as evaluation.json must not block GetReport; a symlinked evaluation.json or
    layer-sensitivity/ is refused, not read; GetReport by job id gets the same rule for the scheme
    directory itself."""
    base, calib = daemon_inputs
    d = Daemon(base, calib, tmp_path / "models").start()
    try:
        sens = d.root / "planted" / "layer-sensitivity"
        sens.mkdir(parents=True)
        os.mkfifo(sens / "evaluation.json")
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            d.call("GetReport", pb.GetReportRequest(schemes=["planted"]), timeout=30)
        assert time.monotonic() - started < 20
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
        assert "not a regular file" in e.value.details()

        secret = tmp_path / "secret.json"
        secret.write_text('{"format": "SECRET-CONTENT"}')
        (sens / "evaluation.json").unlink()
        (sens / "evaluation.json").symlink_to(secret)
        with pytest.raises(grpc.RpcError) as e:
            d.call("GetReport", pb.GetReportRequest(schemes=["planted"]), timeout=30)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
        assert "symbolic link" in e.value.details() and "SECRET" not in e.value.details()

        outside = tmp_path / "outside"
        outside.mkdir()
        shutil.copy(secret, outside / "evaluation.json")
        shutil.rmtree(sens)
        sens.symlink_to(outside, target_is_directory=True)
        with pytest.raises(grpc.RpcError) as e:
            d.call("GetReport", pb.GetReportRequest(schemes=["planted"]), timeout=30)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
        assert "SECRET" not in e.value.details()

        # By job id: the job's scheme directory swapped for a link after it succeeded.
        job = d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme="done", coverage=0.5)))
        assert d.wait_job(job.id).state == pb.JOB_STATE_SUCCEEDED
        (d.root / "done").rename(d.root / "done-real")
        (outside / "layer-sensitivity").mkdir()
        shutil.copy(secret, outside / "layer-sensitivity" / "evaluation.json")
        (d.root / "done").symlink_to(outside, target_is_directory=True)
        with pytest.raises(grpc.RpcError) as e:
            d.call("GetReport", pb.GetReportRequest(job_ids=[job.id]), timeout=30)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
        assert "symbolic link" in e.value.details() and "SECRET" not in e.value.details()
    finally:
        assert d.stop() == 0, d.stop_report()


def daemon_args(model, calib, root, *extra):
    return [str(BUILD_DIR / "bin" / "autoquantd"), "--model", str(model), "--calib", str(calib), "--models-root",
            str(root), "--listen", "127.0.0.1:0", "--device", TEST_DEVICE, *map(str, extra)]


def test_a_models_root_others_can_write_is_refused_unless_insecure(tmp_path, daemon_inputs):
    base, calib = daemon_inputs
    root = tmp_path / "models"
    root.mkdir()
    root.chmod(0o777)
    proc = subprocess.run(daemon_args(base, calib, root), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "writable by group or others" in proc.stderr and "--insecure-models-root" in proc.stderr, proc.stderr
    assert list(root.iterdir()) == []  # refused before anything was created in it
    root.chmod(0o755)
    (root / ".autoquant").mkdir()
    (root / ".autoquant").chmod(0o775)
    proc = subprocess.run(daemon_args(base, calib, root), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and str(root / ".autoquant") in proc.stderr, proc.stderr

    if os.geteuid() == 0:  # only root can give the directory away
        (root / ".autoquant").chmod(0o755)
        os.chown(root, 65534, 65534)
        proc = subprocess.run(daemon_args(base, calib, root), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and "owned by another user" in proc.stderr, proc.stderr
        os.chown(root, 0, 0)

    root.chmod(0o777)
    d = Daemon(base, calib, root, "--insecure-models-root").start()
    try:
        assert "--insecure-models-root" in d.log()  # said, not silent
    finally:
        assert d.stop() == 0, d.stop_report()


def test_a_models_root_in_the_base_model_is_refused_before_anything_is_created(tmp_path, daemon_inputs):
    base, calib = daemon_inputs
    model = tmp_path / "base"
    shutil.copytree(base, model)
    before = tree(model)
    for root in (model, model / "models"):
        proc = subprocess.run(daemon_args(model, calib, root), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "--models-root" in proc.stderr and "the base model directory" in proc.stderr, proc.stderr
        assert tree(model) == before, f"{root}: something was created in the base model"


def test_the_evaluation_set_is_a_protected_input(tmp_path, daemon_inputs, autoquant_bin):
    """An overwrite of a scheme directory of ours that holds --eval-set is refused like one holding
    --model: the evaluation set would go with the old scheme."""
    base, calib = daemon_inputs
    root = tmp_path / "models"
    d = Daemon(base, calib, root).start()
    try:
        job = d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme="holder", coverage=0.5)))
        assert d.wait_job(job.id).state == pb.JOB_STATE_SUCCEEDED
    finally:
        assert d.stop() == 0, d.stop_report()
    eval_set = root / "holder" / "eval.safetensors"
    subprocess.run([str(autoquant_bin), "calib", "synth", "--model", str(base), "--out", str(eval_set), "--samples",
                    "2", "--seq-len", "64", "--images-per-sample", "1", "--image-size", "56x56", "--seed", "5"],
                   check=True, capture_output=True)
    d = Daemon(base, calib, root, "--eval-set", eval_set).start()
    try:
        with pytest.raises(grpc.RpcError) as e:
            d.call("SubmitScheme", pb.SubmitSchemeRequest(
                spec=pb.SchemeSpec(scheme="holder", coverage=0.3, overwrite=True)))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert "the evaluation set" in e.value.details()
        assert eval_set.exists()
    finally:
        assert d.stop() == 0, d.stop_report()


def test_evaluation_opens_no_fifo_and_writes_through_no_symlink(tmp_path, daemon_inputs, autoquant_bin):
    """A FIFO planted as a weight file must not block EvaluateScheme (it is checked on the request's
    thread); a scheme whose layer-sensitivity/ is a link out of the root is refused, so evaluation.json
    is never written through it."""
    base, calib = daemon_inputs
    eval_set = tmp_path / "eval.safetensors"
    subprocess.run([str(autoquant_bin), "calib", "synth", "--model", str(base), "--out", str(eval_set), "--samples",
                    "2", "--seq-len", "64", "--images-per-sample", "1", "--image-size", "56x56", "--seed", "5"],
                   check=True, capture_output=True)
    d = Daemon(base, calib, tmp_path / "models", "--eval-set", eval_set, "--layout", "standalone").start()
    try:
        for scheme in ("fifo", "linked"):
            job = d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme=scheme, coverage=0.5)))
            assert d.wait_job(job.id).state == pb.JOB_STATE_SUCCEEDED
        shard = sorted((d.root / "fifo").glob("*.safetensors"))[0]
        shard.unlink()
        os.mkfifo(shard)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            d.call("EvaluateScheme", pb.EvaluateSchemeRequest(scheme="fifo"), timeout=30)
        assert time.monotonic() - started < 20
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
        assert "not a regular file" in e.value.details()

        outside = tmp_path / "outside"
        shutil.move(d.root / "linked" / "layer-sensitivity", outside)
        (d.root / "linked" / "layer-sensitivity").symlink_to(outside, target_is_directory=True)
        with pytest.raises(grpc.RpcError) as e:
            d.call("EvaluateScheme", pb.EvaluateSchemeRequest(scheme="linked"), timeout=30)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
        assert "symbolic link" in e.value.details()
        assert not (outside / "evaluation.json").exists()
        assert d.call("GetServerInfo", pb.GetServerInfoRequest(), timeout=10).serving
    finally:
        assert d.stop() == 0, d.stop_report()

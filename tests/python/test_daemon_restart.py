"""autoquantd survives being stopped: kill -9 while a job runs and others wait
(nothing lost, nothing partial published, the cut-off job re-queued once and then
completed, the schemes really differ), kill -9 in the middle of an export, a job
cut off twice is failed with a message, and SIGTERM drains and exits 0."""
import pathlib
import time

import pytest

from daemon_helpers import Daemon, staging_leftovers, stubs
from quant_helpers import diff

pb, _ = stubs()
SUCCEEDED, FAILED, QUEUED, RUNNING = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_QUEUED,
                                      pb.JOB_STATE_RUNNING)


def submit(d, scheme, coverage, **kw):
    return d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme=scheme, coverage=coverage, **kw)))


def scheme_dirs(root: pathlib.Path, prefix: str):
    return sorted(p.name for p in root.iterdir() if p.name.startswith(prefix))


def leftovers_of(root, pid):
    """Staging directories and temporary files whose names say `pid` made them. A restarted daemon
    may already be exporting the re-queued job into a staging directory of its own."""
    return [n for n in staging_leftovers(root) if f".tmp-{pid}-" in n]


def logs(d, job_id):
    return [l.message for l in d.call("StreamLogs", pb.StreamLogsRequest(job_id=job_id))]


def test_kill9_while_running_loses_no_job_and_publishes_nothing_partial(tmp_path, daemon_inputs, slow_calib,
                                                                        autoquant_bin):
    base, _ = daemon_inputs
    root = tmp_path / "models"
    d = Daemon(base, slow_calib, root).start()
    try:
        jobs = [submit(d, "k-a", 0.3), submit(d, "k-b", 0.6), submit(d, "k-c", 1.0)]
        sweep = d.call("SubmitSweep", pb.SubmitSweepRequest(points=[pb.SchemeSpec(scheme=f"k-s{c}", coverage=c / 100)
                                                                    for c in (40, 80)]))
        jobs += list(sweep.jobs)
        d.wait_job(jobs[0].id, states={RUNNING})
        time.sleep(0.3)  # into the baseline, which takes seconds with this calibration set
        killed = d.proc.pid
        d.kill9()
    finally:
        if d.proc.poll() is None:
            d.kill9()
    assert scheme_dirs(root, "k-") == []  # the cut-off job published nothing; the others never started

    d2 = Daemon(base, slow_calib, root).start()
    try:
        assert leftovers_of(root, killed) == []  # removed before serving
        listed = {j.id for j in d2.call("ListJobs", pb.ListJobsRequest(page_size=1000)).jobs}
        assert {j.id for j in jobs} <= listed
        done = [d2.wait_job(j.id, timeout=600) for j in jobs]
        assert [j.state for j in done] == [SUCCEEDED] * 5, [j.message for j in done]
        assert [j.attempts for j in done] == [2, 1, 1, 1, 1]
        first_logs = logs(d2, jobs[0].id)
        assert any("re-queued" in m for m in first_logs), first_logs
        dirs = [pathlib.Path(j.result.output_dir) for j in done]
        proc, report = diff(autoquant_bin, *dirs)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert len(report["pairs"]) == 10 and all(not p["identical"] for p in report["pairs"])
        assert staging_leftovers(root) == []
    finally:
        assert d2.stop() == 0, d2.stop_report()


def test_kill9_mid_export_never_leaves_a_partial_checkpoint(tmp_path, daemon_inputs, autoquant_bin):
    """Kill the moment a staging directory appears (the export is writing), several
    times; every directory that ever looks like a scheme must verify completely."""
    base, calib = daemon_inputs
    root = tmp_path / "models"
    d = Daemon(base, calib, root).start()
    try:
        warm = submit(d, "x-warm", 0.5)  # computes and caches the baseline: later jobs go straight to export
        assert d.wait_job(warm.id).state == SUCCEEDED
        caught, ids = 0, []
        for i in range(4):
            job = submit(d, f"x-{i}", 0.2 + 0.2 * i)
            ids.append(job.id)
            deadline = time.time() + 60
            while time.time() < deadline and not staging_leftovers(root):
                if d.call("GetStatus", pb.GetStatusRequest(job_id=job.id)).state == SUCCEEDED:
                    break
            if staging_leftovers(root):
                killed = d.proc.pid
                d.kill9()
                caught += 1
                assert not (root / f"x-{i}").exists(), "a scheme appeared before its export finished"
                assert leftovers_of(root, killed)  # what the killed export left, until the restart
                d = Daemon(base, calib, root).start()
                assert leftovers_of(root, killed) == []
                d.wait_job(job.id)  # the re-queued export, before the next kill can hit it again
        assert caught >= 1, "never caught an export in progress: the test did not test anything"
        done = [d.wait_job(i) for i in ids]
        assert [j.state for j in done] == [SUCCEEDED] * 4, [j.message for j in done]
        dirs = [root / "x-warm", *(pathlib.Path(j.result.output_dir) for j in done)]
        proc, report = diff(autoquant_bin, *dirs)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert all(not p["identical"] for p in report["pairs"])
    finally:
        assert d.stop() == 0, d.stop_report()


def test_a_job_cut_off_twice_is_failed_with_a_message(tmp_path, daemon_inputs, slow_calib):
    base, _ = daemon_inputs
    root = tmp_path / "models"
    d = Daemon(base, slow_calib, root).start()
    try:
        job = submit(d, "twice", 0.5)
        for attempt in (1, 2):
            running = d.wait_job(job.id, states={RUNNING})
            assert running.attempts == attempt
            d.kill9()
            d = Daemon(base, slow_calib, root).start()
        failed = d.wait_job(job.id)
        assert failed.state == FAILED and "2 times" in failed.message and "resubmit" in failed.message
        assert not (root / "twice").exists() and staging_leftovers(root) == []
        # The scheme name is free again: a resubmission runs.
        again = submit(d, "twice", 0.5)
        assert again.id != job.id
    finally:
        assert d.stop() == 0, d.stop_report()


def test_sigterm_drains_the_running_job_and_it_completes_after_restart(tmp_path, daemon_inputs, slow_calib,
                                                                        autoquant_bin):
    base, _ = daemon_inputs
    root = tmp_path / "models"
    d = Daemon(base, slow_calib, root).start()
    try:
        running, queued = submit(d, "t-run", 0.4), submit(d, "t-queued", 0.8)
        d.wait_job(running.id, states={RUNNING})
    except BaseException:
        d.kill9()
        raise
    t0 = time.time()
    assert d.stop() == 0, d.stop_report()
    assert time.time() - t0 < 30  # the running job stopped at its next batch, not at its end
    assert "stopped cleanly" in d.log()
    assert scheme_dirs(root, "t-") == [] and staging_leftovers(root) == []

    d = Daemon(base, slow_calib, root).start()
    try:
        done = [d.wait_job(running.id, timeout=600), d.wait_job(queued.id, timeout=600)]
        assert [j.state for j in done] == [SUCCEEDED, SUCCEEDED], [j.message for j in done]
        assert done[0].attempts == 1  # a drain is not an attempt: the job is not failed after two of them
        assert scheme_dirs(root, "t-") == ["t-queued", "t-run"]
    finally:
        assert d.stop() == 0, d.stop_report()


def test_sigterm_while_loading_exits_0_and_keeps_jobs(tmp_path, daemon_inputs, slow_calib):
    base, _ = daemon_inputs
    root = tmp_path / "models"
    d = Daemon(base, slow_calib, root).start()
    try:
        job = submit(d, "l-1", 0.5)
    finally:
        assert d.stop() == 0, d.stop_report()
    d = Daemon(base, slow_calib, root).start(wait_serving=False)
    assert d.stop() == 0, d.stop_report()  # before SERVING: exits at once, nothing to drain
    d = Daemon(base, slow_calib, root).start()
    try:
        assert d.wait_job(job.id, timeout=600).state == SUCCEEDED
    finally:
        assert d.stop() == 0, d.stop_report()


def test_a_failed_start_leaves_no_daemon_running(tmp_path, daemon_inputs):
    base, calib = daemon_inputs
    d = Daemon(base, calib, tmp_path / "models")
    with pytest.raises(AssertionError, match="not SERVING"):
        d.start(timeout=0)  # gives up at once: the helper must kill what it started
    assert d.proc.poll() is not None

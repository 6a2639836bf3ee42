"""Fleet mode (docs/fleet.md): two autoquantd on loopback share one job table in a
real PostgreSQL server the test starts, and one models root. Ten jobs submitted
through either daemon, one daemon kill -9'ed mid-job: every job completes exactly
once (the table and the disk agree), the baseline is computed once for the fleet,
and the survivor answers status, list and logs for every job. A daemon paused past
its lease and resumed (a late writer) cannot publish over the new owner's scheme."""
import json
import os
import pathlib
import signal
import threading
import time

import pytest

from daemon_helpers import Daemon, staging_leftovers, stubs
from pg_helpers import postgres  # noqa: F401 (a fixture)
from quant_helpers import diff

pb, _ = stubs()
SUCCEEDED, RUNNING = pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_RUNNING
LEASE = "2"  # seconds: a dead daemon's job is taken over this long after its last heartbeat


def fleet_daemon(base, calib, root, url, env=None):
    return Daemon(base, calib, root, "--store", url, "--lease-seconds", LEASE, env=env)


def submit(d, scheme, coverage, **kw):
    return d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme=scheme, coverage=coverage, **kw)))


def logs(d, job_id):
    return list(d.call("StreamLogs", pb.StreamLogsRequest(job_id=job_id)))


def manifest(scheme_dir: pathlib.Path):
    return json.loads((scheme_dir / "layer-sensitivity" / f"{scheme_dir.name}_quant_manifest.json").read_text())


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stopped(pid) -> bool:
    """True once the process is stopped (SIGSTOP): state T in /proc/PID/stat."""
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] in "Tt"


def test_ten_jobs_two_daemons_one_killed_every_job_once(tmp_path, postgres, daemon_inputs, slow_calib,
                                                        autoquant_bin):
    base, _ = daemon_inputs
    url = postgres.new_database()
    root = tmp_path / "models"
    # Daemon A kills itself (as kill -9 would) at its first export: mid-job, after the baseline.
    a = fleet_daemon(base, slow_calib, root, url, env={"AUTOQUANT_CRASH_AT": "export"})
    b = fleet_daemon(base, slow_calib, root, url)
    try:
        a.start()
        b.start()
        info_a = a.call("GetServerInfo", pb.GetServerInfoRequest())
        info_b = b.call("GetServerInfo", pb.GetServerInfoRequest())
        assert info_a.daemon_id and info_b.daemon_id and info_a.daemon_id != info_b.daemon_id
        assert info_a.job_store == url and info_b.job_store == url

        coverages = [c / 100 for c in range(10, 101, 10)]
        jobs = [submit(a if i % 2 == 0 else b, f"f-top{round(c * 100)}", c) for i, c in enumerate(coverages)]
        assert len({j.id for j in jobs}) == 10
        # An idempotency key is unique across the fleet: the same key through either daemon is one job.
        # (Last in the queue and cancelled at once: not one of the ten.)
        keyed = pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme="f-keyed", coverage=0.5, priority=-1),
                                       idempotency_key="fleet-key")
        keyed_a, keyed_b = a.call("SubmitScheme", keyed), b.call("SubmitScheme", keyed)
        assert keyed_a.id == keyed_b.id
        assert b.call("CancelJob", pb.CancelJobRequest(job_id=keyed_a.id)).state == pb.JOB_STATE_CANCELLED

        a.proc.wait(timeout=600)  # the crash point
        assert a.proc.returncode == -signal.SIGKILL, a.log()
        ran_on_a = postgres.sql(url, "SELECT job_id FROM autoquant_job_logs WHERE message LIKE "
                                     f"'started (attempt % on daemon {info_a.daemon_id}'")
        assert len(ran_on_a) == 1, ran_on_a  # A died in its first job
        killed = next(j for j in jobs if j.id == ran_on_a[0][0])

        done = [b.wait_job(j.id, timeout=900) for j in jobs]
        assert [j.state for j in done] == [SUCCEEDED] * 10, [(j.scheme, j.message) for j in done]
        assert all(j.daemon_id == info_b.daemon_id for j in done)  # the survivor finished them all
        attempts = {j.id: j.attempts for j in done}
        assert attempts[killed.id] == 2 and sum(attempts.values()) == 11, attempts

        killed_log = [l.message for l in logs(b, killed.id)]
        assert any(f"started (attempt 1) on daemon {info_a.daemon_id}" in m for m in killed_log), killed_log
        assert any(f"the lease of daemon {info_a.daemon_id} expired" in m for m in killed_log), killed_log
        assert any(f"started (attempt 2) on daemon {info_b.daemon_id}" in m for m in killed_log), killed_log

        # The table: each of the ten ended once (one terminal log line), ran as often as it says.
        rows = postgres.sql(url, "SELECT id, state, attempts FROM autoquant_jobs WHERE id <> '%s'" % keyed_a.id)
        assert sorted(r[0] for r in rows) == sorted(j.id for j in jobs)
        assert all(r[1] == "succeeded" and int(r[2]) == attempts[r[0]] for r in rows), rows
        terminal = dict(postgres.sql(url, "SELECT job_id, count(*) FROM autoquant_job_logs WHERE state IS NOT NULL "
                                          "GROUP BY job_id"))
        assert all(terminal.get(j.id) == "1" for j in jobs), terminal
        starts = dict(postgres.sql(url, "SELECT job_id, count(*) FROM autoquant_job_logs "
                                        "WHERE message LIKE 'started (attempt %' GROUP BY job_id"))
        assert all(int(starts[j.id]) == attempts[j.id] for j in jobs), starts

        # The disk: each scheme exactly once, made by its own job, complete and verified; nothing staged.
        assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == \
            sorted(f"f-top{round(c * 100)}" for c in coverages)
        for j in done:
            out = pathlib.Path(j.result.output_dir)
            assert out == root / j.scheme
            assert manifest(out)["job_id"] == j.id
        proc, report = diff(autoquant_bin, *(j.result.output_dir for j in done))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert all(not p["identical"] for p in report["pairs"])
        assert staging_leftovers(root) == []

        # One baseline for the whole fleet: computed once (the other daemon waited for it, then read
        # the shared cache), whoever computed it.
        cache = root / ".autoquant" / "baselines"
        assert len(list(cache.glob("baseline-*.json"))) == 1
        computed = [j.id for j in jobs if any(l.phase == pb.PHASE_SCORE for l in logs(b, j.id))]
        assert len(computed) == 1, computed

        # The survivor answers for every job, whoever ran it.
        listed = {j.id: j for j in b.call("ListJobs", pb.ListJobsRequest(page_size=1000)).jobs}
        assert {j.id for j in jobs} <= set(listed)
        for j in jobs:
            status = b.call("GetStatus", pb.GetStatusRequest(job_id=j.id))
            assert status.state == SUCCEEDED
            lines = logs(b, j.id)
            assert lines[-1].state == SUCCEEDED and "succeeded" in lines[-1].message
        info = b.call("GetServerInfo", pb.GetServerInfoRequest())
        assert info.running_job_id == ""
        assert b.stop() == 0, b.stop_report()
    finally:
        for d in (a, b):
            if d.proc is not None and d.proc.poll() is None:
                d.kill9()


def test_a_daemon_paused_past_its_lease_cannot_publish(tmp_path, postgres, daemon_inputs, slow_calib):
    base, _ = daemon_inputs
    url = postgres.new_database()
    root = tmp_path / "models"
    # A stops itself (SIGSTOP: all threads, heartbeat included) with the scheme complete in staging, right
    # before the rename into place: the most dangerous moment for a late writer.
    a = fleet_daemon(base, slow_calib, root, url,
                     env={"AUTOQUANT_CRASH_AT": "publish", "AUTOQUANT_CRASH_SIGNAL": "SIGSTOP"})
    b = fleet_daemon(base, slow_calib, root, url)
    follower = None
    try:
        a.start()
        info_a = a.call("GetServerInfo", pb.GetServerInfoRequest())
        # overwrite: without the lease check at publish time, A's rename would replace B's scheme.
        job = submit(a, "late", 0.5, overwrite=True)
        a.wait_job(job.id, states={RUNNING})
        b.start()  # only now, so that A holds the job

        # Follow the job's log through B while A runs it: A's lines reach B's stream only through the
        # table (B is not told of another daemon's writes), so they must arrive while A is still at work.
        received = []

        def follow():
            for line in b.call("StreamLogs", pb.StreamLogsRequest(job_id=job.id, follow=True), timeout=600):
                received.append((time.time(), line))
        follower = threading.Thread(target=follow, daemon=True)
        follower.start()

        wait_for(lambda: stopped(a.proc.pid), 600, "daemon A to stop itself before publishing")
        a_stopped_at = time.time()
        assert any(l.phase == pb.PHASE_SCORE and t < a_stopped_at for t, l in received), \
            [l.message for _, l in received]

        done = b.wait_job(job.id, timeout=600)
        assert done.state == SUCCEEDED, done.message
        assert done.attempts == 2 and done.daemon_id != info_a.daemon_id
        scheme = root / "late"
        before = (scheme.stat().st_ino, manifest(scheme)["job_id"])

        os.kill(a.proc.pid, signal.SIGCONT)
        wait_for(lambda: "lease lost on job " + job.id in a.log(), 60, "daemon A to log its lost lease")
        assert "stopped without publishing or recording anything" in a.log()
        time.sleep(1)  # anything A would still do, it does now
        assert (scheme.stat().st_ino, manifest(scheme)["job_id"]) == before  # not replaced
        assert staging_leftovers(root) == []  # A's staged copy was discarded
        after = b.call("GetStatus", pb.GetStatusRequest(job_id=job.id))
        assert after.state == SUCCEEDED and after.attempts == 2 and after.daemon_id == done.daemon_id
        terminal = [l for l in logs(a, job.id) if l.state]  # A still serves reads
        assert len(terminal) == 1 and terminal[0].state == SUCCEEDED
        follower.join(timeout=30)
        assert not follower.is_alive() and received[-1][1].state == SUCCEEDED
        assert a.stop() == 0, a.stop_report()  # A carries on as a healthy member of the fleet
        assert b.stop() == 0, b.stop_report()
    finally:
        for d in (a, b):
            if d.proc is not None and d.proc.poll() is None:
                if stopped(d.proc.pid):
                    os.kill(d.proc.pid, signal.SIGCONT)
                d.kill9()

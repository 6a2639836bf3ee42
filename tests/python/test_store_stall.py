"""Reactors never block (issues 23 and 25): RPC work runs on the daemon's request pools, not on
gRPC's callback threads. A real stall of the job store (another process holds SQLite's write lock
on jobs.db, as a second writer, a backup tool or a slow disk would) leaves every submit waiting in
the store, while grpc.health.v1 and GetServerInfo (memory), and GetStatus, ListJobs and StreamLogs
(the reads pool and the store's read connection) still answer within a short deadline; once the
lock goes, the submits complete. With the writes queue full, a new submit gets RESOURCE_EXHAUSTED
"the server is busy" at once instead of waiting with the others."""
import sqlite3
import subprocess
import threading
import time
import urllib.request
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import pytest

from daemon_helpers import Daemon, stubs
from pg_helpers import postgres  # noqa: F401 (a fixture)

pb, _ = stubs()
C = grpc.StatusCode
QUICK = 2  # seconds: the deadline of the RPCs that must answer during the stall


@contextmanager
def store_write_locked(daemon, pg=None, url=None):
    """Holds the daemon's job store against writes from another process: SQLite's write lock on jobs.db
    (WAL mode: reads go on, every write waits in SQLite's busy timeout, 10 s), or, with `pg`, an EXCLUSIVE
    lock on autoquant_jobs from another session (plain SELECTs go on; an INSERT waits, up to the
    daemon's lock_timeout of 5 s)."""
    if pg is not None:
        psql = subprocess.Popen([str(pg.bindir / "psql"), url, "-v", "ON_ERROR_STOP=1", "-q", "-A", "-t"],
                                stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            psql.stdin.write("BEGIN; LOCK TABLE autoquant_jobs IN EXCLUSIVE MODE; SELECT 'locked';\n")
            psql.stdin.flush()
            assert psql.stdout.readline().strip() == "locked", "psql did not take the lock"
            yield
        finally:
            psql.stdin.write("ROLLBACK;\n")
            psql.stdin.close()
            psql.wait(timeout=30)
        return
    db = sqlite3.connect(daemon.root / ".autoquant" / "jobs.db", isolation_level=None, timeout=0)
    try:
        db.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        db.close()  # rolls back: the lock goes


def start_submits(daemon, names, results, timeout=60):
    def submit(name):
        t0 = time.time()
        try:
            job = daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme=name, coverage=0.5)),
                              timeout=timeout)
            results[name] = ("ok", job.id, time.time() - t0)
        except grpc.RpcError as e:
            results[name] = (e.code(), e.details(), time.time() - t0)

    threads = [threading.Thread(target=submit, args=(n,)) for n in names]
    for t in threads:
        t.start()
    return threads


def answers_quickly(daemon):
    """Health and GetServerInfo, each within QUICK seconds; what each answered, or how it failed."""
    out = {}
    t0 = time.time()
    try:
        out["health"] = health_pb2_grpc.HealthStub(daemon.channel).Check(health_pb2.HealthCheckRequest(),
                                                                           timeout=QUICK).status
    except grpc.RpcError as e:
        out["health"] = e.code()
    out["health_seconds"] = time.time() - t0
    t0 = time.time()
    try:
        out["info"] = daemon.call("GetServerInfo", pb.GetServerInfoRequest(), timeout=QUICK).daemon_id
    except grpc.RpcError as e:
        out["info"] = e.code()
    out["info_seconds"] = time.time() - t0
    return out


def reads_answer_quickly(daemon, job_id):
    """GetStatus, ListJobs and a StreamLogs of a finished job, each within QUICK seconds: what each
    answered (the job's state, the number of jobs, the number of log lines), or how it failed."""
    out = {}
    try:
        out["status"] = daemon.call("GetStatus", pb.GetStatusRequest(job_id=job_id), timeout=QUICK).state
    except grpc.RpcError as e:
        out["status"] = e.code()
    try:
        out["list"] = len(daemon.call("ListJobs", pb.ListJobsRequest(), timeout=QUICK).jobs)
    except grpc.RpcError as e:
        out["list"] = e.code()
    try:
        out["logs"] = len(list(daemon.call("StreamLogs", pb.StreamLogsRequest(job_id=job_id), timeout=QUICK)))
    except grpc.RpcError as e:
        out["logs"] = e.code()
    return out


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_a_stalled_store_leaves_health_server_info_status_lists_and_logs_answering(request, tmp_path, daemon_inputs,
                                                                                  store):
    base, calib = daemon_inputs
    pg = url = None
    if store == "postgres":
        pg = request.getfixturevalue("postgres")
        url = pg.new_database()
        d = Daemon(base, calib, tmp_path / "models", "--store", url).start()
    else:
        d = Daemon(base, calib, tmp_path / "models").start()
    try:
        before = d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme="before", coverage=0.5)))
        d.wait_job(before.id)
        # More than gRPC's callback threads on a small machine, and than the writes pool's 8 threads.
        names = [f"stall-{i}" for i in range(12)]
        results = {}
        with store_write_locked(d, pg, url):
            threads = start_submits(d, names, results)
            time.sleep(1.0)  # every submit has reached the store (or the writes queue) and waits there
            during = answers_quickly(d)
            reads = reads_answer_quickly(d, before.id)
            stalled = dict(results)  # what had finished while the store was locked
            time.sleep(0.5)
            during_again = answers_quickly(d)
        for t in threads:
            t.join(timeout=90)
        assert stalled == {}, f"the lock did not stall the submits: {stalled}"
        for answered in (during, during_again):
            assert isinstance(answered["health"], int), (
                f"health did not answer within {QUICK} s while the store was stalled: {answered}\n{d.log()}")
            assert isinstance(answered["info"], str) and answered["info"], (
                f"GetServerInfo did not answer within {QUICK} s while the store was stalled: {answered}")
        assert reads == {"status": pb.JOB_STATE_SUCCEEDED, "list": 1, "logs": reads["logs"]} and reads["logs"] > 0, (
            f"reads did not answer within {QUICK} s while submits waited for the store: {reads}\n{d.log()}")
        # The lock went: every submit completes and its job is stored. PostgreSQL's lock_timeout (5 s) may
        # have ended a submit that waited longer (a loaded machine): UNAVAILABLE saying so, never a hang.
        assert sorted(results) == sorted(names), results
        for name, (code, job_id, seconds) in results.items():
            if store == "postgres" and code == C.UNAVAILABLE:
                assert "lock" in job_id and seconds >= 4.5, (name, code, job_id, seconds)
                continue
            assert code == "ok", (name, code, job_id)
            assert d.call("GetStatus", pb.GetStatusRequest(job_id=job_id)).spec.scheme == name
    finally:
        assert d.stop() == 0, d.stop_report()


def refused_total(d) -> float:
    info = d.call("GetServerInfo", pb.GetServerInfoRequest())
    text = urllib.request.urlopen(f"http://{info.metrics_address}/metrics", timeout=10).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l.startswith('autoquant_requests_refused_total{code="RESOURCE_EXHAUSTED",pool="writes"}'))


def test_a_full_request_queue_refuses_new_rpcs_at_once_with_resource_exhausted(tmp_path, daemon_inputs):
    base, calib = daemon_inputs
    d = Daemon(base, calib, tmp_path / "models", "--request-threads", "1", "--request-queue", "2").start()
    try:
        results = {}
        with store_write_locked(d):
            first = start_submits(d, ["busy-0"], results)
            time.sleep(0.5)  # the one request thread now waits in the store
            queued = start_submits(d, ["busy-1", "busy-2"], results)
            time.sleep(0.5)  # both wait in the queue, which is full
            t0 = time.time()
            refused = start_submits(d, ["busy-3", "busy-4", "busy-5"], results, timeout=QUICK)
            for t in refused:
                t.join()
            refused_after = time.time() - t0
            assert isinstance(answers_quickly(d)["health"], int)
        for t in first + queued:
            t.join(timeout=90)
        for name in ("busy-3", "busy-4", "busy-5"):
            code, details, _ = results[name]
            assert code == C.RESOURCE_EXHAUSTED, (name, code, details)
            assert "the server is busy" in details and "retry" in details, details
        assert refused_after < QUICK, refused_after
        for name in ("busy-0", "busy-1", "busy-2"):
            assert results[name][0] == "ok", (name, results[name])
        assert refused_total(d) == 3
    finally:
        assert d.stop() == 0, d.stop_report()

"""The job store's failures are loud and strand nothing: a disk that fills under a running job
(a real, small tmpfs) makes health NOT_SERVING, submits RESOURCE_EXHAUSTED "the disk holding ... is
full", counts autoquant_store_errors_total, and once space returns the job finishes and the queue goes
on without a restart. An empty jobs.db is refused, not taken for a new store. After a restart with
another --model, the jobs submitted against the old one fail with what to do instead of running."""
import errno
import pathlib
import sqlite3
import subprocess
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2

from daemon_helpers import Daemon, small_tmpfs, stubs
from pg_helpers import Postgres, postgres  # noqa: F401 (a fixture)

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



class HeldPadding:
    """A psql session that, once the disk is full, fills what room is left in the last pages of the job
    log table with rows it never commits (another transaction holding that room), so that the daemon's
    next log line must extend the table: PostgreSQL then answers 53100 disk_full whatever the daemon
    was writing. Without it a full disk is seen only by writes that happen to need a new page.
    Rolled back by release(): nothing of it is ever visible to the daemon."""

    def __init__(self, pg, url):
        self.proc = subprocess.Popen([str(pg.bindir / "psql"), url, "-qAt", "-v", "ON_ERROR_STOP=1"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        # session_replication_role: the padding rows name no job (no foreign key check, so no lock on a job row).
        self.proc.stdin.write("""SET session_replication_role = replica;
BEGIN;
DO $$
DECLARE n integer := 0;
BEGIN
  LOOP
    BEGIN
      INSERT INTO autoquant_job_logs(job_id, sequence, time_ms, level, message) VALUES ('padding', n, 0, '', '');
    EXCEPTION WHEN disk_full THEN
      RAISE NOTICE 'padded with % rows; then: %', n, SQLERRM;
      EXIT;
    END;
    n := n + 1;
    IF n > 100000 THEN RAISE EXCEPTION 'the disk did not fill'; END IF;
  END LOOP;
END $$;
\\echo padded
""")
        self.proc.stdin.flush()
        self.output = []
        for line in self.proc.stdout:
            self.output.append(line.rstrip("\n"))
            if line.strip() == "padded":
                break
        else:
            raise AssertionError(f"padding the job log table failed: {self.output}")

    def release(self):
        if self.proc.poll() is None:
            self.proc.communicate("ROLLBACK;\n\\q\n", timeout=30)


def test_postgres_full_disk_is_loud_and_the_job_finishes_once_space_returns(daemon_inputs, slow_calib, tmp_path):
    """The fleet store (PostgreSQL) on a small disk of its own that fills while a job runs: a tablespace on
    a 32 MiB tmpfs holds the database (its WAL stays on the server's own disk: PostgreSQL stops when it
    cannot write WAL). PostgreSQL answers 53100 disk_full, and the daemon behaves as with SQLite."""
    base, _ = daemon_inputs
    pg = Postgres().start()
    try:
        with small_tmpfs(pg.dir / "small-disk", "32m") as mnt:
            pg.new_tablespace("aq_small", mnt / "ts")
            url = pg.new_database(tablespace="aq_small")
            d = Daemon(base, slow_calib, tmp_path / "models", "--store", url).start()
            padding = None
            try:
                job = submit(d, "pg-full-a")
                d.wait_job(job.id, states={RUNNING})
                filler = mnt / "filler"
                fill(filler)
                padding = HeldPadding(pg, url)
                # The job's work is done but the lease check before its publish, or its end, cannot be stored:
                # it is retried, health says so, and the job stays RUNNING.
                wait_for("the job's publish or end refused",
                         lambda: any(f"job store: {what} failed (RESOURCE_EXHAUSTED)" in d.log() for what in
                                     ("confirming the job's lease before publishing", "recording a job's state")))
                assert d.health() == NOT_SERVING
                with pytest.raises(grpc.RpcError) as refused:
                    submit(d, "pg-full-b")
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
                details = refused.value.details()
                assert f"job store {url}: storing jobs: the disk holding the database is full: free space and retry" \
                    in details, details
                assert "No space left on device" in details, details  # PostgreSQL's own words
                assert metric(d, "autoquant_store_errors_total") > 0
                assert d.call("GetStatus", pb.GetStatusRequest(job_id=job.id)).state == RUNNING
                assert "could not extend file" in pg.server_log(), pg.server_log()

                filler.unlink()  # space returns: nobody restarts anything
                padding.release()
                done = d.wait_job(job.id, timeout=300)
                assert done.state == SUCCEEDED and done.attempts == 1, (done.state, done.attempts, done.message)
                wait_for("health SERVING", lambda: d.health() == SERVING)
                after = submit(d, "pg-full-b")
                assert d.wait_job(after.id, timeout=300).state == SUCCEEDED
                assert pg.sql(url, "SELECT count(*) FROM autoquant_job_logs WHERE job_id = 'padding'") == [["0"]]
            finally:
                if padding:
                    padding.release()
                assert d.stop() == 0, d.stop_report()
                pg.stop()  # before the tmpfs under its tablespace goes
    finally:
        pg.stop()


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_unreadable_stored_rows_are_skipped_and_the_daemon_keeps_serving(request, tmp_path, daemon_inputs, store):
    """Rows written behind the daemon's back (a hand edit, a bad disk) that it cannot read: a finished job
    whose spec is not JSON, a job in no known state, and a queued job whose spec has the wrong shape, at the
    head of the queue. ListJobs lists the others, GetStatus names what is wrong with the row, the queued one
    fails saying why instead of holding up the queue, and submits, health and GetServerInfo go on."""
    base, calib = daemon_inputs
    root = tmp_path / "models"
    if store == "postgres":
        pg = request.getfixturevalue("postgres")
        url = pg.new_database()
        d = Daemon(base, calib, root, "--store", url)
        table = "autoquant_jobs"

        def sql(query):
            return pg.sql(url, query)
    else:
        d = Daemon(base, calib, root)
        table = "jobs"

        def sql(query):
            with sqlite3.connect(root / ".autoquant" / "jobs.db", timeout=30) as db:
                return [[str(v) for v in row] for row in db.execute(query).fetchall()]
    d.start()
    try:
        good = submit(d, "good-a")
        assert d.wait_job(good.id).state == SUCCEEDED
        sql(f"INSERT INTO {table}(id, spec, state) VALUES ('j-bad-spec', '{{not json', 'succeeded')")
        sql(f"INSERT INTO {table}(id, spec, state) SELECT 'j-bad-state', spec, 'exploded' FROM {table} "
            f"WHERE id = '{good.id}'")
        sql(f"INSERT INTO {table}(id, spec, state) VALUES ('j-bad-queued', '{{\"scheme\": 7}}', 'queued')")

        # The queued row is failed by the worker (it looks for work every second), not claimed again and again.
        wait_for("the unreadable queued row failed",
                 lambda: sql(f"SELECT state FROM {table} WHERE id = 'j-bad-queued'") == [["failed"]], timeout=30)
        message = sql(f"SELECT message FROM {table} WHERE id = 'j-bad-queued'")[0][0]
        assert "its stored row cannot be read, so it cannot run" in message, message

        listed = d.call("ListJobs", pb.ListJobsRequest())
        assert [j.id for j in listed.jobs] == [good.id], listed
        assert "ListJobs: skipped an unreadable stored job: job j-bad-spec" in d.log(), d.log()
        for job_id, code, what in [("j-bad-spec", grpc.StatusCode.DATA_LOSS, "job j-bad-spec: stored spec is not JSON"),
                                   ("j-bad-state", grpc.StatusCode.DATA_LOSS, "unknown job state 'exploded'"),
                                   ("j-bad-queued", grpc.StatusCode.DATA_LOSS, "stored job spec is malformed")]:
            with pytest.raises(grpc.RpcError) as bad:
                d.call("GetStatus", pb.GetStatusRequest(job_id=job_id))
            assert bad.value.code() == code and what in bad.value.details(), (job_id, bad.value)

        after = submit(d, "good-b")
        assert d.wait_job(after.id).state == SUCCEEDED
        assert d.health() == SERVING
        assert d.call("GetServerInfo", pb.GetServerInfoRequest()).serving
        assert [j.id for j in d.call("ListJobs", pb.ListJobsRequest()).jobs] == [good.id, after.id]
    finally:
        assert d.stop() == 0, d.stop_report()

#!/usr/bin/env python3
"""Reproduces a lost CancelJob: a cancel that lands while the worker is claiming a job.

Queues 20 short jobs (distinct baselines) on a tiny model, waits until the first runs, then
cancels every job in submission order as fast as one client can (as one cancelling a whole
sweep would). A job whose CancelJob answered RUNNING ("cancelling") must end CANCELLED; the
script prints each that does not, with its log, and exits 1 if there was one.

Seen on main 48c2cf8 (2 CPUs): in 13 of 14 trials one job logs "started (attempt 1)", then
"cancel requested; stopping at the next batch, group or shard", then runs to SUCCEEDED.
JobManager::Cancel finds the job RUNNING in the store but sets cancel_running_ only if
running_id_ == id, and the worker sets running_id_ (and clears cancel_running_) only after
ClaimNext has marked the job running, so a cancel in between is acknowledged and dropped.

  AUTOQUANT_BUILD_DIR=build python bench/load/repro_cancel_race.py [TRIALS]
"""
import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "python"))
import grpc  # noqa: E402
import daemon_helpers  # noqa: E402
from aq_paths import binary  # noqa: E402


def main(trials):
    pb, _ = daemon_helpers.stubs()
    work = pathlib.Path(tempfile.mkdtemp(prefix="aq-cancel-race-"))
    base, calib = daemon_helpers.make_tiny_inputs(binary("autoquant"), work)
    lost = 0
    for trial in range(trials):
        d = daemon_helpers.Daemon(base, calib, work / f"trial-{trial}" / "models").start()
        try:
            stub = d.stub()
            ids = [stub.SubmitScheme(pb.SubmitSchemeRequest(spec=pb.SchemeSpec(
                scheme=f"s{k}", coverage=0.5, calib_steps=16 - k % 8, score_steps=16 - k % 8)), timeout=30).id
                for k in range(20)]
            d.wait_job(ids[0], states={pb.JOB_STATE_RUNNING})
            replies = {}
            for j in ids:
                try:
                    replies[j] = stub.CancelJob(pb.CancelJobRequest(job_id=j), timeout=30).state
                except grpc.RpcError as e:
                    replies[j] = e.code().name
            time.sleep(3)
            for j in ids:
                final = stub.GetStatus(pb.GetStatusRequest(job_id=j), timeout=30).state
                if replies[j] == pb.JOB_STATE_RUNNING and final != pb.JOB_STATE_CANCELLED:
                    lost += 1
                    lines = [f"{l.sequence} {l.message}" for l in stub.StreamLogs(pb.StreamLogsRequest(job_id=j),
                                                                                   timeout=30)]
                    print(f"trial {trial}: {j}: CancelJob answered RUNNING, job ended "
                          f"{pb.JobState.Name(final)}; its log:\n  " + "\n  ".join(lines), flush=True)
        finally:
            rc = d.stop()
            assert rc == 0, d.stop_report()
    shutil.rmtree(work, ignore_errors=True)
    print(f"{lost} lost cancel(s) in {trials} trials")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))

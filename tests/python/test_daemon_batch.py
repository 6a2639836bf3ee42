"""SchemeSpec.batch_size: a job's own calibration / scoring batch size.

- test_batch_size_is_part_of_the_baseline: a job at batch 2 computes its own baseline (another
  baseline_key than the default batch's, baseline_reused false), a second job at batch 2 reuses it,
  and a job at the daemon's default reuses the default's.
- test_negative_batch_size_is_invalid_argument: batch_size -1 is refused at submit with
  INVALID_ARGUMENT naming the field, and nothing is queued.
(A batch too large for the GPU failing with RESOURCE_EXHAUSTED while the next job runs is checked
on the GPU by bench/perf/oom_check.py; on the CPU the out-of-memory path is tests/python/test_fault_resources.py.)
"""
import grpc
import pytest

from daemon_helpers import stubs


def submit(daemon, pb, name, **kw):
    spec = pb.SchemeSpec(scheme=name, coverage=0.5, calib_steps=2, score_steps=2, **kw)
    return daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec)).id


def test_batch_size_is_part_of_the_baseline(daemon):
    pb, _ = stubs()
    ids = [submit(daemon, pb, "bs-default"), submit(daemon, pb, "bs2-a", batch_size=2),
           submit(daemon, pb, "bs2-b", batch_size=2), submit(daemon, pb, "bs-default-2")]
    jobs = [daemon.wait_job(i) for i in ids]
    for j in jobs:
        assert j.state == pb.JOB_STATE_SUCCEEDED, j.message
    default, b2a, b2b, default2 = jobs
    assert b2a.result.baseline_key != default.result.baseline_key
    assert b2b.result.baseline_key == b2a.result.baseline_key
    assert default2.result.baseline_key == default.result.baseline_key
    assert b2b.result.metrics["baseline_seconds"] == 0 and default2.result.metrics["baseline_seconds"] == 0
    assert b2a.spec.batch_size == 2 and default.spec.batch_size == 0


def test_negative_batch_size_is_invalid_argument(daemon):
    pb, _ = stubs()
    before = len(daemon.call("ListJobs", pb.ListJobsRequest(page_size=1000)).jobs)
    with pytest.raises(grpc.RpcError) as e:
        submit(daemon, pb, "bs-bad", batch_size=-1)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "batch_size" in e.value.details()
    assert len(daemon.call("ListJobs", pb.ListJobsRequest(page_size=1000)).jobs) == before

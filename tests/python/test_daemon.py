"""autoquantd end to end over gRPC (stubs generated from proto/ at test time), on
the CPU with a tiny generated model, on loopback: schemes and sweeps, log streams
and resumption, cancel, paging, idempotency (racing submits included), health,
reflection, /metrics through promtool. Every daemon is stopped by its fixture."""
import json
import pathlib
import shutil
import subprocess
import threading
import urllib.request

import grpc
import pytest

from daemon_helpers import TEST_DEVICE, Daemon, staging_leftovers, stubs
from quant_helpers import diff

pb, _ = stubs()
SUCCEEDED, FAILED, CANCELLED = pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED


def spec(scheme, **kw):
    return pb.SchemeSpec(scheme=scheme, **kw)


def test_three_schemes_and_a_sweep_produce_distinct_checkpoints(daemon, autoquant_bin):
    jobs = [daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("s-top10", coverage=0.1))),
            daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("s-half", coverage=0.5))),
            daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("s-all", coverage=1.0)))]
    sweep = daemon.call("SubmitSweep", pb.SubmitSweepRequest(points=[spec(f"sw-top{c}", coverage=c / 100)
                                                                    for c in (20, 40, 80)]))
    assert sweep.sweep_id and len(sweep.jobs) == 3
    assert all(j.sweep_id == sweep.sweep_id for j in sweep.jobs)
    done = [daemon.wait_job(j.id) for j in [*jobs, *sweep.jobs]]
    assert [j.state for j in done] == [SUCCEEDED] * 6, [j.message for j in done]
    dirs = [pathlib.Path(j.result.output_dir) for j in done]
    assert [d.parent for d in dirs] == [daemon.root] * 6
    assert [d.name for d in dirs] == ["s-top10", "s-half", "s-all", "sw-top20", "sw-top40", "sw-top80"]
    quantized = [j.result.groups_quantized for j in done]
    assert quantized[0] < quantized[1] < quantized[2] == done[2].result.groups_total
    # One baseline for all: computed by the first job, reused by every later one.
    assert not done[0].baseline_reused and all(j.baseline_reused for j in done[1:])
    assert len({j.result.baseline_key for j in done}) == 1
    proc, report = diff(autoquant_bin, *dirs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(not p["identical"] for p in report["pairs"])
    assert staging_leftovers(daemon.root) == []
    for j in done:
        # Shared layout (the default): a scheme whose blobs all exist already writes no tensor bytes.
        m = j.result.metrics
        assert m["export_tensor_bytes"] > 0 and 0 <= m["export_bytes"] <= m["export_tensor_bytes"]
        assert j.started_at.seconds > 0 and j.finished_at.seconds > 0
    assert done[0].result.metrics["export_bytes"] == done[0].result.metrics["export_tensor_bytes"]


def test_logs_stream_from_start_and_resume_from_the_middle(daemon):
    job = daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("logs", coverage=0.3)))
    lines = list(daemon.call("StreamLogs", pb.StreamLogsRequest(job_id=job.id, follow=True), timeout=300))
    assert [l.sequence for l in lines] == list(range(1, len(lines) + 1))
    assert lines[0].message.startswith("queued")
    assert lines[-1].state == SUCCEEDED and all(l.state == 0 for l in lines[:-1])
    assert any(l.phase == pb.PHASE_EXPORT for l in lines)
    middle = lines[len(lines) // 2].sequence
    resumed = list(daemon.call("StreamLogs", pb.StreamLogsRequest(job_id=job.id, after_sequence=middle,
                                                                 follow=True)))
    assert [(l.sequence, l.message) for l in resumed] == [(l.sequence, l.message) for l in lines[middle:]]
    # Past the end of a finished job: an empty stream that ends, also when following.
    assert list(daemon.call("StreamLogs", pb.StreamLogsRequest(job_id=job.id, after_sequence=10**6,
                                                              follow=True))) == []


def test_list_jobs_pages_in_submission_order(daemon):
    for i in range(3):
        daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec(f"page{i}", coverage=0.2 + 0.1 * i)))
    seen, token = [], ""
    while True:
        page = daemon.call("ListJobs", pb.ListJobsRequest(page_size=2, page_token=token))
        assert len(page.jobs) <= 2
        seen += [j.scheme for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen.index("page0") < seen.index("page1") < seen.index("page2")
    assert len(seen) == len(set(j.id for j in daemon.call("ListJobs", pb.ListJobsRequest(page_size=1000)).jobs))
    for j in daemon.call("ListJobs", pb.ListJobsRequest(page_size=1000)).jobs:
        daemon.wait_job(j.id)
    succeeded = daemon.call("ListJobs", pb.ListJobsRequest(states=[SUCCEEDED], page_size=1000)).jobs
    assert succeeded and all(j.state == SUCCEEDED for j in succeeded)


def test_idempotency_key_returns_one_job_even_when_racing(daemon):
    req = pb.SubmitSchemeRequest(spec=spec("idem", coverage=0.25), idempotency_key="idem-1")
    first = daemon.call("SubmitScheme", req)
    again = daemon.call("SubmitScheme", req)
    assert again.id == first.id
    with pytest.raises(grpc.RpcError) as e:
        daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("idem", coverage=0.5), idempotency_key="idem-1"))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS and first.id in e.value.details()
    ids, errors = [], []

    def submit():
        try:
            ids.append(daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("race", coverage=0.25),
                                                                         idempotency_key="race-key")).id)
        except grpc.RpcError as err:  # any error is a failure of the test
            errors.append(err)

    threads = [threading.Thread(target=submit) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(ids) == 16 and len(set(ids)) == 1
    jobs = daemon.call("ListJobs", pb.ListJobsRequest(page_size=1000)).jobs
    assert [j.idempotency_key for j in jobs].count("race-key") == 1
    daemon.wait_job(ids[0])
    daemon.wait_job(first.id)


def test_cancel_a_running_and_a_queued_job_leaves_nothing(tmp_path, daemon_inputs, slow_calib):
    base, _ = daemon_inputs
    d = Daemon(base, slow_calib, tmp_path / "models").start()
    try:
        running = d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("c-run", coverage=0.5)))
        queued = d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("c-queued", coverage=0.5)))
        assert queued.queue_position >= 1
        d.wait_job(running.id, states={pb.JOB_STATE_RUNNING})
        c = d.call("CancelJob", pb.CancelJobRequest(job_id=queued.id))
        assert c.state == CANCELLED
        d.call("CancelJob", pb.CancelJobRequest(job_id=running.id))
        done = d.wait_job(running.id)
        assert done.state == CANCELLED, done.message
        assert d.wait_job(queued.id).state == CANCELLED
        assert not (d.root / "c-run").exists() and not (d.root / "c-queued").exists()
        assert staging_leftovers(d.root) == []
        with pytest.raises(grpc.RpcError) as e:
            d.call("CancelJob", pb.CancelJobRequest(job_id=running.id))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # Nothing about the cancelled jobs blocks the next one.
        after = d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("c-after", coverage=0.5)))
        assert d.wait_job(after.id).state == SUCCEEDED
    finally:
        assert d.stop() == 0, d.stop_report()


def test_health_reflection_and_server_info(daemon):
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
    assert daemon.health() == health_pb2.HealthCheckResponse.SERVING
    assert daemon.health("autoquant.v1.AutoQuant") == health_pb2.HealthCheckResponse.SERVING
    services = set(ProtoReflectionDescriptorDatabase(daemon.channel).get_services())
    assert {"autoquant.v1.AutoQuant", "grpc.health.v1.Health"} <= services
    info = daemon.call("GetServerInfo", pb.GetServerInfoRequest())
    assert info.serving and info.device.startswith(TEST_DEVICE)
    assert info.dtype == ("float32" if TEST_DEVICE == "cpu" else "bfloat16")
    assert len(info.model_fingerprint) == 64 and len(info.calib_fingerprint) == 64
    assert info.calib_samples == 16 and info.models_root == str(daemon.root)
    assert info.metrics_address.startswith("127.0.0.1:")
    assert info.batch_size == 1 and info.uptime_seconds > 0 and info.model_load_seconds > 0
    assert info.version.startswith("autoquant ")


def test_sensitivity_after_a_job(daemon):
    job = daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("sens", coverage=0.5)))
    done = daemon.wait_job(job.id)
    sens = daemon.call("GetSensitivity", pb.GetSensitivityRequest())
    assert sens.baseline_key == done.result.baseline_key
    assert sorted(g.rank for g in sens.groups) == list(range(len(sens.groups)))
    assert all("FP8" in g.scores and "NONE" in g.costs for g in sens.groups)
    with pytest.raises(grpc.RpcError) as e:
        daemon.call("GetSensitivity", pb.GetSensitivityRequest(method=pb.SCORE_METHOD_KL_DIV))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_metrics_pass_promtool_and_count_jobs(daemon):
    job = daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("metrics", coverage=0.5)))
    daemon.wait_job(job.id)
    info = daemon.call("GetServerInfo", pb.GetServerInfoRequest())
    text = urllib.request.urlopen(f"http://{info.metrics_address}/metrics", timeout=10).read().decode()
    if shutil.which("promtool") is None and TEST_DEVICE != "cpu":
        pytest.skip("promtool is not on the GPU machine; CI (cpu) installs it and runs this check")
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    listed = daemon.call("ListJobs", pb.ListJobsRequest(states=[SUCCEEDED], page_size=1000)).jobs
    assert values['autoquant_jobs{state="succeeded"}'] == len(listed)
    assert values["autoquant_baseline_cache_hits_total"] >= 1
    assert values["autoquant_export_bytes_total"] > 0
    assert values['autoquant_rpcs_total{code="OK",method="SubmitScheme"}'] >= 1
    assert values["autoquant_serving"] == 1

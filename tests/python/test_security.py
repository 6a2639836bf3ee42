"""docs/security.md's controls that no other test file covers: request size limits, and reads
(evaluation, reports) confined to real scheme directories under the models root."""
import grpc
import pytest

from daemon_helpers import Daemon, stubs


def test_oversized_requests_are_refused(daemon):
    pb = stubs()[0]
    # 17 MiB of manifest keys: over the daemon's 16 MiB message limit.
    keys = ["k" * 1024] * (17 * 1024)
    big = pb.SubmitSchemeRequest(spec=pb.SchemeSpec(
        scheme="big", coverage_manifest=pb.CoverageManifest(selected_layers=keys)))
    with pytest.raises(grpc.RpcError) as e:
        daemon.call("SubmitScheme", big)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value.details()
    points = [pb.SchemeSpec(scheme=f"p{i}", coverage=0.5) for i in range(1001)]
    with pytest.raises(grpc.RpcError) as e:
        daemon.call("SubmitSweep", pb.SubmitSweepRequest(points=points))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 1000" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme="s", coverage=0.5),
                                                           idempotency_key="x" * 129))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "128" in e.value.details()
    # Still serving, nothing queued.
    info = daemon.call("GetServerInfo", pb.GetServerInfoRequest())
    assert info.serving and info.queued_jobs == 0


def test_reads_never_follow_a_symlink_out_of_the_models_root(tmp_path, daemon_inputs):
    """A local user plants a link in the models root to a directory outside it that looks like an
    evaluated scheme: GetReport does not read through it (EvaluateScheme: test_evaluation.py)."""
    pb = stubs()[0]
    base, calib = daemon_inputs
    outside = tmp_path / "outside"
    (outside / "layer-sensitivity").mkdir(parents=True)
    (outside / "layer-sensitivity" / "evaluation.json").write_text("{}")
    d = Daemon(base, calib, tmp_path / "models").start()
    try:
        (d.root / "planted").symlink_to(outside, target_is_directory=True)
        with pytest.raises(grpc.RpcError) as e:
            d.call("GetReport", pb.GetReportRequest(schemes=["planted"]))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "symbolic link" in e.value.details()
        for bad in ("../outside", "/etc", ".hidden"):
            with pytest.raises(grpc.RpcError) as e:
                d.call("GetReport", pb.GetReportRequest(schemes=[bad]))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, e.value.details())
    finally:
        assert d.stop() == 0, d.stop_report()

"""autoquantd's answers to bad requests: a table of them, each with its gRPC code
and a message that says what to fix, after which the daemon still serves; the
bearer token (missing, wrong, from a file or the environment, never logged); the
refusal to listen off loopback without one; TLS and mutual TLS with generated
certificates."""
import math
import pathlib
import shutil
import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2

from daemon_helpers import Daemon, stubs

pb, pb_grpc = stubs()
SUCCEEDED = pb.JOB_STATE_SUCCEEDED
TOKEN = "s3cret-token-for-tests-0123456789"
C = grpc.StatusCode


def spec(scheme="bad", **kw):
    return pb.SchemeSpec(scheme=scheme, **kw)


def scheme(s):
    return ("SubmitScheme", pb.SubmitSchemeRequest(spec=s))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, daemon_inputs):
    base, calib = daemon_inputs
    work = tmp_path_factory.mktemp("errors")
    token_file = work / "token"
    token_file.write_text(TOKEN + "\n")
    # The base model on the models volume itself, as on a shared volume: a scheme may never replace it.
    shutil.copytree(base, work / "models" / "base-model")
    base = work / "models" / "base-model"
    d = Daemon(base, calib, work / "models", "--token-file", token_file, token=TOKEN).start()
    yield d
    assert d.stop() == 0, d.stop_report()


@pytest.fixture(scope="module")
def finished(daemon):
    """A finished job and its scheme directory, for the requests that refer to them."""
    job = daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("done", coverage=0.5)))
    assert daemon.wait_job(job.id).state == SUCCEEDED
    (daemon.root / "foreign").mkdir()
    (daemon.root / "foreign" / "notes.txt").write_text("someone else's directory")
    (daemon.root.parent / "outside").mkdir(exist_ok=True)
    (daemon.root / "link").symlink_to(daemon.root.parent / "outside")
    return job


# (id, lambda finished_job -> (method, request), code, words the message must hold)
BAD = [
    ("coverage-zero", lambda j: scheme(spec(coverage=0.0)), C.INVALID_ARGUMENT, ["coverage", "(0, 1]"]),
    ("coverage-above-one", lambda j: scheme(spec(coverage=1.5)), C.INVALID_ARGUMENT, ["coverage", "(0, 1]"]),
    ("coverage-negative", lambda j: scheme(spec(coverage=-0.2)), C.INVALID_ARGUMENT, ["coverage"]),
    ("coverage-nan", lambda j: scheme(spec(coverage=math.nan)), C.INVALID_ARGUMENT, ["coverage"]),
    ("no-selection", lambda j: scheme(spec()), C.INVALID_ARGUMENT, ["coverage", "effective_bits"]),
    ("scheme-empty", lambda j: scheme(spec("", coverage=0.5)), C.INVALID_ARGUMENT, ["scheme"]),
    ("scheme-dotdot", lambda j: scheme(spec("..", coverage=0.5)), C.INVALID_ARGUMENT, ["scheme"]),
    ("scheme-escapes", lambda j: scheme(spec("../escape", coverage=0.5)), C.INVALID_ARGUMENT, ["scheme", "/"]),
    ("scheme-nested", lambda j: scheme(spec("a/b", coverage=0.5)), C.INVALID_ARGUMENT, ["scheme", "/"]),
    ("scheme-absolute", lambda j: scheme(spec("/etc", coverage=0.5)), C.INVALID_ARGUMENT, ["scheme"]),
    ("scheme-hidden", lambda j: scheme(spec(".autoquant", coverage=0.5)), C.INVALID_ARGUMENT, ["scheme", "."]),
    ("scheme-symlink", lambda j: scheme(spec("link", coverage=0.5, overwrite=True)), C.FAILED_PRECONDITION,
     ["link", "symbolic link"]),
    ("scheme-is-the-base-model", lambda j: scheme(spec("base-model", coverage=0.5, overwrite=True)),
     C.INVALID_ARGUMENT, ["base-model", "is the base model", "never written"]),
    ("scheme-exists", lambda j: scheme(spec("done", coverage=0.3)), C.ALREADY_EXISTS, ["done", "overwrite"]),
    ("overwrite-foreign-dir", lambda j: scheme(spec("foreign", coverage=0.3, overwrite=True)),
     C.FAILED_PRECONDITION, ["foreign", "not a previous output of autoquant"]),
    ("pattern-matches-nothing", lambda j: scheme(spec(coverage=0.5, disabled_layers=["*no_such_module*"])),
     C.INVALID_ARGUMENT, ["*no_such_module*", "match no"]),
    ("manifest-missing-keys", lambda j: scheme(spec(coverage_manifest=pb.CoverageManifest(
        selected_layers=["language_model.layers.0.mlp.gate_proj.quant_recipe"]))), C.INVALID_ARGUMENT,
     ["manifest", "missing"]),
    ("manifest-unknown-key", lambda j: scheme(spec(coverage_manifest=pb.CoverageManifest(
        selected_layers=["no.such.group.quant_recipe"]))), C.INVALID_ARGUMENT, ["no.such.group.quant_recipe"]),
    ("effective-bits-infeasible", lambda j: scheme(spec(effective_bits=4.0)), C.OUT_OF_RANGE,
     ["effective bits 4", "infeasible", "minimum achievable is 8"]),
    ("effective-bits-above-16", lambda j: scheme(spec(effective_bits=17.0)), C.INVALID_ARGUMENT,
     ["effective_bits 17", "(0, 16)"]),
    ("two-selections", lambda j: scheme(spec(coverage=0.5, effective_bits=12.0)), C.INVALID_ARGUMENT,
     ["more than one selection", "effective_bits"]),
    ("evaluate-without-eval-set", lambda j: scheme(spec(coverage=0.5, evaluate=True)), C.FAILED_PRECONDITION,
     ["--eval-set"]),
    ("format-unknown", lambda j: scheme(spec(coverage=0.5, format=97)), C.INVALID_ARGUMENT, ["format"]),
    ("method-unknown", lambda j: scheme(spec(coverage=0.5, method=97)), C.INVALID_ARGUMENT, ["method"]),
    ("calib-steps-negative", lambda j: scheme(spec(coverage=0.5, calib_steps=-1)), C.INVALID_ARGUMENT,
     ["calib_steps"]),
    ("sweep-empty", lambda j: ("SubmitSweep", pb.SubmitSweepRequest()), C.INVALID_ARGUMENT, ["at least one"]),
    ("sweep-duplicate-scheme", lambda j: ("SubmitSweep", pb.SubmitSweepRequest(
        points=[spec("dup", coverage=0.2), spec("dup", coverage=0.4)])), C.INVALID_ARGUMENT, ["dup", "both"]),
    ("sweep-bad-point", lambda j: ("SubmitSweep", pb.SubmitSweepRequest(
        points=[spec("ok-point", coverage=0.2), spec("bad-point", coverage=2.0)])), C.INVALID_ARGUMENT,
     ["point 1", "bad-point", "coverage"]),
    ("status-unknown-id", lambda j: ("GetStatus", pb.GetStatusRequest(job_id="j-does-not-exist")), C.NOT_FOUND,
     ["j-does-not-exist"]),
    ("status-empty-id", lambda j: ("GetStatus", pb.GetStatusRequest()), C.INVALID_ARGUMENT, ["job_id"]),
    ("cancel-unknown-id", lambda j: ("CancelJob", pb.CancelJobRequest(job_id="j-nope")), C.NOT_FOUND, ["j-nope"]),
    ("cancel-finished", lambda j: ("CancelJob", pb.CancelJobRequest(job_id=j.id)), C.FAILED_PRECONDITION,
     ["already finished"]),
    ("list-bad-token", lambda j: ("ListJobs", pb.ListJobsRequest(page_token="garbage!")), C.INVALID_ARGUMENT,
     ["page_token"]),
    ("list-page-too-big", lambda j: ("ListJobs", pb.ListJobsRequest(page_size=5000)), C.INVALID_ARGUMENT,
     ["page_size", "1000"]),
    ("list-page-negative", lambda j: ("ListJobs", pb.ListJobsRequest(page_size=-1)), C.INVALID_ARGUMENT,
     ["page_size"]),
    ("sensitivity-unknown-baseline", lambda j: ("GetSensitivity", pb.GetSensitivityRequest(
        method=pb.SCORE_METHOD_KL_DIV)), C.FAILED_PRECONDITION, ["baseline"]),
]


def call_code(d, method, request, **kw):
    try:
        if method == "StreamLogs":
            list(d.call(method, request, **kw))
        else:
            d.call(method, request, **kw)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return C.OK, ""


@pytest.mark.parametrize("name,make,code,words", BAD, ids=[b[0] for b in BAD])
def test_bad_request_gets_its_code_and_a_useful_message(daemon, finished, name, make, code, words):
    method, request = make(finished)
    got, message = call_code(daemon, method, request)
    assert got == code, f"{name}: {got} {message!r}"
    for w in words:
        assert w.lower() in message.lower(), f"{name}: {message!r} lacks {w!r}"
    assert TOKEN not in message


def test_stream_logs_errors(daemon, finished):
    for req, code, word in [(pb.StreamLogsRequest(job_id="j-missing"), C.NOT_FOUND, "j-missing"),
                            (pb.StreamLogsRequest(job_id=finished.id, after_sequence=-3), C.INVALID_ARGUMENT,
                             "after_sequence")]:
        got, message = call_code(daemon, "StreamLogs", req)
        assert got == code and word in message, (got, message)


def test_daemon_still_serves_after_the_bad_requests(daemon, finished):
    for _, make, _, _ in BAD:  # again, all of them in a row
        call_code(daemon, *make(finished))
    assert daemon.health() == health_pb2.HealthCheckResponse.SERVING
    job = daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("after-errors", coverage=0.4)))
    assert daemon.wait_job(job.id).state == SUCCEEDED
    # Nothing was written for any of them, and nothing escaped the root.
    names = sorted(p.name for p in daemon.root.iterdir())
    assert names == [".autoquant", "after-errors", "base-model", "done", "foreign", "link"], names
    assert list((daemon.root.parent / "outside").iterdir()) == []
    assert (daemon.root / "foreign" / "notes.txt").read_text() == "someone else's directory"
    assert TOKEN not in daemon.log()


@pytest.mark.parametrize("metadata", [None, [("authorization", "Bearer wrong")], [("authorization", TOKEN)],
                                      [("authorization", f"Basic {TOKEN}")]],
                         ids=["missing", "wrong", "no-bearer-prefix", "basic"])
def test_token_is_required_on_every_rpc(daemon, metadata):
    for method, request in [("GetServerInfo", pb.GetServerInfoRequest()),
                            ("ListJobs", pb.ListJobsRequest()),
                            ("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("unauth", coverage=0.5))),
                            ("StreamLogs", pb.StreamLogsRequest(job_id="x"))]:
        got, message = call_code(daemon, method, request, metadata=metadata or [])
        assert got == C.UNAUTHENTICATED, (method, got, message)
        assert "token" in message.lower() and TOKEN not in message
    assert not (daemon.root / "unauth").exists()
    # Health and reflection stay open for probes.
    assert daemon.health() == health_pb2.HealthCheckResponse.SERVING


def test_token_from_the_environment(tmp_path, daemon_inputs):
    base, calib = daemon_inputs
    d = Daemon(base, calib, tmp_path / "models", token="env-token-42", env={"AUTOQUANT_TOKEN": "env-token-42"})
    d.start()
    try:
        assert d.call("GetServerInfo", pb.GetServerInfoRequest()).serving
        got, _ = call_code(d, "GetServerInfo", pb.GetServerInfoRequest(), metadata=[])
        assert got == C.UNAUTHENTICATED
    finally:
        assert d.stop() == 0, d.stop_report()
    assert "env-token-42" not in d.log()


def test_off_loopback_needs_a_token_or_insecure(tmp_path, daemon_inputs):
    base, calib = daemon_inputs
    d = Daemon(base, calib, tmp_path / "models")
    args = [a if a != "127.0.0.1:0" else "0.0.0.0:0" for a in d.args]
    args[args.index("--metrics") + 1] = "127.0.0.1:0"
    p = subprocess.run(args, capture_output=True, text=True, timeout=60, env=d.env)
    assert p.returncode == 2, p.stderr
    assert "--token-file" in p.stderr and "--insecure" in p.stderr and p.stdout == ""
    d.args = args + ["--insecure"]
    d.start()
    try:
        assert d.call("GetServerInfo", pb.GetServerInfoRequest()).serving
    finally:
        assert d.stop() == 0, d.stop_report()


def test_unreadable_token_file_is_a_usage_error(tmp_path, daemon_inputs):
    base, calib = daemon_inputs
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    for token_file, word in [(tmp_path / "missing-token", "missing-token"), (empty, "empty")]:
        d = Daemon(base, calib, tmp_path / "models", "--token-file", token_file)
        p = subprocess.run(d.args, capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and word in p.stderr, (p.returncode, p.stderr)


def make_certs(work: pathlib.Path):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, with openssl."""
    def sh(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=work)
    sh("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
       "-subj", "/CN=autoquant test CA")
    (work / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for who in ("server", "client"):
        sh("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj",
           f"/CN={who}")
        sh("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
           f"{who}.pem", "-days", "2", "-extfile", "san.ext")
    (work / "other").mkdir()
    sh("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other/ca.key", "-out", "other/ca.pem", "-days",
       "2", "-subj", "/CN=someone else's CA")
    sh("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "other/client.key", "-out", "other/client.csr", "-subj",
       "/CN=intruder")
    sh("x509", "-req", "-in", "other/client.csr", "-CA", "other/ca.pem", "-CAkey", "other/ca.key", "-CAcreateserial",
       "-out", "other/client.pem", "-days", "2")
    return {p.name: p.read_bytes() for p in [*work.glob("*.pem"), *work.glob("*.key")]} | {
        "other-client.pem": (work / "other/client.pem").read_bytes(),
        "other-client.key": (work / "other/client.key").read_bytes()}


def serving_over(port, creds) -> bool:
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) if creds else grpc.insecure_channel(
            f"127.0.0.1:{port}") as ch:
        try:
            info = pb_grpc.AutoQuantStub(ch).GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
            return info.serving
        except grpc.RpcError as e:
            assert e.code() == C.UNAVAILABLE, e
            return False


def test_tls_and_mutual_tls(tmp_path, daemon_inputs):
    base, calib = daemon_inputs
    certs_dir = tmp_path / "certs"
    certs_dir.mkdir()
    c = make_certs(certs_dir)
    tls_args = ["--tls-cert", certs_dir / "server.pem", "--tls-key", certs_dir / "server.key"]

    d = Daemon(base, calib, tmp_path / "tls-models", *tls_args, tls_root=c["ca.pem"]).start()
    try:
        assert serving_over(d.port, grpc.ssl_channel_credentials(root_certificates=c["ca.pem"]))
        assert not serving_over(d.port, None)  # plaintext is refused
        # A server certificate the client does not trust.
        assert not serving_over(d.port, grpc.ssl_channel_credentials(
            root_certificates=(certs_dir / "other/ca.pem").read_bytes()))
    finally:
        assert d.stop() == 0, d.stop_report()

    d = Daemon(base, calib, tmp_path / "mtls-models", *tls_args, "--tls-client-ca", certs_dir / "ca.pem",
               tls_root=c["ca.pem"], tls_client=(c["client.key"], c["client.pem"])).start()
    try:
        assert serving_over(d.port, grpc.ssl_channel_credentials(c["ca.pem"], c["client.key"], c["client.pem"]))
        assert not serving_over(d.port, grpc.ssl_channel_credentials(root_certificates=c["ca.pem"]))
        assert not serving_over(d.port, grpc.ssl_channel_credentials(c["ca.pem"], c["other-client.key"],
                                                                     c["other-client.pem"]))
    finally:
        assert d.stop() == 0, d.stop_report()

    d = Daemon(base, calib, tmp_path / "models", "--tls-cert", certs_dir / "server.pem", "--tls-key",
               certs_dir / "missing.key")
    p = subprocess.run(d.args, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--tls-key" in p.stderr, p.stderr


def test_a_full_queue_is_resource_exhausted(tmp_path, daemon_inputs, slow_calib):
    base, _ = daemon_inputs
    d = Daemon(base, slow_calib, tmp_path / "models", "--max-queued", 1).start()
    try:
        first = d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("q-1", coverage=0.5)))
        d.wait_job(first.id, states={pb.JOB_STATE_RUNNING})
        d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec("q-2", coverage=0.5)))
        got, message = call_code(d, "SubmitScheme", pb.SubmitSchemeRequest(spec=spec("q-3", coverage=0.5)))
        assert got == C.RESOURCE_EXHAUSTED and "queue is full" in message, (got, message)
        for j in d.call("ListJobs", pb.ListJobsRequest()).jobs:
            d.call("CancelJob", pb.CancelJobRequest(job_id=j.id))
    finally:
        assert d.stop() == 0, d.stop_report()

"""No request wedges the daemon and its edges follow one rule (issue 23): requests over the limits
of proto/autoquant/v1/autoquant.proto are refused at once naming the field while the daemon keeps
answering; bytes that are not the method's message get INVALID_ARGUMENT with a message; the
loopback check parses addresses; /metrics follows --listen's rules (a bare port is loopback, off
loopback only with a token or --insecure, the token on every scrape, slow clients do not stall it)."""
import base64
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest

from daemon_helpers import Daemon, stubs

pb = stubs()[0]
C = grpc.StatusCode


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_malformed_request_bytes_get_invalid_argument_with_a_message(daemon):
    identity = dict(request_serializer=None, response_deserializer=None)
    for method, raw in [("SubmitScheme", b"\xff"), ("GetStatus", b"\x0a\x02\xc3\x28"), ("ListJobs", b"\x0a\x05\xff")]:
        call = daemon.channel.unary_unary(f"/autoquant.v1.AutoQuant/{method}", **identity)
        with pytest.raises(grpc.RpcError) as e:
            call(raw, timeout=30)
        assert e.value.code() == C.INVALID_ARGUMENT, (method, e.value.code(), e.value.details())
        assert f"does not parse as autoquant.v1.{method}Request" in e.value.details(), e.value.details()
    stream = daemon.channel.unary_stream("/autoquant.v1.AutoQuant/StreamLogs", **identity)
    with pytest.raises(grpc.RpcError) as e:
        list(stream(b"\xff", timeout=30))
    assert e.value.code() == C.INVALID_ARGUMENT and "StreamLogsRequest" in e.value.details()


def test_requests_over_the_limits_are_refused_at_once_and_health_keeps_answering(daemon):
    # The attack: two requests of 40,000 patterns at once left every RPC at DEADLINE_EXCEEDED for 41 s.
    patterns = [f"*layers.{i}.mlp.*" for i in range(40000)]
    big = pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme="wedge", coverage=0.5, disabled_layers=patterns))
    results = []

    def submit():
        try:
            daemon.call("SubmitScheme", big, timeout=20)
            results.append("accepted")
        except grpc.RpcError as e:
            results.append((e.code(), e.details()))

    threads = [threading.Thread(target=submit) for _ in range(2)]
    t0 = time.time()
    for t in threads:
        t.start()
    assert daemon.health() is not None  # answers while they run (within health()'s 5 s deadline)
    for t in threads:
        t.join()
    assert time.time() - t0 < 5
    for r in results:
        assert r[0] == C.INVALID_ARGUMENT and "disabled_layers has 40000 entries; at most 4096" in r[1], r
    cases = [
        (pb.SchemeSpec(scheme="long", coverage=0.5, disabled_layers=["*" * 257]), ["disabled_layers[0]", "257", "256"]),
        (pb.SchemeSpec(scheme="m", coverage_manifest=pb.CoverageManifest(selected_layers=["k"] * 5000)),
         ["coverage_manifest.selected_layers", "5000", "4096"]),
        (pb.SchemeSpec(scheme="p", coverage=0.5, disabled_layers=["*" * 256] * 300), ["bytes of patterns", "65536"]),
        (pb.SchemeSpec(scheme="-rf", coverage=0.5), ["starts with '-'"]),
        (pb.SchemeSpec(scheme="--overwrite", coverage=0.5), ["starts with '-'"]),
    ]
    for spec, words in cases:
        with pytest.raises(grpc.RpcError) as e:
            daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=spec))
        assert e.value.code() == C.INVALID_ARGUMENT, (spec.scheme, e.value.details())
        for w in words:
            assert w in e.value.details(), (w, e.value.details())
    with pytest.raises(grpc.RpcError) as e:
        daemon.call("GetStatus", pb.GetStatusRequest(job_id="j" * 1000))
    assert e.value.code() == C.INVALID_ARGUMENT and "job_id" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        daemon.call("EvaluateScheme", pb.EvaluateSchemeRequest(scheme="-x"))
    assert e.value.code() == C.INVALID_ARGUMENT and "starts with '-'" in e.value.details()
    info = daemon.call("GetServerInfo", pb.GetServerInfoRequest())
    assert info.serving and info.queued_jobs == 0


def test_the_loopback_check_does_not_trust_names_that_begin_with_127(tmp_path, daemon_inputs):
    base, calib = daemon_inputs
    d = Daemon(base, calib, tmp_path / "models")
    args = [a if a != "127.0.0.1:0" else "127.evil.example:0" for a in d.args]
    args[args.index("--metrics") + 1] = "127.0.0.1:0"
    p = subprocess.run(args, capture_output=True, text=True, timeout=60, env=d.env)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "reachable off this machine" in p.stderr and "--token-file" in p.stderr


def scrape(address, authorization=None):
    req = urllib.request.Request(f"http://{address}/metrics")
    if authorization:
        req.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_on_a_bare_port_is_loopback_and_needs_the_token(tmp_path, daemon_inputs):
    base, calib = daemon_inputs
    token = "metrics-token-0123456789"
    (tmp_path / "token").write_text(token + "\n")
    port = free_port()
    d = Daemon(base, calib, tmp_path / "models", "--token-file", tmp_path / "token", token=token)
    d.args[d.args.index("--metrics") + 1] = str(port)
    d.start()
    try:
        address = d.call("GetServerInfo", pb.GetServerInfoRequest()).metrics_address
        assert address == f"127.0.0.1:{port}", address
        status, body = scrape(address)
        assert status == 401 and "autoquant_serving" not in body, (status, body[:200])
        assert scrape(address, "Bearer wrong")[0] == 401
        status, body = scrape(address, f"Bearer {token}")
        assert status == 200 and "autoquant_serving 1" in body
        basic = base64.b64encode(f"prometheus:{token}".encode()).decode()
        assert scrape(address, f"Basic {basic}")[0] == 200
        # Two clients that send half a request hold connections; a scrape is still answered at once.
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        for s in slow:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.2)
        t0 = time.time()
        assert scrape(address, f"Bearer {token}")[0] == 200
        assert time.time() - t0 < 2
        for s in slow:
            s.close()
    finally:
        assert d.stop() == 0, d.stop_report()
    assert token not in d.log()


def test_metrics_off_loopback_needs_a_token_or_insecure(tmp_path, daemon_inputs):
    base, calib = daemon_inputs
    d = Daemon(base, calib, tmp_path / "models")
    d.args[d.args.index("--metrics") + 1] = "0.0.0.0:0"
    p = subprocess.run(d.args, capture_output=True, text=True, timeout=60, env=d.env)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "--metrics 0.0.0.0:0" in p.stderr and "--token-file" in p.stderr and "--insecure" in p.stderr
    d.args.append("--insecure")
    d.start()
    try:
        address = d.call("GetServerInfo", pb.GetServerInfoRequest()).metrics_address
        status, body = scrape("127.0.0.1:" + address.rsplit(":", 1)[1])
        assert status == 200 and "autoquant_serving" in body
    finally:
        assert d.stop() == 0, d.stop_report()

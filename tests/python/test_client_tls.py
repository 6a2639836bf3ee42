"""Both clients over TLS: the Python client's TLS settings and the CLI's --tls-ca/--tls-cert/--tls-key
against a daemon that requires client certificates (mTLS), with certificates made by openssl."""
import json
import subprocess

import pytest

from daemon_helpers import Daemon
from test_daemon_errors import make_certs


@pytest.fixture(scope="module")
def mtls(tmp_path_factory, daemon_inputs):
    base, calib = daemon_inputs
    work = tmp_path_factory.mktemp("client-tls")
    certs = work / "certs"
    certs.mkdir()
    c = make_certs(certs)
    d = Daemon(base, calib, work / "models", "--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key",
               "--tls-client-ca", certs / "ca.pem", tls_root=c["ca.pem"],
               tls_client=(c["client.key"], c["client.pem"])).start()
    yield d, certs
    assert d.stop() == 0, d.stop_report()


def test_python_client_over_mutual_tls(mtls, client_package):
    aq = client_package[0]
    d, certs = mtls
    target = f"127.0.0.1:{d.port}"
    tls = aq.TLS(root_cert=certs / "ca.pem", client_key=certs / "client.key", client_cert=certs / "client.pem")
    with aq.Client(target, tls=tls) as client:
        assert client.server_info().serving
    with aq.Client(target, tls=aq.TLS(root_cert=certs / "ca.pem")) as client:  # no client certificate
        with pytest.raises(aq.Unavailable):
            client.server_info()
    with aq.Client(target) as client:  # plaintext
        with pytest.raises(aq.Unavailable):
            client.server_info()


def test_cli_over_mutual_tls(mtls, autoquant_bin):
    d, certs = mtls
    base = [str(autoquant_bin), "server", "info", "--server", f"127.0.0.1:{d.port}", "--json",
            "--tls-ca", str(certs / "ca.pem")]
    ok = subprocess.run(base + ["--tls-cert", str(certs / "client.pem"), "--tls-key", str(certs / "client.key")],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["serving"] is True
    refused = subprocess.run(base, capture_output=True, text=True, timeout=60)  # no client certificate
    assert refused.returncode == 3, (refused.returncode, refused.stderr)
    foreign = subprocess.run(base[:-2] + ["--tls-ca", str(certs / "other" / "ca.pem")], capture_output=True,
                             text=True, timeout=60)  # a CA that did not sign the daemon's certificate
    assert foreign.returncode == 3, (foreign.returncode, foreign.stderr)

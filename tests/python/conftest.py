"""Shared pytest fixtures for the Python tests.

`autoquant_bin`: the built `autoquant` command, from $AUTOQUANT_BUILD_DIR
(default <repo>/build). Missing binaries fail the test with a clear message;
nothing is skipped.
"""
import pathlib

import pytest

from aq_paths import BUILD_DIR


@pytest.fixture(scope="session")
def autoquant_bin() -> pathlib.Path:
    path = BUILD_DIR / "bin" / "autoquant"
    if not path.exists():
        pytest.fail(f"{path} not built: run scripts/build.sh (or set AUTOQUANT_BUILD_DIR)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def daemon_inputs(tmp_path_factory, autoquant_bin):
    """(base model dir, calibration file): the tiny preset and 16 small samples."""
    from daemon_helpers import make_tiny_inputs
    return make_tiny_inputs(autoquant_bin, tmp_path_factory.mktemp("daemon-inputs"))


@pytest.fixture(scope="session")
def slow_calib(tmp_path_factory, autoquant_bin, daemon_inputs):
    """A calibration set big enough that a job's baseline takes seconds on the CPU,
    so that a test can act while it runs."""
    import subprocess
    base, _ = daemon_inputs
    path = tmp_path_factory.mktemp("slow") / "calib.safetensors"
    subprocess.run([str(autoquant_bin), "calib", "synth", "--model", str(base), "--out", str(path), "--samples", "192",
                    "--seq-len", "256", "--images-per-sample", "1", "--image-size", "112x112", "--seed", "2"],
                   check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def client_package(tmp_path_factory):
    """(the autoquant_client package built from client/python into a temporary directory, that
    directory): the working tree's sources and build hook, whatever the venv has installed. Built
    once per session, so that every test file imports the same copy."""
    import subprocess
    import sys
    from aq_paths import REPO
    target = tmp_path_factory.mktemp("autoquant-client")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(REPO / "client" / "python")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "autoquant_client" / "_proto" / "autoquant_pb2_grpc.py").exists()
    sys.path.insert(0, str(target))
    import autoquant_client
    assert pathlib.Path(autoquant_client.__file__).is_relative_to(target), autoquant_client.__file__
    return autoquant_client, target


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, daemon_inputs):
    """An autoquantd on the tiny model, one per test module (a module may define its own), stopped
    with SIGTERM at the end, which must exit 0."""
    from daemon_helpers import Daemon
    base, calib = daemon_inputs
    d = Daemon(base, calib, tmp_path_factory.mktemp("daemon") / "models").start()
    yield d
    assert d.stop() == 0, d.stop_report()

"""Running autoquantd in tests: stubs generated from proto/ at test time (none
checked in), a tiny model and calibration set made by our CLI, and a Daemon
handle that starts the binary on a loopback port, waits for grpc.health.v1
SERVING, and always stops it."""
import importlib
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aq_paths import BUILD_DIR, REPO

PROTO_DIR = REPO / "proto"
# The daemon's --device in tests: cpu (CI), or cuda on the GPU machine (scripts/gpu/run.sh pytest).
TEST_DEVICE = os.environ.get("AUTOQUANT_TEST_DEVICE", "cpu")
_STUBS = None


def stubs():
    """(autoquant_pb2, autoquant_pb2_grpc), generated once per session with grpc_tools.protoc."""
    global _STUBS
    if _STUBS is None:
        from grpc_tools import protoc
        import grpc_tools
        out = pathlib.Path(tempfile.mkdtemp(prefix="aq-stubs-"))
        well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
        rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={out}",
                          f"--grpc_python_out={out}", str(PROTO_DIR / "autoquant/v1/autoquant.proto")])
        assert rc == 0, "protoc failed on proto/autoquant/v1/autoquant.proto"
        sys.path.insert(0, str(out))
        _STUBS = (importlib.import_module("autoquant.v1.autoquant_pb2"),
                  importlib.import_module("autoquant.v1.autoquant_pb2_grpc"))
    return _STUBS


def make_tiny_inputs(autoquant_bin, work: pathlib.Path, samples=16, seq_len=96, image="56x56"):
    base, calib = work / "base", work / "calib.safetensors"
    if not base.exists():
        subprocess.run([str(autoquant_bin), "model", "init", "--preset", "tiny", "--out", str(base), "--seed", "0"],
                       check=True, capture_output=True)
    if not calib.exists():
        subprocess.run([str(autoquant_bin), "calib", "synth", "--model", str(base), "--out", str(calib),
                        "--samples", str(samples), "--seq-len", str(seq_len), "--images-per-sample", "1",
                        "--image-size", image, "--seed", "1"], check=True, capture_output=True)
    return base, calib


class Daemon:
    """One autoquantd process on 127.0.0.1 with free ports for gRPC and /metrics."""

    def __init__(self, model, calib, root, *extra, token=None, env=None, tls_root=None, tls_client=None):
        """tls_root: the CA (PEM bytes) to trust, for a daemon started with --tls-cert;
        tls_client: (key, cert) PEM bytes to present, for --tls-client-ca."""
        self.args = [str(BUILD_DIR / "bin" / "autoquantd"), "--model", str(model), "--calib", str(calib),
                     "--models-root", str(root), "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
                     "--device", TEST_DEVICE, *map(str, extra)]
        self.root = pathlib.Path(root)
        self.token = token
        self.tls_root, self.tls_client = tls_root, tls_client
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.port = None
        self.channel = None
        self.log_path = self.root.parent / f"autoquantd-{time.time_ns()}.log"

    def start(self, wait_serving=True, timeout=120):
        self.root.mkdir(mode=0o755, parents=True, exist_ok=True)  # never writable by others, whatever the umask
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._log, text=True, env=self.env)
        try:
            line = self.proc.stdout.readline().strip()
            if not line.isdigit():
                raise AssertionError(f"autoquantd's first stdout line is {line!r}, not its port: {self.log()}")
            self.port = int(line)
            if self.tls_root:
                key, cert = self.tls_client or (None, None)
                creds = grpc.ssl_channel_credentials(self.tls_root, key, cert)
                self.channel = grpc.secure_channel(f"127.0.0.1:{self.port}", creds)
            else:
                self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
            if wait_serving:
                self.wait_serving(timeout)
        except BaseException:
            # Never leave a daemon behind a failed start: the caller has no handle to stop it.
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=30)
            self._close()
            raise
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def health(self, service="") -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    def wait_serving(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"autoquantd exited with {self.proc.returncode}: {self.log()}"
            try:
                if self.health() == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"autoquantd not SERVING after {timeout} s: {self.log()}")

    def stub(self):
        return stubs()[1].AutoQuantStub(self.channel)

    def metadata(self):
        return [("authorization", f"Bearer {self.token}")] if self.token else None

    def call(self, method, request, **kw):
        kw.setdefault("timeout", 30)
        if self.token and "metadata" not in kw:
            kw["metadata"] = self.metadata()
        return getattr(self.stub(), method)(request, **kw)

    def wait_job(self, job_id, timeout=300, states=None):
        pb = stubs()[0]
        terminal = states or {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.call("GetStatus", pb.GetStatusRequest(job_id=job_id))
            if job.state in terminal:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} not in {terminal} after {timeout} s: {job}")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close()

    def stop(self, timeout=60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            self._close()
            return self.proc.returncode if self.proc else 0
        self.masks = thread_signal_masks(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self._close()
        return rc

    def stop_report(self) -> str:
        """What to show when stop() did not return 0: the log and, from just before the
        SIGTERM, which threads could take it and whether a handler was installed."""
        return f"{self.log()}\nthreads before SIGTERM:\n{getattr(self, 'masks', '')}"

    def _close(self):
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        if getattr(self, "_log", None):
            self._log.close()


def staging_leftovers(root: pathlib.Path):
    return sorted(p.name for p in pathlib.Path(root).iterdir() if ".tmp-" in p.name)


def thread_signal_masks(pid: int) -> str:
    """One line per thread: name, whether SIGTERM is blocked, whether it is caught."""
    bit = 1 << (signal.SIGTERM - 1)
    lines = []
    for task in sorted(pathlib.Path(f"/proc/{pid}/task").glob("*")):
        try:
            fields = dict(l.split(":\t", 1) for l in (task / "status").read_text().splitlines() if ":\t" in l)
        except OSError:
            continue
        blocked = int(fields.get("SigBlk", "0"), 16) & bit
        caught = int(fields.get("SigCgt", "0"), 16) & bit
        lines.append(f"{task.name} {fields.get('Name', '?').strip()}: SIGTERM "
                     f"{'blocked' if blocked else 'open'}, {'caught' if caught else 'default action'}")
    return "\n".join(lines)


def free_port() -> int:
    """A loopback port nothing listens on now (for a process that must be given a fixed one)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def small_tmpfs(path: pathlib.Path, size: str):
    """A tmpfs of `size` (e.g. "8m") mounted at `path` for the block, so that filling it fills nothing
    else; unmounted after (lazily if still busy). Needs root, as the CI machine runs the tests."""
    import pytest
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for a full-disk test (needs root): {r.stderr.strip()}", pytrace=False)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def wait_stopped(d, timeout=300):
    """Waits until the daemon `d` has stopped itself (state T: a crash point's SIGSTOP)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert d.proc.poll() is None, f"autoquantd exited with {d.proc.returncode}: {d.log()}"
        stat = pathlib.Path(f"/proc/{d.proc.pid}/stat").read_text()
        if stat[stat.rfind(")") + 2] == "T":
            return
        time.sleep(0.05)
    raise AssertionError(f"autoquantd never reached its pause point: {d.log()}")

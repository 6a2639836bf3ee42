#!/usr/bin/env python3
"""autoquantd end-to-end benchmark: one SubmitSweep of ten coverage points.

What it measures (every time relative to the daemon's process start, `t`):
  1. raw read of the model's *.safetensors and the calibration file (all
     bytes, 16 MiB reads; nothing is dropped from the page cache first: the
     fraction already resident, from mincore(2), is recorded instead);
  2. autoquantd start: time to the port line on stdout and to health SERVING
     (grpc.health.v1 when grpcio-health-checking is importable, else
     GetServerInfo().serving), and the daemon's own model_load_seconds;
  3. one SubmitSweep (points top10..top100 = coverage 0.1..1.0, default
     format); every job followed by GetStatus every 0.5 s and StreamLogs
     (phase timeline, "<phase> done in N s" lines), with its result metrics
     (job_seconds, export_seconds, export_bytes, baseline_seconds) and
     baseline_reused; wall time from submit to the last SUCCEEDED;
  4. /metrics scraped every 2 s (first, mid-run and last scrape saved),
     autoquant_device_memory_peak_bytes and autoquant_job_progress_ratio
     extracted; nvidia-smi memory.used every second when nvidia-smi exists;
  5. GetServerInfo at the end; SIGTERM and the daemon's exit code (killed
     after --stop-timeout); then `autoquant diff <ten schemes> --json`.

Writes <out>/daemon-sweep.json (rewritten as the run goes, `complete` false
until the end), <out>/daemon-sweep.md, <out>/daemon.log (the daemon's stdout
and stderr) and <out>/metrics-{first,mid,last}.prom. Exit status: 0 when all
jobs SUCCEEDED, diff passed and the daemon exited 0; 1 otherwise; 2 for a
setup problem (missing grpcio-tools, bad arguments, too little disk).

The gRPC stubs are generated at run time from proto/ with grpc_tools.protoc
into a temporary directory (needs grpcio and grpcio-tools).

Usage (see bench/daemon_sweep/README.md; on the GPU machine through
scripts/gpu/verify_daemon.sh):
  python bench/daemon_sweep/sweep_bench.py --autoquantd build/bin/autoquantd \
      --autoquant build/bin/autoquant --model DIR --calib FILE --work DIR --out DIR \
      [--batch-size 4] [--device cuda] [--points top10,top20,...,top100]
"""
import argparse
import ctypes
import datetime
import json
import mmap
import os
import pathlib
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
SERVICE = "autoquant.v1.AutoQuant"
DEFAULT_POINTS = ",".join(f"top{p}" for p in range(10, 101, 10))


def log(*a):
    print(f"[sweep {time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


class SetupError(Exception):
    """A problem before anything is measured (exit 2)."""


class Interrupted(Exception):
    """SIGTERM / SIGHUP to this script: stop the daemon, write what was measured, exit 1."""


# --------------------------------------------------------------------------- stubs


def load_stubs(tmp: pathlib.Path):
    """Generates autoquant_pb2 / _grpc from proto/ and imports them (and health, if present)."""
    try:
        import grpc  # noqa: F401
    except ImportError as e:
        raise SetupError(f"grpcio is not importable with {sys.executable} ({e}); install grpcio and grpcio-tools")
    try:
        from grpc_tools import protoc
    except ImportError as e:
        raise SetupError(
            f"grpcio-tools is not importable with {sys.executable} ({e}). The gRPC stubs are generated at run "
            "time from proto/ with grpc_tools.protoc: `pip install grpcio-tools` (or, on the GPU machine, carry "
            "its wheels in .gpu-deps/grpc-wheels; see bench/daemon_sweep/README.md)")
    import importlib.resources
    include = importlib.resources.files("grpc_tools") / "_proto"
    proto = "autoquant/v1/autoquant.proto"
    if not (PROTO_ROOT / proto).is_file():
        raise SetupError(f"{PROTO_ROOT / proto} not found")
    rc = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={tmp}",
                      f"--grpc_python_out={tmp}", proto])
    if rc != 0:
        raise SetupError(f"grpc_tools.protoc failed (rc {rc}) on {PROTO_ROOT / proto}")
    for d in (tmp / "autoquant", tmp / "autoquant" / "v1"):
        (d / "__init__.py").touch()
    sys.path.insert(0, str(tmp))
    try:
        from autoquant.v1 import autoquant_pb2 as pb
        from autoquant.v1 import autoquant_pb2_grpc as pb_grpc
    except Exception as e:  # protobuf runtime older than the generated code, typically
        import google.protobuf
        raise SetupError(f"cannot import the generated stubs ({type(e).__name__}: {e}); protobuf runtime "
                         f"{google.protobuf.__version__}: install a protobuf matching grpcio-tools")
    health = None
    try:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        health = (health_pb2, health_pb2_grpc)
    except ImportError:
        pass
    return pb, pb_grpc, health


# --------------------------------------------------------------------------- raw reads


def resident_fraction(path: pathlib.Path):
    """Fraction of the file's pages in the page cache (mincore), or None if unknown."""
    try:
        size = path.stat().st_size
        if size == 0:
            return 1.0
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr is None or addr == ctypes.c_void_p(-1).value:
                return None
            try:
                pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
                vec = (ctypes.c_ubyte * pages)()
                if libc.mincore(addr, size, vec) != 0:
                    return None
                data = bytes(vec)
                return (pages - data.count(0)) / pages
            finally:
                libc.munmap(addr, size)
        finally:
            os.close(fd)
    except Exception:
        return None


def cache_state(fraction):
    if fraction is None:
        return "unknown"
    return "warm" if fraction >= 0.99 else "cold" if fraction <= 0.01 else "partial"


def timed_read(paths):
    buf = bytearray(16 << 20)
    view = memoryview(buf)
    files, total_bytes, total_s, resident_bytes = [], 0, 0.0, 0.0
    known = True
    for p in paths:
        frac = resident_fraction(p)
        t0 = time.perf_counter()
        n = 0
        with open(p, "rb", buffering=0) as f:
            while True:
                k = f.readinto(view)
                if not k:
                    break
                n += k
        s = time.perf_counter() - t0
        files.append({"path": str(p), "bytes": n, "seconds": round(s, 4), "resident_before": frac,
                      "page_cache": cache_state(frac)})
        total_bytes += n
        total_s += s
        if frac is None:
            known = False
        else:
            resident_bytes += frac * n
    frac_all = (resident_bytes / total_bytes if total_bytes else 1.0) if known else None
    return {"files": files, "bytes": total_bytes, "seconds": round(total_s, 4),
            "gb_per_s": round(total_bytes / total_s / 1e9, 3) if total_s > 0 else None,
            "resident_fraction_before": None if frac_all is None else round(frac_all, 4),
            "page_cache": cache_state(frac_all)}


# --------------------------------------------------------------------------- disk estimate

LM_LINEAR = re.compile(r"(^|\.)layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$")
ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8}


def safetensors_header(path: pathlib.Path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))


def estimate_scheme_bytes(model_files, coverages):
    """Rough bytes of the schemes: the base's size less FP8's saving on the selected share of LM Linears."""
    total = lin_saved = 0
    for p in model_files:
        total += p.stat().st_size
        try:
            hdr = safetensors_header(p)
        except Exception:
            continue
        for name, t in hdr.items():
            if name == "__metadata__" or "visual" in name or not LM_LINEAR.search(name):
                continue
            nbytes = t["data_offsets"][1] - t["data_offsets"][0]
            size = ITEMSIZE.get(t.get("dtype"), 2)
            lin_saved += nbytes * (1 - 1 / size)
    return int(sum(total - c * lin_saved for c in coverages)), total, int(lin_saved)


# --------------------------------------------------------------------------- helpers


def ts(t):
    """protobuf Timestamp -> epoch seconds, None when unset."""
    return t.seconds + t.nanos / 1e9 if (t.seconds or t.nanos) else None


def iso(epoch):
    return None if epoch is None else datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat()


def parse_points(spec):
    pts = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        m = re.fullmatch(r"top(\d+(?:\.\d+)?)", item)
        if m:
            pts.append((item, float(m.group(1)) / 100))
        elif "=" in item:
            name, cov = item.split("=", 1)
            pts.append((name, float(cov)))
        else:
            raise SetupError(f"--points: '{item}' is neither topNN (NN% coverage) nor NAME=COVERAGE")
    if len({n for n, _ in pts}) != len(pts):
        raise SetupError("--points: scheme names must be distinct")
    for n, c in pts:
        if not 0 < c <= 1:
            raise SetupError(f"--points: {n}: coverage {c} is outside (0, 1]")
    return pts


PROM_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
PROM_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prom(text):
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = PROM_LINE.match(line)
        if not m:
            continue
        try:
            v = float(m.group(3))
        except ValueError:
            continue
        out.append((m.group(1), dict(PROM_LABEL.findall(m.group(2) or "")), v))
    return out


# --------------------------------------------------------------------------- daemon process


class Daemon:
    def __init__(self, cmd, log_path: pathlib.Path):
        self.cmd = cmd
        self.log_file = open(log_path, "w", buffering=1)
        self.log_lock = threading.Lock()
        self.port_event = threading.Event()
        self.port = None
        self.port_line_index = None
        self.first_lines = []
        self.t0 = time.monotonic()
        self.wall0 = time.time()

        # The daemon gets SIGTERM if this process dies without stopping it (PR_SET_PDEATHSIG). The
        # function is looked up here, so the forked child only makes the system call.
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except Exception:
            prctl = None

        def pdeathsig():
            if prctl is not None:
                prctl(1, int(signal.SIGTERM))

        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     preexec_fn=pdeathsig)
        self.readers = [threading.Thread(target=self._read, args=(self.proc.stdout, "out", True), daemon=True),
                        threading.Thread(target=self._read, args=(self.proc.stderr, "err", False), daemon=True)]
        for r in self.readers:
            r.start()

    def rel(self, t=None):
        return round((time.monotonic() if t is None else t) - self.t0, 3)

    def _read(self, stream, tag, is_stdout):
        idx = 0
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if is_stdout and self.port is None:
                if len(self.first_lines) < 20:
                    self.first_lines.append(line)
                if re.fullmatch(r"\d+", line.strip()):
                    self.port = int(line.strip())
                    self.port_line_index = idx
                    self.port_seconds = self.rel()
                    self.port_event.set()
                idx += 1
            with self.log_lock:
                self.log_file.write(f"[{self.rel():9.3f} {tag}] {line}\n")
        if is_stdout:
            self.port_event.set()  # EOF: wake the waiter

    def wait_port(self, timeout):
        self.port_event.wait(timeout)
        if self.port is None:  # stdout closed (or the wait timed out): let an exiting daemon finish exiting
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        return self.port

    def stop(self, timeout):
        rec = {"signal": "SIGTERM", "killed": False}
        if self.proc.poll() is not None:
            rec["already_exited"] = True
        else:
            t = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"autoquantd did not exit {timeout} s after SIGTERM: killing it")
                self.proc.kill()
                self.proc.wait()
                rec["killed"] = True
            rec["stop_seconds"] = round(time.monotonic() - t, 3)
        rec["exit_code"] = self.proc.returncode
        for r in self.readers:
            r.join(5)
        with self.log_lock:
            self.log_file.close()
        return rec


# --------------------------------------------------------------------------- samplers


class Sampler(threading.Thread):
    def __init__(self, interval, fn):
        super().__init__(daemon=True)
        self.interval, self.fn = interval, fn
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            t = time.monotonic()
            try:
                self.fn()
            except Exception:
                pass
            self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def stop(self):
        self.stop_event.set()
        self.join(15)


class MetricsScraper:
    def __init__(self, address, daemon: Daemon):
        self.url = f"http://{address}/metrics"
        self.daemon = daemon
        self.scrapes = []  # (t, text)
        self.errors = 0
        self.lock = threading.Lock()

    def scrape(self):
        t = self.daemon.rel()
        try:
            with urllib.request.urlopen(self.url, timeout=5) as r:
                text = r.read().decode("utf-8", "replace")
        except Exception:
            with self.lock:
                self.errors += 1
            return None
        with self.lock:
            self.scrapes.append((t, text))
        return text


class SmiSampler:
    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.path = shutil.which("nvidia-smi")
        self.samples = []  # (t, [MiB per GPU])

    def sample(self):
        t = self.daemon.rel()
        p = subprocess.run([self.path, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=10)
        if p.returncode == 0:
            vals = [float(x) for x in p.stdout.split() if x.strip()]
            if vals:
                self.samples.append((t, vals))


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args):
        self.a = args
        self.out = pathlib.Path(args.out)
        self.R = {"schema": "autoquant.daemon-sweep/1", "complete": False, "ok": False, "failures": [],
                  "started_at": iso(time.time()), "host": socket.gethostname(),
                  "python": sys.version.split()[0], "platform": platform.platform()}
        self.daemon = None
        self.scraper = None
        self.smi = None
        self.samplers = []
        self.jobs = {}  # id -> record
        self.logs = {}  # id -> list of lines
        self.log_threads = []
        self.stop_streams = threading.Event()
        self.channel = None
        self.stopped = False

    def fail(self, msg):
        log("FAIL:", msg)
        self.R["failures"].append(msg)

    # ---- output

    def write(self):
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "daemon-sweep.json.tmp"
        tmp.write_text(json.dumps(self.R, indent=1, default=str) + "\n")
        tmp.replace(self.out / "daemon-sweep.json")

    def write_md(self):
        R = self.R
        L = ["# autoquantd sweep benchmark", ""]
        info = R.get("server_info_end") or {}
        d = R.get("daemon", {})
        s = R.get("sweep", {})
        L.append(f"- host {R.get('host')}, device {info.get('device', R.get('args', {}).get('device'))}, "
                 f"dtype {info.get('dtype', '?')}, batch size {R.get('args', {}).get('batch_size')}, "
                 f"autoquantd {R.get('autoquantd_version', '?')}")
        for k in ("model", "calib"):
            rr = R.get("raw_read", {}).get(k)
            if rr:
                L.append(f"- raw read {k}: {rr['bytes'] / 1e9:.3f} GB in {rr['seconds']:.2f} s "
                         f"({rr['gb_per_s']} GB/s), page cache {rr['page_cache']} before the read")
        if d:
            L.append(f"- daemon: port after {d.get('seconds_to_port')} s, SERVING after "
                     f"{d.get('seconds_to_serving')} s (model_load_seconds {d.get('model_load_seconds')}, "
                     f"health via {d.get('health_via')}); exit code {d.get('exit_code')}"
                     f"{' (killed)' if d.get('killed') else ''}, {d.get('stop_seconds', '?')} s after SIGTERM")
        if s:
            L.append(f"- sweep of {s.get('points')} points: submit to last SUCCEEDED "
                     f"**{s.get('wall_seconds_to_last_succeeded')} s**; states {s.get('states')}; baseline "
                     f"computed {s.get('baseline_computed')}x ({s.get('baseline_seconds')} s), reused "
                     f"{s.get('baseline_reused')}x; sum of job seconds {s.get('sum_job_seconds')}, of export "
                     f"seconds {s.get('sum_export_seconds')}, export {s.get('sum_export_gb')} GB")
        pk = R.get("device_memory", {})
        if pk:
            def gb(x):
                return "?" if x is None else f"{x / 1e9:.3f} GB"
            L.append(f"- device memory peak reserved: {gb(pk.get('peak_bytes_server_info'))} (GetServerInfo), "
                     f"{gb(pk.get('peak_bytes_metrics'))} (/metrics); nvidia-smi peak "
                     + (f"{pk['nvidia_smi_peak_mib']} MiB (whole GPU, incl. context)" if pk.get('nvidia_smi_peak_mib')
                        else "n/a"))
        df = R.get("diff")
        if df:
            L.append(f"- `autoquant diff` of the schemes: rc {df.get('rc')} in {df.get('seconds')} s")
        if R.get("failures"):
            L.append(f"- **failures**: {'; '.join(R['failures'])}")
        L += ["", "| scheme | coverage | state | groups quantized | effective bits | job s | export s | export GB "
              "| baseline |", "|---|---|---|---|---|---|---|---|---|"]
        for j in R.get("jobs", []):
            res = j.get("result") or {}
            m = res.get("metrics") or {}

            def f(x, p):
                return "" if x is None else f"{x:.{p}f}"
            L.append(f"| {j['scheme']} | {j.get('coverage')} | {str(j.get('state')).removeprefix('JOB_STATE_')} | "
                     f"{res.get('groups_quantized', '')}/{res.get('groups_total', '')} | "
                     f"{f(res.get('effective_bits'), 4)} | {f(m.get('job_seconds'), 2)} | "
                     f"{f(m.get('export_seconds'), 2)} | "
                     f"{f(m['export_bytes'] / 1e9 if 'export_bytes' in m else None, 4)} | "
                     f"{'' if not res else ('reused' if j.get('baseline_reused') else 'computed')} |")
        (self.out / "daemon-sweep.md").write_text("\n".join(L) + "\n")

    # ---- steps

    def run(self):
        a = self.a
        self.out.mkdir(parents=True, exist_ok=True)
        points = parse_points(a.points)
        for name in ("autoquantd", "autoquant"):
            p = pathlib.Path(getattr(a, name))
            if not (p.is_file() and os.access(p, os.X_OK)):
                raise SetupError(f"--{name} {p}: not an executable file")
        model = pathlib.Path(a.model)
        model_files = sorted(model.glob("*.safetensors"))
        if not model_files:
            raise SetupError(f"--model {model}: no *.safetensors files")
        calib = pathlib.Path(a.calib)
        if not calib.is_file():
            raise SetupError(f"--calib {calib}: not a file")
        work = pathlib.Path(a.work).resolve()
        root = work / "models"
        self.R["args"] = {k: v for k, v in vars(a).items()}
        self.R["points"] = [{"scheme": n, "coverage": c} for n, c in points]

        tmp = pathlib.Path(tempfile.mkdtemp(prefix="aq-sweep-stubs-"))
        try:
            pb, pb_grpc, health = load_stubs(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        import grpc
        import google.protobuf
        from google.protobuf.json_format import MessageToDict
        self.pb, self.MessageToDict = pb, MessageToDict
        self.R["grpcio"] = grpc.__version__
        self.R["protobuf"] = google.protobuf.__version__
        v = subprocess.run([a.autoquantd, "--version"], capture_output=True, text=True, timeout=60)
        self.R["autoquantd_version"] = (v.stdout or v.stderr).strip()

        # Fresh models root (and with it a fresh job store and baseline cache).
        if root.exists():
            log(f"removing the previous models root {root}")
            shutil.rmtree(root)
        root.mkdir(parents=True)
        est, base_bytes, saved = estimate_scheme_bytes(model_files, [c for _, c in points])
        free = shutil.disk_usage(root).free
        self.R["disk"] = {"models_root": str(root), "free_bytes": free, "estimated_scheme_bytes": est,
                          "base_safetensors_bytes": base_bytes}
        log(f"disk: {free / 1e9:.1f} GB free under {root}; the {len(points)} schemes need about {est / 1e9:.1f} GB")
        if free < est and not a.skip_disk_check:
            raise SetupError(f"{root}: {free / 1e9:.1f} GB free, the {len(points)} schemes need about "
                             f"{est / 1e9:.1f} GB; use a --work on a larger filesystem (or --skip-disk-check)")
        if free < 1.1 * est:
            log("WARNING: free space is within 10% of the estimate")

        # 1. Raw reads.
        self.R["raw_read"] = {"model": timed_read(model_files), "calib": timed_read([calib])}
        for k, rr in self.R["raw_read"].items():
            log(f"raw read {k}: {rr['bytes'] / 1e9:.3f} GB in {rr['seconds']:.2f} s ({rr['gb_per_s']} GB/s), "
                f"page cache {rr['page_cache']} before")
        self.write()

        # 2. Start the daemon.
        cmd = [a.autoquantd, "--model", str(model), "--calib", str(calib), "--models-root", str(root),
               "--listen", "127.0.0.1:0", "--metrics", a.metrics, "--device", a.device,
               "--batch-size", str(a.batch_size)] + a.daemon_arg
        log("+", " ".join(cmd))
        self.daemon = dm = Daemon(cmd, self.out / "daemon.log")
        port = dm.wait_port(a.port_timeout)
        if port is None and dm.proc.poll() is not None and a.metrics:
            # The /metrics endpoint failing to start must not cost the whole run: say so, then measure the
            # rest without it.
            dm.proc.wait()
            for r in dm.readers:
                r.join(2)
            dm.log_file.close()
            text = (self.out / "daemon.log").read_text()
            m = re.search(r"^.*error: metrics:.*$", text, re.M)
            if m:
                self.fail(f"autoquantd could not start /metrics (exit code {dm.proc.returncode}): "
                          f"{m.group(0).split('error: ', 1)[-1]}; measuring the rest without --metrics")
                (self.out / "daemon-metrics-failure.log").write_text(text)
                i = cmd.index("--metrics")
                cmd[i + 1] = ""
                log("+", " ".join(cmd))
                self.daemon = dm = Daemon(cmd, self.out / "daemon.log")
                port = dm.wait_port(a.port_timeout)
        D = self.R["daemon"] = {"cmd": cmd, "pid": dm.proc.pid, "started_at": iso(dm.wall0)}
        if self.smi is None and shutil.which("nvidia-smi"):
            self.smi = SmiSampler(dm)
            self.samplers.append(Sampler(1.0, self.smi.sample))
            self.samplers[-1].start()
        if port is None:
            if dm.proc.poll() is not None:
                self.check_alive()  # raises, with the end of the daemon's log
            rc = dm.proc.poll()
            raise RuntimeError(f"autoquantd printed no port within {a.port_timeout} s (exit code {rc}); first "
                               f"stdout lines {dm.first_lines}; see {self.out / 'daemon.log'}")
        D["port"] = port
        D["seconds_to_port"] = dm.port_seconds
        if dm.port_line_index != 0:
            self.R.setdefault("warnings", []).append(
                f"the port was stdout line {dm.port_line_index + 1}, not the first: {dm.first_lines[:5]}")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = stub = pb_grpc.AutoQuantStub(self.channel)

        # Metrics address (GetServerInfo answers while the model loads), then wait for SERVING.
        deadline = time.monotonic() + a.load_timeout
        info = None
        while info is None:
            self.check_alive()
            try:
                info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5)
            except grpc.RpcError as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"GetServerInfo kept failing: {e.code()} {e.details()}")
                time.sleep(0.1)
        D["metrics_address"] = info.metrics_address
        if info.metrics_address:
            self.scraper = MetricsScraper(info.metrics_address, dm)
            self.samplers.append(Sampler(2.0, self.scraper.scrape))
            self.samplers[-1].start()
        elif cmd[cmd.index("--metrics") + 1]:
            self.fail(f"GetServerInfo returned no metrics_address (started with --metrics {a.metrics})")

        hstub = None
        if health is not None:
            health_pb2, health_pb2_grpc = health
            hstub = health_pb2_grpc.HealthStub(self.channel)
            D["health_via"] = "grpc.health.v1.Health/Check"
        else:
            D["health_via"] = "GetServerInfo.serving (grpcio-health-checking not importable)"
        statuses = []
        while True:
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"not SERVING {a.load_timeout} s after start (health statuses seen: {statuses})")
            try:
                if hstub is not None:
                    st = hstub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status
                    name = health_pb2.HealthCheckResponse.ServingStatus.Name(st)
                    serving = st == health_pb2.HealthCheckResponse.SERVING
                else:
                    serving = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5).serving
                    name = "SERVING" if serving else "NOT_SERVING"
            except grpc.RpcError as e:
                name, serving = f"rpc {e.code().name}", False
            if not statuses or statuses[-1][1] != name:
                statuses.append((dm.rel(), name))
            if serving:
                break
            time.sleep(0.1)
        D["seconds_to_serving"] = dm.rel()
        D["health_statuses"] = statuses
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
        D["model_load_seconds"] = round(info.model_load_seconds, 3)
        D["server_info_serving"] = MessageToDict(info, preserving_proto_field_name=True)
        log(f"SERVING after {D['seconds_to_serving']} s (model_load_seconds {info.model_load_seconds:.2f}) on "
            f"{info.device} {info.dtype}")
        self.write()

        # 3. The sweep.
        req = pb.SubmitSweepRequest(idempotency_key=f"sweep-bench-{os.getpid()}-{int(time.time())}")
        for name, cov in points:
            req.points.add(scheme=name, coverage=cov)
        t_submit_wall, t_submit = time.time(), dm.rel()
        resp = stub.SubmitSweep(req, timeout=60)
        S = self.R["sweep"] = {"sweep_id": resp.sweep_id, "points": len(points), "submitted_at": iso(t_submit_wall),
                               "submitted_t": t_submit, "submit_rpc_seconds": round(dm.rel() - t_submit, 4)}
        cov_of = dict(points)
        for j in resp.jobs:
            self.jobs[j.id] = {"id": j.id, "scheme": j.scheme, "coverage": cov_of.get(j.scheme),
                               "state": pb.JobState.Name(j.state), "queue_position_at_submit": j.queue_position,
                               "client_seen": {pb.JobState.Name(j.state): t_submit}}
            self.logs[j.id] = []
            th = threading.Thread(target=self.follow_logs, args=(j.id,), daemon=True)
            th.start()
            self.log_threads.append(th)
        log(f"submitted sweep {resp.sweep_id}: {len(resp.jobs)} jobs")
        if len(resp.jobs) != len(points):
            self.fail(f"SubmitSweep returned {len(resp.jobs)} jobs for {len(points)} points")

        terminal = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
        final = {}
        job_deadline = time.monotonic() + a.job_timeout
        last_write = time.monotonic()
        while len(final) < len(self.jobs):
            self.check_alive()
            if time.monotonic() > job_deadline:
                self.fail(f"jobs not terminal after --job-timeout {a.job_timeout} s: "
                          f"{[r['scheme'] for i, r in self.jobs.items() if i not in final]}")
                break
            for jid, rec in self.jobs.items():
                if jid in final:
                    continue
                try:
                    j = stub.GetStatus(pb.GetStatusRequest(job_id=jid), timeout=10)
                except grpc.RpcError as e:
                    rec.setdefault("status_errors", []).append(f"{e.code().name}: {e.details()}")
                    continue
                name = pb.JobState.Name(j.state)
                if name not in rec["client_seen"]:
                    rec["client_seen"][name] = dm.rel()
                    log(f"{rec['scheme']}: {name}" + (f" ({j.message})" if j.message else ""))
                rec["state"] = name
                if j.state in terminal:
                    final[jid] = j
            if time.monotonic() - last_write > 10:
                self.fill_jobs(final, t_submit_wall)
                self.write()
                last_write = time.monotonic()
            if len(final) < len(self.jobs):
                time.sleep(0.5)
        S["client_seconds_all_terminal"] = round(dm.rel() - t_submit, 3)
        self.fill_jobs(final, t_submit_wall)
        for th in self.log_threads:
            th.join(10)
        self.fill_jobs(final, t_submit_wall)  # again, with the complete logs
        self.summarize_sweep()

        # 4-5. Last scrape, server info, stop.
        if self.scraper:
            self.scraper.scrape()
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
        self.R["server_info_end"] = MessageToDict(info, preserving_proto_field_name=True)
        self.R["server_info_end"].update(  # zeros too (MessageToDict leaves out default values)
            device=info.device, dtype=info.dtype, device_memory_peak_bytes=info.device_memory_peak_bytes,
            device_memory_allocated_bytes=info.device_memory_allocated_bytes,
            device_memory_reserved_bytes=info.device_memory_reserved_bytes)
        self.write()
        self.stop_all()

        # diff of the schemes
        if a.skip_diff:
            log("diff skipped (--skip-diff)")
            return
        dirs = [(self.jobs[j.id].get("result") or {}).get("output_dir") or str(root / j.scheme) for j in resp.jobs]
        dcmd = [a.autoquant, "diff", *dirs, "--json"]
        log("+", " ".join(dcmd))
        t = time.monotonic()
        try:
            p = subprocess.run(dcmd, capture_output=True, text=True, timeout=a.diff_timeout)
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, out, err = None, e.stdout or "", f"timed out after {a.diff_timeout} s"
            out = out.decode() if isinstance(out, bytes) else out
        DF = self.R["diff"] = {"cmd": dcmd, "rc": rc, "seconds": round(time.monotonic() - t, 2)}
        try:
            DF["report"] = json.loads(out)
        except Exception:
            DF["stdout_tail"] = out[-4000:]
        DF["stderr_tail"] = (err or "")[-2000:]
        log(f"diff rc={rc} in {DF['seconds']} s")
        if rc != 0:
            self.fail(f"autoquant diff rc={rc}: {(err or out)[-300:].strip()}")

    def check_alive(self):
        rc = self.daemon.proc.poll()
        if rc is not None:
            for r in self.daemon.readers:
                r.join(2)
            try:
                tail = (self.out / "daemon.log").read_text().splitlines()[-6:]
            except OSError:
                tail = []
            raise RuntimeError(f"autoquantd exited early with code {rc}; the end of {self.out / 'daemon.log'}: "
                               + " | ".join(tail))

    def follow_logs(self, jid):
        import grpc
        pb = self.pb
        lines = self.logs[jid]
        after = 0
        for attempt in range(20):
            try:
                for ln in self.stub.StreamLogs(pb.StreamLogsRequest(job_id=jid, after_sequence=after, follow=True)):
                    after = ln.sequence
                    lines.append({"seq": ln.sequence, "time": ts(ln.time), "t": self.daemon.rel(),
                                  "level": ln.level, "phase": pb.Phase.Name(ln.phase).removeprefix("PHASE_").lower(),
                                  "progress": round(ln.progress, 4), "message": ln.message,
                                  **({"state": pb.JobState.Name(ln.state)} if ln.state else {})})
                    if ln.state:
                        return
                return
            except grpc.RpcError as e:
                if self.stop_streams.is_set():
                    return
                self.R.setdefault("warnings", []).append(f"StreamLogs {jid}: {e.code().name} {e.details()}")
                time.sleep(1)

    def fill_jobs(self, final, t_submit_wall):
        pb = self.pb
        for jid, j in final.items():
            rec = self.jobs[jid]
            created, started, finished = ts(j.created_at), ts(j.started_at), ts(j.finished_at)
            rec.update({"state": pb.JobState.Name(j.state), "message": j.message, "attempts": j.attempts,
                        "created_at": iso(created), "started_at": iso(started), "finished_at": iso(finished),
                        "started_after_submit_s": None if started is None else round(started - t_submit_wall, 3),
                        "finished_after_submit_s": None if finished is None else round(finished - t_submit_wall, 3),
                        "run_seconds": None if None in (started, finished) else round(finished - started, 3),
                        "baseline_reused": j.baseline_reused})
            if j.HasField("result"):
                r = j.result
                rec["result"] = {"output_dir": r.output_dir, "effective_bits": r.effective_bits,
                                 "groups_quantized": r.groups_quantized, "groups_total": r.groups_total,
                                 "baseline_key": r.baseline_key, "metrics": dict(r.metrics)}
            lines = self.logs.get(jid, [])
            phases, spans = [], {}
            for ln in lines:
                m = re.fullmatch(r"(\w+) done in ([0-9.]+) s", ln["message"])
                if m:
                    phases.append({"phase": m.group(1), "seconds": float(m.group(2))})
                if ln["phase"] != "unspecified" and ln["time"] is not None and started is not None:
                    sp = spans.setdefault(ln["phase"], [ln["time"] - started, ln["time"] - started])
                    sp[1] = ln["time"] - started
            rec["phases"] = phases
            rec["phase_spans_s"] = {k: [round(v[0], 3), round(v[1], 3)] for k, v in spans.items()}
            rec["log"] = [[ln["seq"], None if ln["time"] is None or started is None else round(ln["time"] - started, 3),
                           ln["level"], ln["phase"], ln["progress"], ln["message"]] + ([ln["state"]] if "state" in ln
                                                                                       else [])
                          for ln in lines]
        self.R["jobs"] = list(self.jobs.values())

    def summarize_sweep(self):
        S, jobs = self.R["sweep"], self.R["jobs"]
        states = {}
        for j in jobs:
            states[j["state"]] = states.get(j["state"], 0) + 1
        S["states"] = states
        ok = [j for j in jobs if j["state"] == "JOB_STATE_SUCCEEDED"]
        S["all_succeeded"] = len(ok) == len(jobs) == S["points"]
        if not S["all_succeeded"]:
            self.fail("not every job SUCCEEDED: " + ", ".join(f"{j['scheme']} {j['state']} {j.get('message', '')}"
                                                           for j in jobs if j["state"] != "JOB_STATE_SUCCEEDED"))
        fin = [j["finished_after_submit_s"] for j in ok if j.get("finished_after_submit_s") is not None]
        S["wall_seconds_to_last_succeeded"] = max(fin) if fin else None

        def msum(key):
            vals = [(j.get("result") or {}).get("metrics", {}).get(key) for j in ok]
            vals = [v for v in vals if v is not None]
            return round(sum(vals), 3) if vals else None
        S["sum_job_seconds"] = msum("job_seconds")
        S["sum_export_seconds"] = msum("export_seconds")
        eb = msum("export_bytes")
        S["sum_export_gb"] = None if eb is None else round(eb / 1e9, 3)
        S["baseline_computed"] = sum(1 for j in ok if not j.get("baseline_reused"))
        S["baseline_reused"] = sum(1 for j in ok if j.get("baseline_reused"))
        S["baseline_seconds"] = msum("baseline_seconds")
        per_phase = {}
        for j in ok:
            for p in j.get("phases", []):
                per_phase[p["phase"]] = round(per_phase.get(p["phase"], 0) + p["seconds"], 3)
        S["sum_phase_seconds"] = per_phase
        order = sorted((j for j in ok if j.get("started_after_submit_s") is not None),
                       key=lambda j: j["started_after_submit_s"])
        S["run_order"] = [j["scheme"] for j in order]
        S["gaps_between_jobs_s"] = [round(b["started_after_submit_s"] - a["finished_after_submit_s"], 3)
                                    for a, b in zip(order, order[1:])]
        S["first_start_after_submit_s"] = order[0]["started_after_submit_s"] if order else None
        log(f"sweep: {states}; submit to last SUCCEEDED {S['wall_seconds_to_last_succeeded']} s")

    def metrics_summary(self):
        if not self.scraper:
            return
        sc = self.scraper
        with sc.lock:
            scrapes = list(sc.scrapes)
        M = self.R["metrics"] = {"url": sc.url, "interval_s": 2.0, "scrapes": len(scrapes), "errors": sc.errors}
        if not scrapes:
            self.fail("no /metrics scrape succeeded")
            return
        t_sub = self.R.get("sweep", {}).get("submitted_t")
        mid_pool = [s for s in scrapes if t_sub is not None and s[0] >= t_sub] or scrapes
        saved = {"first": scrapes[0], "mid": mid_pool[(len(mid_pool) - 1) // 2], "last": scrapes[-1]}
        M["saved"] = {}
        for k, (t, text) in saved.items():
            fn = f"metrics-{k}.prom"
            (self.out / fn).write_text(f"# scraped {self.scraper.url} at t={t} s after the daemon started\n" + text)
            M["saved"][k] = {"file": fn, "t": t}
        peak, progress, mem, jobs_g = [], [], [], []
        for t, text in scrapes:
            alloc = res = None
            js = {}
            for name, labels, v in parse_prom(text):
                if name == "autoquant_device_memory_peak_bytes":
                    peak.append([t, v])
                elif name == "autoquant_job_progress_ratio":
                    progress.append([t, labels.get("scheme"), labels.get("job_id"), v])
                elif name == "autoquant_device_memory_bytes":
                    if labels.get("kind") == "allocated":
                        alloc = v
                    elif labels.get("kind") == "reserved":
                        res = v
                elif name == "autoquant_jobs":
                    js[labels.get("state")] = v
            mem.append([t, alloc, res])
            jobs_g.append([t, js])
        M["device_memory_peak_bytes"] = peak
        M["device_memory_peak_bytes_max"] = max((v for _, v in peak), default=None)
        M["device_memory_bytes"] = {"columns": ["t", "allocated", "reserved"], "samples": mem}
        M["job_progress_ratio"] = {"columns": ["t", "scheme", "job_id", "value"], "samples": progress}
        M["jobs_by_state"] = jobs_g
        M["final"] = {(n + ("{" + ",".join(f"{k}={v}" for k, v in sorted(l.items())) + "}" if l else "")): v
                      for n, l, v in parse_prom(scrapes[-1][1])
                      if n.startswith("autoquant_") and not n.endswith("_bucket")
                      and n not in ("autoquant_job_progress_ratio", "autoquant_job_phase")}

    def stop_all(self):
        if self.stopped:
            return
        self.stopped = True
        for s in self.samplers:
            s.stop()
        self.samplers = []
        self.stop_streams.set()
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.daemon is not None and "exit_code" not in self.R.get("daemon", {}):
            log("stopping autoquantd (SIGTERM)")
            rec = self.daemon.stop(self.a.stop_timeout)
            self.R["daemon"].update(rec)
            log(f"autoquantd exit code {rec['exit_code']}" + (" (killed)" if rec["killed"] else ""))
            if rec.get("already_exited"):
                if "exited" not in " ".join(self.R["failures"]):
                    self.fail(f"autoquantd had exited (code {rec['exit_code']}) before SIGTERM")
            elif rec["exit_code"] != 0:
                self.fail(f"autoquantd exit code {rec['exit_code']} after SIGTERM"
                          + (" (killed after --stop-timeout)" if rec["killed"] else ""))
        self.metrics_summary()
        S = self.R.get("sweep")
        if S is not None and "states" not in S:  # stopped before the sweep ended: what was seen so far
            self.R["jobs"] = list(self.jobs.values())
            states = {}
            for j in self.R["jobs"]:
                states[j["state"]] = states.get(j["state"], 0) + 1
            S["states"] = states
        if self.smi and self.smi.samples:
            n = max(len(v) for _, v in self.smi.samples)
            peaks = [max((v[i] for _, v in self.smi.samples if i < len(v)), default=None) for i in range(n)]
            self.R["nvidia_smi"] = {"query": "memory.used [MiB]", "interval_s": 1.0, "peak_mib": peaks,
                                    "samples": self.smi.samples}
        elif self.smi is None:
            self.R["nvidia_smi"] = {"available": False}
        info = self.R.get("server_info_end") or {}
        dmm = {"peak_bytes_server_info": int(info["device_memory_peak_bytes"])
               if "device_memory_peak_bytes" in info else None,
               "peak_bytes_metrics": (self.R.get("metrics") or {}).get("device_memory_peak_bytes_max"),
               "nvidia_smi_peak_mib": (self.R.get("nvidia_smi") or {}).get("peak_mib")}
        self.R["device_memory"] = dmm


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--autoquantd", required=True)
    ap.add_argument("--autoquant", required=True)
    ap.add_argument("--model", required=True, help="base checkpoint directory")
    ap.add_argument("--calib", required=True, help="calibration set file")
    ap.add_argument("--work", required=True, help="work directory; the models root is <work>/models (replaced)")
    ap.add_argument("--out", required=True, help="results directory")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--points", default=DEFAULT_POINTS,
                    help="comma-separated topNN (NN%% coverage) or NAME=COVERAGE (default %(default)s)")
    ap.add_argument("--metrics", default="127.0.0.1:0",
                    help="autoquantd --metrics address (default %(default)s; empty: off, nothing scraped)")
    ap.add_argument("--port-timeout", type=float, default=60, help="seconds to wait for the port line")
    ap.add_argument("--load-timeout", type=float, default=900, help="seconds from start to SERVING")
    ap.add_argument("--job-timeout", type=float, default=3600, help="seconds from submit to all jobs terminal")
    ap.add_argument("--stop-timeout", type=float, default=120, help="seconds after SIGTERM before SIGKILL")
    ap.add_argument("--diff-timeout", type=float, default=1800)
    ap.add_argument("--skip-disk-check", action="store_true", help="run even if the schemes may not fit")
    ap.add_argument("--skip-diff", action="store_true",
                    help="do not run `autoquant diff` on the schemes (it re-hashes every scheme: minutes at 3B)")
    ap.add_argument("--daemon-arg", action="append", default=[], help="extra autoquantd argument (repeatable)")
    args = ap.parse_args()

    def on_signal(signum, frame):
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    b = Bench(args)
    rc = 1
    try:
        b.run()
        rc = 0
    except SetupError as e:
        log(f"error: {e}")
        b.R["failures"].append(str(e))
        rc = 2
    except (Exception, KeyboardInterrupt, SystemExit) as e:
        log(f"error: {type(e).__name__}: {e}")
        b.fail(f"{type(e).__name__}: {e}")
    finally:
        try:
            b.stop_all()  # no-op when already stopped
        except BaseException as e:  # noqa: BLE001 - the daemon must be stopped whatever happens
            log(f"error while stopping: {e}")
            if b.daemon is not None and b.daemon.proc.poll() is None:
                b.daemon.proc.kill()
                b.daemon.proc.wait()
        b.R["complete"] = True
        b.R["finished_at"] = iso(time.time())
        if rc == 0 and b.R["failures"]:
            rc = 1
        b.R["ok"] = rc == 0
        try:
            b.write()
            b.write_md()
        except Exception as e:
            log(f"cannot write the results: {e}")
            rc = rc or 1
    log(f"{'OK' if rc == 0 else 'FAILED'}: {args.out}/daemon-sweep.json, daemon-sweep.md" +
        ("" if rc == 0 else f"; failures: {b.R['failures']}"))
    return rc


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""autoquantd under load: many log followers and a steady GetStatus rate while a job runs.

While a job runs (a calibration set sized so that its jobs outlast the run, and --jobs
queued jobs with distinct baselines so that something is always running), the bench
  1. holds --followers concurrent StreamLogs(follow=True) streams, each on its own
     connection by default; a follower whose job ends (terminal line) follows the next job;
     every line's sequence number must be the previous one plus one, starting at 1;
  2. drives GetStatus at --rate calls/s for --duration s on an open-loop schedule (call i
     is sent at t0 + i/rate whatever the previous calls did, so a slow server cannot slow
     the offered load down); latency is measured from the send and, coordinated-omission
     free, from the scheduled time;
  3. samples the daemon's and its own CPU (utime+stime from /proc/PID/stat) and memory
     (VmRSS, VmHWM), threads and open descriptors every second, plus GetServerInfo's
     running job; per-thread CPU (by thread name) over the load window says where the
     daemon's time went (gRPC threads vs the job's compute).
At the end every follower must be current (have every line stored 1 s earlier), then the
streams are cancelled, the connections closed, the descriptors counted again (a leak shows
as descriptors or threads that stay), the jobs cancelled and the daemon stopped with
SIGTERM (exit 0 expected).

Without --server the bench starts its own autoquantd (tests/python/daemon_helpers.Daemon:
loopback, free ports) on a tiny model (`autoquant model init --preset tiny`) and a
synthetic calibration set (`autoquant calib synth`) in a temporary directory, and always
stops it. The gRPC stubs come from daemon_helpers.stubs() (generated from proto/ at run
time; needs grpcio, grpcio-tools, grpcio-health-checking).

Writes <out>/load-bench.json, <out>/load-bench.md and (own daemon) <out>/daemon.log.
Exit status: 0 when there was no error of any kind (GetStatus, followers, gaps, followers
behind, daemon exit); 1 otherwise (`failures` in the JSON says what); 2 for bad arguments.

  python bench/load/load_bench.py --out /tmp/load            # 200 followers, 1000/s, 60 s
  python bench/load/load_bench.py --followers 20 --rate 200 --duration 5 --out /tmp/load
  python bench/load/load_bench.py --server 127.0.0.1:50051 --server-pid PID --out /tmp/load
"""
import argparse
import asyncio
import collections
import json
import math
import os
import pathlib
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
TERMINAL_NAMES = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(f"[load {time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc


def proc_cpu_seconds(pid):
    """utime + stime of a whole process, in seconds."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_threads_cpu(pid):
    """{thread name: utime + stime seconds} summed over the process's threads."""
    out = collections.Counter()
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue  # the thread exited
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[name] += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def proc_status(pid):
    """VmRSS and VmHWM (MiB), thread and descriptor counts."""
    fields = dict(l.split(":", 1) for l in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in l)
    kib = lambda k: int(fields[k].split()[0]) / 1024 if k in fields else None  # noqa: E731
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = None  # another user's process
    return {"rss_mib": kib("VmRSS"), "hwm_mib": kib("VmHWM"), "threads": int(fields["Threads"]), "fds": fds}


def machine():
    model = next((l.split(":", 1)[1].strip() for l in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("model name")), platform.processor())
    mem = next(l.split(":", 1)[1].strip() for l in pathlib.Path("/proc/meminfo").read_text().splitlines()
               if l.startswith("MemTotal"))
    import grpc
    return {"nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "cpu_model": model,
            "mem_total": mem, "kernel": platform.release(), "python": platform.python_version(),
            "grpcio": grpc.__version__, "loadavg_before": pathlib.Path("/proc/loadavg").read_text().split()[:3]}


def subtract(after, before):
    return {k: round(after[k] - before.get(k, 0.0), 3) for k in after if after[k] - before.get(k, 0.0) > 0}


def percentiles(values):
    if not values:
        return None
    s = sorted(values)
    pick = lambda q: s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]  # noqa: E731
    return {"n": len(s), "min": round(s[0], 3), "mean": round(sum(s) / len(s), 3), "p50": round(pick(0.50), 3), "p90": round(pick(0.90), 3),
            "p99": round(pick(0.99), 3), "p99_9": round(pick(0.999), 3), "max": round(s[-1], 3)}


class Sampler(threading.Thread):
    """Every second: the daemon's and this process's CPU and memory, and the running job."""

    def __init__(self, pid, info):
        super().__init__(daemon=True)
        self.pid, self.info = pid, info
        self.samples, self.info_errors = [], collections.Counter()
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def sample(self):
        s = {"t": round(time.monotonic() - self.t0, 3), "client_cpu_s": proc_cpu_seconds("self"),
             "client": proc_status("self")}
        if self.pid:
            try:
                s["daemon_cpu_s"] = proc_cpu_seconds(self.pid)
                s["daemon"] = proc_status(self.pid)
            except OSError:
                pass  # gone
        try:
            s["running_job"] = self.info().running_job_id
        except Exception as e:  # noqa: BLE001 - any failure is counted, not fatal
            self.info_errors[getattr(e, "code", lambda: type(e).__name__)().__str__()] += 1
        self.samples.append(s)
        return s

    def run(self):
        next_t = time.monotonic()
        while not self.halt.is_set():
            self.sample()
            next_t += 1.0
            self.halt.wait(max(0.0, next_t - time.monotonic()))


# --------------------------------------------------------------------------- load


class Follower:
    """One StreamLogs(follow=True) client; follows the jobs in order, one stream per job."""

    def __init__(self, idx, stub, pb, job_ids):
        self.idx, self.stub, self.pb, self.job_ids = idx, stub, pb, job_ids
        self.streams = []
        self.call = None
        self.stopping = False
        self.first_line = asyncio.Event()

    async def run(self):
        import grpc
        for job_id in self.job_ids:
            rec = {"job_id": job_id, "lines": 0, "first": None, "last": 0, "gaps": [], "terminal": None,
                   "after_terminal": 0, "end": None}
            self.streams.append(rec)
            self.call = self.stub.StreamLogs(self.pb.StreamLogsRequest(job_id=job_id, follow=True))
            try:
                async for line in self.call:
                    if rec["first"] is None:
                        rec["first"] = line.sequence
                        self.first_line.set()
                    if line.sequence != rec["last"] + 1:
                        rec["gaps"].append([rec["last"], line.sequence])
                    if rec["terminal"]:
                        rec["after_terminal"] += 1
                    rec["last"] = line.sequence
                    rec["lines"] += 1
                    if line.state:
                        rec["terminal"] = self.pb.JobState.Name(line.state)
                rec["end"] = "OK"
            except asyncio.CancelledError:
                if not self.stopping:
                    raise
                rec["end"] = "stopped"
                return
            except grpc.aio.AioRpcError as e:
                rec["end"] = "stopped" if self.stopping and e.code() == grpc.StatusCode.CANCELLED else e.code().name
                rec["error_detail"] = None if rec["end"] == "stopped" else e.details()
                return
            if self.stopping:
                return

    def stop(self):
        self.stopping = True
        if self.call is not None:
            self.call.cancel()


async def drive(args, pb, pbg, target, job_ids, sampler, daemon_pid):
    import grpc
    opts = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel, as separate clients would have
    n_fconn = args.follower_connections or args.followers
    f_channels = [grpc.aio.insecure_channel(target, options=opts) for _ in range(n_fconn)]
    s_channels = [grpc.aio.insecure_channel(target, options=opts) for _ in range(args.status_connections)]
    loop = asyncio.get_running_loop()
    result = {}

    followers = [Follower(i, pbg.AutoQuantStub(f_channels[i % n_fconn]), pb, job_ids) for i in range(args.followers)]
    before_fds = sampler.sample()
    log(f"starting {args.followers} followers on {n_fconn} connections")
    t_f = loop.time()
    f_tasks = [asyncio.create_task(f.run()) for f in followers]
    ready = asyncio.gather(*(f.first_line.wait() for f in followers))
    try:
        await asyncio.wait_for(ready, timeout=60)
    except asyncio.TimeoutError:
        pass
    result["followers_ready_seconds"] = round(loop.time() - t_f, 3)
    result["followers_ready"] = sum(f.first_line.is_set() for f in followers)

    stubs = [pbg.AutoQuantStub(c) for c in s_channels]
    lat, lat_sched, lag = [], [], []
    errors, error_details = collections.Counter(), {}
    in_flight = {"now": 0, "max": 0}
    last_done = [0.0]
    pending = set()

    async def one(i, due):
        sent = loop.time()
        lag.append((sent - due) * 1e3)
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        job_id = job_ids[i % len(job_ids)]
        try:
            job = await stubs[i % len(stubs)].GetStatus(pb.GetStatusRequest(job_id=job_id), timeout=args.rpc_timeout)
            if job.id != job_id:
                errors["WRONG_JOB"] += 1
        except grpc.aio.AioRpcError as e:
            errors[e.code().name] += 1
            error_details.setdefault(e.code().name, e.details())
        else:
            done = loop.time()
            lat.append((done - sent) * 1e3)
            lat_sched.append((done - due) * 1e3)
            last_done[0] = max(last_done[0], done)
        finally:
            in_flight["now"] -= 1

    n = int(round(args.rate * args.duration))
    proc0 = {"daemon": proc_threads_cpu(daemon_pid) if daemon_pid else {}, "client": proc_threads_cpu("self")}
    cpu0 = sampler.sample()
    log(f"GetStatus at {args.rate}/s for {args.duration} s ({n} calls, open loop)")
    t0 = loop.time()
    i = 0
    while i < n:
        now = loop.time()
        due = t0 + i / args.rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while i < n and t0 + i / args.rate <= now:
            task = asyncio.create_task(one(i, t0 + i / args.rate))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
    t_issued = loop.time()
    if pending:
        await asyncio.wait(set(pending), timeout=args.rpc_timeout + 5)
    cpu1 = sampler.sample()
    proc1 = {"daemon": proc_threads_cpu(daemon_pid) if daemon_pid else {}, "client": proc_threads_cpu("self")}
    wall = max(last_done[0], t_issued) - t0
    ok = len(lat)
    result["get_status"] = {
        "target_rate": args.rate, "duration_s": args.duration, "scheduled": n, "ok": ok,
        "errors": dict(errors), "error_details": error_details,
        "issue_seconds": round(t_issued - t0, 3), "wall_seconds": round(wall, 3),
        "achieved_rate": round(ok / wall, 1) if wall > 0 else 0.0,
        "latency_ms": percentiles(lat), "latency_from_schedule_ms": percentiles(lat_sched),
        "send_lag_ms": percentiles(lag), "max_in_flight": in_flight["max"], "connections": args.status_connections}
    window = cpu1["t"] - cpu0["t"]
    result["load_window"] = {"seconds": round(window, 3),
                             "client_cores": round((cpu1["client_cpu_s"] - cpu0["client_cpu_s"]) / window, 3),
                             "client_cpu_by_thread_s": subtract(proc1["client"], proc0["client"])}
    if "daemon_cpu_s" in cpu1 and "daemon_cpu_s" in cpu0:
        result["load_window"]["daemon_cores"] = round((cpu1["daemon_cpu_s"] - cpu0["daemon_cpu_s"]) / window, 3)
        result["load_window"]["daemon_cpu_by_thread_s"] = subtract(proc1["daemon"], proc0["daemon"])

    # Every follower must have what was stored a second ago: a stalled stream shows here.
    # A follower may move on to the next job meanwhile: its stream record of now is what is checked.
    info_stub = stubs[0]
    current = [(f.idx, f.streams[-1]) for f in followers if f.streams]
    stored = {}
    for job_id in {rec["job_id"] for _, rec in current}:
        last = 0
        async for line in info_stub.StreamLogs(pb.StreamLogsRequest(job_id=job_id, follow=False),
                                               timeout=args.rpc_timeout):
            last = line.sequence
        stored[job_id] = last
    await asyncio.sleep(1.0)
    behind = [{"follower": idx, "job_id": rec["job_id"], "have": rec["last"], "stored": stored[rec["job_id"]]}
              for idx, rec in current if rec["last"] < stored[rec["job_id"]]]

    for f in followers:
        f.stop()
    await asyncio.gather(*f_tasks, return_exceptions=True)
    for c in f_channels + s_channels:
        await c.close()

    streams = [s for f in followers for s in f.streams]
    ferrors = collections.Counter(s["end"] for s in streams if s["end"] not in ("OK", "stopped"))
    lines = [sum(s["lines"] for s in f.streams) for f in followers]
    result["followers"] = {
        "count": args.followers, "connections": n_fconn, "ready": result.pop("followers_ready"),
        "ready_seconds": result.pop("followers_ready_seconds"),
        "lines_total": sum(lines), "lines_per_follower": percentiles(lines),
        "streams": len(streams),
        "streams_with_terminal_line": sum(1 for s in streams if s["terminal"]),
        "streams_ended_without_terminal_line": sum(1 for s in streams if s["end"] == "OK" and not s["terminal"]),
        "streams_not_starting_at_1": sum(1 for s in streams if s["first"] not in (None, 1)),
        "gaps": sum(len(s["gaps"]) for s in streams), "gap_examples": [
            {"job_id": s["job_id"], "gaps": s["gaps"][:5]} for s in streams if s["gaps"]][:10],
        "lines_after_terminal": sum(s["after_terminal"] for s in streams),
        "errors": dict(ferrors),
        "error_examples": [s for s in streams if s["end"] not in ("OK", "stopped")][:5],
        "behind_at_end": len(behind), "behind_examples": behind[:10],
        "jobs_followed": sorted({s["job_id"] for s in streams}, key=job_ids.index)}
    result["descriptors"] = {"before_followers": before_fds.get("daemon", {}).get("fds"),
                             "during_load": cpu1.get("daemon", {}).get("fds")}
    result["threads"] = {"before_followers": before_fds.get("daemon", {}).get("threads"),
                         "during_load": cpu1.get("daemon", {}).get("threads")}
    return result


# --------------------------------------------------------------------------- daemon and jobs


def make_inputs(args, work):
    autoquant = pathlib.Path(args.build_dir) / "bin" / "autoquant"
    base, calib = work / "base", work / "calib.safetensors"
    subprocess.run([str(autoquant), "model", "init", "--preset", "tiny", "--out", str(base), "--seed", "0"],
                   check=True, capture_output=True)
    subprocess.run([str(autoquant), "calib", "synth", "--model", str(base), "--out", str(calib),
                    "--samples", str(args.calib_samples), "--seq-len", str(args.seq_len), "--images-per-sample", "1",
                    "--image-size", args.image_size, "--seed", "2"], check=True, capture_output=True)
    return base, calib


def submit_jobs(args, pb, stub, samples):
    """--jobs schemes, each with its own baseline (distinct steps), so none is a quick cache hit."""
    jobs = []
    tag = f"load-{os.getpid()}-{time.time_ns() % 10**9}"
    for k in range(args.jobs):
        steps = max(1, samples - k)
        spec = pb.SchemeSpec(scheme=f"{tag}-{k}", coverage=0.5, calib_steps=steps, score_steps=steps)
        jobs.append(stub.SubmitScheme(pb.SubmitSchemeRequest(spec=spec), timeout=30).id)
    return jobs


def cancel_jobs(pb, stub, job_ids, timeout=30.0):
    """Cancels what is left of the bench's jobs, the last queued first, so that the worker has
    nothing to claim when the running one stops; then waits up to `timeout` s for each to be
    terminal. Returns [{id, state}] in submission order."""
    import grpc
    for j in reversed(job_ids):
        try:
            stub.CancelJob(pb.CancelJobRequest(job_id=j), timeout=30)
        except grpc.RpcError:  # already finished: FAILED_PRECONDITION
            pass
    deadline = time.monotonic() + timeout
    while True:
        states = [pb.JobState.Name(stub.GetStatus(pb.GetStatusRequest(job_id=j), timeout=30).state) for j in job_ids]
        if all(s in TERMINAL_NAMES for s in states) or time.monotonic() > deadline:
            return [{"id": j, "state": s} for j, s in zip(job_ids, states)]
        time.sleep(0.2)


def wait_running(pb, stub, job_id, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stub.GetStatus(pb.GetStatusRequest(job_id=job_id), timeout=30)
        if job.state == pb.JOB_STATE_RUNNING:
            return
        if pb.JobState.Name(job.state) in TERMINAL_NAMES:
            raise RuntimeError(f"job {job_id} ended before the load started: {job}")
        time.sleep(0.1)
    raise RuntimeError(f"job {job_id} not running after {timeout} s")


def summarize(r):
    g, f, lw = r["get_status"], r["followers"], r["load_window"]
    ms = lambda d, k: "-" if not d else f"{d[k]:.2f}"  # noqa: E731
    res = r["resources"]
    lines = [
        "# autoquantd load benchmark", "",
        f"Command: `{r['command']}`", "",
        f"Machine: {r['machine']['nproc']} CPUs ({r['machine']['cpu_model']}), {r['machine']['mem_total']}, "
        f"Linux {r['machine']['kernel']}, Python {r['machine']['python']}, grpcio {r['machine']['grpcio']}; "
        f"load average before: {' '.join(r['machine']['loadavg_before'])}.", "",
        f"Daemon: {r['daemon'].get('how')}" + ("" if "exit_code" not in r["daemon"] else
                                               f"; exit code after SIGTERM: {r['daemon']['exit_code']}") + ".", "",
        f"Result: **{'PASS' if not r['failures'] else 'FAIL'}**" +
        ("" if not r["failures"] else ": " + "; ".join(r["failures"])), "",
        "## GetStatus (open loop)", "",
        "| target /s | scheduled | ok | errors | achieved /s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {g['target_rate']} | {g['scheduled']} | {g['ok']} | {g['errors'] or 0} | {g['achieved_rate']} | "
        + " | ".join(ms(g["latency_ms"], k) for k in ("p50", "p90", "p99", "p99_9", "max")) + " |", "",
        "Latency from the send; from the scheduled time (includes the client's own lateness): p50 "
        f"{ms(g['latency_from_schedule_ms'], 'p50')}, p99 {ms(g['latency_from_schedule_ms'], 'p99')}, max "
        f"{ms(g['latency_from_schedule_ms'], 'max')} ms. Send lag behind schedule: p99 "
        f"{ms(g['send_lag_ms'], 'p99')}, max {ms(g['send_lag_ms'], 'max')} ms. Max in flight: {g['max_in_flight']}; "
        f"{g['connections']} connections.", "",
        "## Followers (StreamLogs follow=True)", "",
        f"{f['count']} followers on {f['connections']} connections, all reading from sequence 1 "
        f"({f['ready']} had their first line after {f['ready_seconds']} s); jobs followed: {len(f['jobs_followed'])}; "
        f"streams: {f['streams']} ({f['streams_with_terminal_line']} through a terminal line). "
        f"Lines received: {f['lines_total']} (per follower min {f['lines_per_follower']['min']}, "
        f"median {f['lines_per_follower']['p50']}, max {f['lines_per_follower']['max']}). Gaps: {f['gaps']}; streams not starting at 1: "
        f"{f['streams_not_starting_at_1']}; lines after a terminal line: {f['lines_after_terminal']}; ended without "
        f"terminal line: {f['streams_ended_without_terminal_line']}; errors: {f['errors'] or 0}; "
        f"behind at the end: {f['behind_at_end']}.", "",
        "## CPU and memory", "",
        f"Load window {lw['seconds']} s. Client (this Python process, one asyncio loop): "
        f"{lw['client_cores']} cores. Daemon: {lw.get('daemon_cores', '-')} cores under load, "
        f"{res.get('quiet_daemon_cores', '-')} cores with the job alone just before "
        f"({res.get('quiet_seconds', 0)} s).", "",
    ]
    if lw.get("daemon_cpu_by_thread_s"):
        lines += ["Daemon CPU seconds by thread name over the load window:", "",
                  "| thread | CPU s | cores |", "|---|---|---|"]
        for name, sec in sorted(lw["daemon_cpu_by_thread_s"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {name} | {sec:.2f} | {sec / lw['seconds']:.3f} |")
        lines.append("")
    if res.get("daemon_rss_mib"):
        d = res["daemon_rss_mib"]
        lines += [f"Daemon VmRSS: {d['start']:.1f} MiB before the followers, {d['max']:.1f} max, {d['end']:.1f} at the "
                  f"end; VmHWM {res['daemon_hwm_mib']:.1f} MiB. Threads {r['threads']}; descriptors "
                  f"{r['descriptors']}.", ""]
    jobs = ", ".join(f"{j['id']} {j['state']}" for j in r["jobs"])
    lines += [f"Jobs: {jobs}; a job running in "
              f"{res.get('running_fraction', '-')} of the samples during the load.", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--followers", type=int, default=200, help="concurrent StreamLogs(follow=True) streams")
    ap.add_argument("--follower-connections", type=int, default=0,
                    help="connections the followers share round-robin (0: one each)")
    ap.add_argument("--rate", type=float, default=1000.0, help="GetStatus calls per second (open loop)")
    ap.add_argument("--status-connections", type=int, default=4, help="connections GetStatus is spread over")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of GetStatus load")
    ap.add_argument("--quiet", type=float, default=5.0, help="seconds sampled with the job alone, before the load")
    ap.add_argument("--rpc-timeout", type=float, default=10.0, help="deadline of each GetStatus, seconds")
    ap.add_argument("--jobs", type=int, default=3, help="jobs queued (distinct baselines), so one is always running")
    ap.add_argument("--out", required=True, help="results directory")
    ap.add_argument("--server", help="HOST:PORT of a running autoquantd (else the bench starts its own)")
    ap.add_argument("--server-pid", type=int, help="with --server: its pid, for CPU and memory")
    ap.add_argument("--build-dir", default=os.environ.get("AUTOQUANT_BUILD_DIR", str(REPO / "build")))
    ap.add_argument("--device", default="cpu", help="own daemon's --device")
    ap.add_argument("--calib-samples", type=int, default=1024, help="own daemon's calibration set: samples")
    ap.add_argument("--seq-len", type=int, default=1024, help="... tokens per sample")
    ap.add_argument("--image-size", default="56x56", help="... image size")
    ap.add_argument("--samples-for-steps", type=int, default=0,
                    help="with --server: the server's calibration samples (steps of the jobs; 0: asks the server)")
    args = ap.parse_args(argv)
    if args.followers < 1 or args.rate <= 0 or args.duration <= 0 or args.jobs < 1:
        ap.error("--followers, --rate, --duration and --jobs must be positive")

    # daemon_helpers reads these when imported.
    os.environ["AUTOQUANT_BUILD_DIR"] = args.build_dir
    os.environ["AUTOQUANT_TEST_DEVICE"] = args.device
    sys.path.insert(0, str(REPO / "tests" / "python"))
    import grpc
    import daemon_helpers
    pb, pbg = daemon_helpers.stubs()

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"complete": False, "command": " ".join([sys.executable, *sys.argv]) if argv is None else
              " ".join(["load_bench.py", *argv]), "machine": machine(), "config": vars(args), "failures": []}
    work = pathlib.Path(tempfile.mkdtemp(prefix="aq-load-"))
    daemon, channel, jobs = None, None, []
    try:
        if args.server:
            target, pid = args.server, args.server_pid
            report["daemon"] = {"how": f"given: {args.server}", "pid": pid}
        else:
            base, calib = make_inputs(args, work)
            daemon = daemon_helpers.Daemon(base, calib, work / "models").start()
            target, pid = f"127.0.0.1:{daemon.port}", daemon.proc.pid
            report["daemon"] = {"how": f"started by the bench: {' '.join(daemon.args)}", "pid": pid,
                                "calib": {"samples": args.calib_samples, "seq_len": args.seq_len,
                                          "image_size": args.image_size}}
        channel = grpc.insecure_channel(target)
        stub = pbg.AutoQuantStub(channel)
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
        report["daemon"]["version"] = info.version
        report["daemon"]["device"] = info.device
        samples = args.samples_for_steps or info.calib_samples
        jobs = submit_jobs(args, pb, stub, samples)
        log(f"daemon {target} (pid {pid}); jobs {jobs}")
        wait_running(pb, stub, jobs[0], timeout=120)

        sampler = Sampler(pid, lambda: stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5))
        q0 = sampler.sample()
        time.sleep(args.quiet)
        q1 = sampler.sample()
        sampler.start()
        result = asyncio.run(drive(args, pb, pbg, target, jobs, sampler, pid))
        sampler.halt.set()
        sampler.join()
        report.update(result)

        res = {"quiet_seconds": round(q1["t"] - q0["t"], 3)}
        if "daemon_cpu_s" in q1:
            res["quiet_daemon_cores"] = round((q1["daemon_cpu_s"] - q0["daemon_cpu_s"]) / (q1["t"] - q0["t"]), 3)
        load_samples = [s for s in sampler.samples if "daemon" in s]
        if load_samples:
            rss = [s["daemon"]["rss_mib"] for s in load_samples]
            res["daemon_rss_mib"] = {"start": rss[0], "max": max(rss), "end": rss[-1]}
            res["daemon_hwm_mib"] = max(s["daemon"]["hwm_mib"] for s in load_samples)
        with_info = [s for s in sampler.samples if "running_job" in s]
        res["running_fraction"] = round(sum(1 for s in with_info if s["running_job"]) / max(1, len(with_info)), 3)
        res["server_info_errors"] = dict(sampler.info_errors)
        res["samples"] = sampler.samples
        report["resources"] = res
        report["jobs"] = cancel_jobs(pb, stub, jobs)
        # grpc.aio keeps a connection whose follow stream it cancelled until the server ends the
        # stream (at the job's end; a sync client or a dead process closes it at once), so the
        # daemon's descriptors are compared with the start only now that the jobs are over.
        time.sleep(2.0)
        if pid:
            after = proc_status(pid)
            report["descriptors"]["after_jobs_ended"] = after["fds"]
            report["threads"]["after_jobs_ended"] = after["threads"]
    except BaseException as e:
        report["failures"].append(f"bench stopped by {type(e).__name__}: {e}")
        raise
    finally:
        if channel is not None:
            if "jobs" not in report:
                report["jobs"] = cancel_jobs(pb, pbg.AutoQuantStub(channel), jobs)
            channel.close()
        if daemon is not None:
            rc = daemon.stop(timeout=120)
            report["daemon"]["exit_code"] = rc
            shutil.copy(daemon.log_path, out / "daemon.log")
            if rc != 0:
                report["failures"].append(f"autoquantd exited {rc} after SIGTERM (0 expected)")
        shutil.rmtree(work, ignore_errors=True)
        (out / "load-bench.json").write_text(json.dumps(report, indent=1))

    g, f = report["get_status"], report["followers"]
    if g["errors"]:
        report["failures"].append(f"GetStatus errors: {g['errors']}")
    for key in ("gaps", "streams_not_starting_at_1", "lines_after_terminal", "streams_ended_without_terminal_line",
                "behind_at_end"):
        if f[key]:
            report["failures"].append(f"followers: {key} = {f[key]}")
    if f["errors"]:
        report["failures"].append(f"follower errors: {f['errors']}")
    if f["ready"] != f["count"]:
        report["failures"].append(f"only {f['ready']} of {f['count']} followers got a first line")
    left = [j["id"] for j in report.get("jobs", []) if j["state"] not in TERMINAL_NAMES]
    if left:
        report["failures"].append(f"jobs not terminal 30 s after CancelJob: {left}")
    d = report.get("descriptors", {})
    if d.get("after_jobs_ended") is not None and d["after_jobs_ended"] > d["before_followers"]:
        report["failures"].append(f"daemon descriptors {d['before_followers']} before the followers, "
                                  f"{d['after_jobs_ended']} after they and the jobs ended")
    if report["resources"]["server_info_errors"]:
        report["failures"].append(f"GetServerInfo errors: {report['resources']['server_info_errors']}")
    report["complete"] = True
    (out / "load-bench.json").write_text(json.dumps(report, indent=1))
    (out / "load-bench.md").write_text(summarize(report))
    log(f"GetStatus {g['achieved_rate']}/s of {g['target_rate']}/s, p99 {g['latency_ms'] and g['latency_ms']['p99']} ms;"
        f" followers {f['lines_total']} lines, {f['gaps']} gaps; failures: {report['failures'] or 'none'}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

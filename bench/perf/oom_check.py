"""A real device out-of-memory in a job, on the GPU (issue 12): autoquantd on MODEL with CALIB (large
enough that one batch of all of it cannot fit: the 3B with 1024 samples of 768 tokens needs > 200 GB
for the logits alone), one job with batch_size = every sample, then one at the daemon's default batch.
Expected: the first FAILED with RESOURCE_EXHAUSTED naming the out-of-memory, the daemon still SERVING,
the second SUCCEEDED, device memory back near where it was. Prints and writes a JSON record; exit 0
when all of that held.

    python3 bench/perf/oom_check.py --model DIR --calib FILE --root DIR --out FILE [--device cuda]"""
import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "python"))
os.environ.setdefault("AUTOQUANT_TEST_DEVICE", "cuda")
from daemon_helpers import Daemon, stubs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--huge-batch", type=int, default=1024)
    a = ap.parse_args()
    pb, _ = stubs()
    d = Daemon(a.model, a.calib, a.root, "--batch-size", "4").start(timeout=600)
    R = {"huge_batch": a.huge_batch}
    try:
        info0 = d.call("GetServerInfo", pb.GetServerInfoRequest())
        R["device"] = info0.device
        t = time.monotonic()
        big = d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(
            scheme="oom-huge-batch", coverage=0.5, batch_size=a.huge_batch, calib_steps=1, score_steps=1))).id
        small = d.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(
            scheme="after-oom", coverage=0.5, calib_steps=2, score_steps=2))).id
        jb = d.wait_job(big, timeout=600)
        R["huge"] = {"state": pb.JobState.Name(jb.state), "message": jb.message,
                     "seconds": round(time.monotonic() - t, 2)}
        R["serving_after"] = d.health("autoquant.v1.AutoQuant")
        js = d.wait_job(small, timeout=600)
        R["next"] = {"state": pb.JobState.Name(js.state), "message": js.message,
                     "metrics": dict(js.result.metrics)}
        info1 = d.call("GetServerInfo", pb.GetServerInfoRequest())
        R["device_memory_allocated_bytes"] = {"before": info0.device_memory_allocated_bytes,
                                              "after": info1.device_memory_allocated_bytes}
        R["daemon_log_oom_lines"] = [ln for ln in d.log().splitlines() if "memory" in ln.lower()][-5:]
    finally:
        R["daemon_exit"] = d.stop()
    R["ok"] = (R["huge"]["state"] == "JOB_STATE_FAILED" and "RESOURCE_EXHAUSTED" in R["huge"]["message"]
               and R["next"]["state"] == "JOB_STATE_SUCCEEDED" and R["daemon_exit"] == 0)
    text = json.dumps(R, indent=2)
    print(text)
    pathlib.Path(a.out).write_text(text + "\n")
    return 0 if R["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

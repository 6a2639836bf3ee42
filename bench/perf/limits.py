"""The hardware limits a scheme sweep is measured against, on the machine it runs on:
  disk:  sequential write throughput with fsync (what a standalone export cannot beat), writing
         --disk-bytes of incompressible data in 16 MiB writes to --dir, then fsync; also the same bytes
         written by 4 and by 8 threads at once (pwrite to disjoint 16 MiB blocks of one file), since
         the exporter writes from several threads and some filesystems (tmpfs, NVMe) take more that way;
  hbm:   device-to-device copy bandwidth (torch, bf16, 2 GiB, read + write bytes counted);
  gemm:  bf16 matmul throughput (8192 x 8192 x 8192, torch.matmul), the FLOP ceiling.
Prints one JSON object (also to --out)."""
import argparse
import json
import os
import pathlib
import time


def disk(dir_: pathlib.Path, nbytes: int) -> dict:
    path = dir_ / f".aq-disk-floor-{os.getpid()}"
    block = os.urandom(16 << 20)
    t = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = nbytes
        while left > 0:
            left -= os.write(fd, block[:min(left, len(block))])
        os.fsync(fd)
    finally:
        os.close(fd)
    s = time.perf_counter() - t
    path.unlink()
    return {"dir": str(dir_), "bytes": nbytes, "seconds": round(s, 3), "gb_per_s": round(nbytes / s / 1e9, 3)}


def disk_parallel(dir_: pathlib.Path, nbytes: int, threads: int) -> dict:
    import concurrent.futures
    path = dir_ / f".aq-disk-floor-par-{os.getpid()}"
    block = os.urandom(16 << 20)
    blocks = (nbytes + len(block) - 1) // len(block)
    t = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        def run(first):
            for b in range(first, blocks, threads):
                n = min(len(block), nbytes - b * len(block))
                view = memoryview(block)[:n]
                off = b * len(block)
                while view:
                    k = os.pwrite(fd, view, off)
                    view, off = view[k:], off + k
        with concurrent.futures.ThreadPoolExecutor(threads) as ex:
            list(ex.map(run, range(threads)))
        os.fsync(fd)
    finally:
        os.close(fd)
    s = time.perf_counter() - t
    path.unlink()
    return {"threads": threads, "bytes": nbytes, "seconds": round(s, 3), "gb_per_s": round(nbytes / s / 1e9, 3)}


def device(name: str) -> dict:
    import torch
    if not torch.cuda.is_available():
        return {"device": "none"}
    dev = torch.device(name)
    out = {"device": torch.cuda.get_device_name(dev)}
    x = torch.empty(1 << 30, dtype=torch.bfloat16, device=dev)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    n = 20
    t = time.perf_counter()
    for _ in range(n):
        y.copy_(x)
    torch.cuda.synchronize()
    s = (time.perf_counter() - t) / n
    out["hbm_copy_gb_per_s"] = round(2 * x.numel() * 2 / s / 1e9, 1)
    del x, y
    m = 8192
    a = torch.randn(m, m, dtype=torch.bfloat16, device=dev)
    b = torch.randn(m, m, dtype=torch.bfloat16, device=dev)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    n = 20
    t = time.perf_counter()
    for _ in range(n):
        a @ b
    torch.cuda.synchronize()
    s = (time.perf_counter() - t) / n
    out["bf16_gemm_tflops"] = round(2 * m ** 3 / s / 1e12, 1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="a directory on the filesystem the schemes are written to")
    ap.add_argument("--disk-bytes", type=int, default=8 << 30)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--out")
    a = ap.parse_args()
    d = pathlib.Path(a.dir)
    r = {"disk": disk(d, a.disk_bytes),
         "disk_parallel": [disk_parallel(d, a.disk_bytes, n) for n in (4, 8)],
         **device(a.device)}
    text = json.dumps(r, indent=2)
    print(text)
    if a.out:
        pathlib.Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

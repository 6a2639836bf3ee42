"""Checks, on the CPU and independently of autoquant's code, that every FP8 weight of a scheme is the
per-tensor E4M3 quantization of the base weight with the scale the scheme stores:
q == clamp(W.float() / s.float(), -448, 448).to(float8_e4m3fn), byte for byte (the exporter
quantizes on the GPU; this is the CPU reference). Reads both checkpoints through their indexes with
the safetensors package.

    python3 bench/perf/check_fp8.py SCHEME_DIR BASE_DIR [--out FILE]"""
import argparse
import json
import pathlib

import torch
from safetensors import safe_open


def tensors(d: pathlib.Path) -> dict:
    idx = d / "model.safetensors.index.json"
    wm = json.loads(idx.read_text())["weight_map"] if idx.exists() else None
    files = sorted(set(wm.values())) if wm else ["model.safetensors"]
    out = {}
    for f in files:
        h = safe_open(str(d / f), framework="pt")
        for k in h.keys():
            out[k] = (h, k)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scheme")
    ap.add_argument("base")
    ap.add_argument("--out")
    a = ap.parse_args()
    s, b = tensors(pathlib.Path(a.scheme)), tensors(pathlib.Path(a.base))
    checked, bad = 0, []
    for name, (h, k) in s.items():
        if not name.endswith(".weight"):
            continue
        q = h.get_tensor(k)
        if q.dtype != torch.float8_e4m3fn:
            continue
        module = name[:-len(".weight")]
        hs, ks = s[module + ".weight_scale"]
        scale = hs.get_tensor(ks).float().reshape(())
        hb, kb = b[name]
        w = hb.get_tensor(kb)
        ref = (w.float() / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
        checked += 1
        if not torch.equal(ref.view(torch.uint8), q.view(torch.uint8)):
            n = int((ref.view(torch.uint8) != q.view(torch.uint8)).sum())
            bad.append({"tensor": name, "bytes_differing": n, "numel": q.numel()})
    r = {"scheme": a.scheme, "fp8_weights_checked": checked, "mismatches": bad, "ok": checked > 0 and not bad}
    print(json.dumps(r, indent=2))
    if a.out:
        pathlib.Path(a.out).write_text(json.dumps(r, indent=2) + "\n")
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

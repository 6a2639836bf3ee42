"""NVFP4 numerics at the 3B's shapes on the GPU: ours (`autoquant numerics --device cuda`, with the fused
kernel and with the torch reference path) against ModelOpt 0.47 itself on the same device: its Triton
fake quantizer (fp4_fake_quant_block, what its NVFP4 scores use) and its export (NVFP4QTensor), and
against vLLM's emulation restated (tests/python/nvfp4_reference.py). Prints and writes one JSON.

    python bench/nvfp4/numerics_vs_modelopt.py --autoquant BIN --work DIR --out FILE.json"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "python"))
import nvfp4_reference as nr  # noqa: E402

# Qwen2.5-VL-3B's text Linears [out, in] (lm_head, 311 M elements, left out: the outputs alone would be
# gigabytes of files for the same per-block arithmetic) and activations [batch 4 x 768 tokens, in].
SHAPES = {"q_proj": (2048, 2048), "k_proj": (256, 2048), "gate_proj": (11008, 2048), "down_proj": (2048, 11008),
          "x_hidden": (3072, 2048), "x_mlp": (3072, 11008)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--autoquant", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    t = {}
    for name, shape in SHAPES.items():
        scale = 1.0 if name.startswith("x_") else 0.02
        t[name] = (torch.randn(shape, generator=g) * scale).to(torch.bfloat16)
        if name.startswith("x_"):  # a calibrated amax below this batch's max: saturating blocks too
            t[name + ".amax"] = (t[name].abs().max().float() * 0.8).reshape(())
    save_file(t, work / "in.safetensors")
    result = {"device": torch.cuda.get_device_name(0), "shapes": SHAPES, "paths": {}}
    outs = {}
    for path, env in (("kernel", {}), ("torch", {"AUTOQUANT_CUDA_KERNELS": "0"})):
        t0 = time.time()
        p = subprocess.run([args.autoquant, "numerics", "--format", "nvfp4", "--device", "cuda", "--in",
                            str(work / "in.safetensors"), "--out", str(work / f"out-{path}.safetensors")],
                           capture_output=True, text=True, env=dict(os.environ, **env))
        assert p.returncode == 0, p.stderr
        result["paths"][path] = {"seconds": time.time() - t0}
        outs[path] = load_file(work / f"out-{path}.safetensors")
    for name in SHAPES:
        x = t[name].cuda()
        amax = t.get(name + ".amax", t[name].abs().max().float()).cuda()
        ref_fake = nr.modelopt_fake_quant(x, amax).cpu()
        packed, scale, wsf2 = nr.modelopt_export(x, amax)
        vllm = nr.vllm_quant_dequant_input(x, 1.0 / (amax / (6.0 * 448.0))).cpu()
        r = {}
        for path, o in outs.items():
            fake = o[name + ".fake"]
            r[path] = {
                "fake_vs_modelopt_triton_mismatches": int((fake.view(torch.int16) != ref_fake.view(torch.int16)).sum()),
                "fake_max_abs_diff": float((fake.float() - ref_fake.float()).abs().max()),
                "packed_mismatches": int((o[name + ".packed"] != packed.cpu()).sum()),
                "block_scale_mismatches": int((o[name + ".block_scale"].view(torch.uint8)
                                               != scale.cpu().view(torch.uint8)).sum()),
                "global_scale_equal": bool(torch.equal(o[name + ".global_scale"], wsf2.float().cpu())),
                "vllm_input_mismatches": int((o[name + ".vllm_input"].view(torch.int16)
                                              != vllm.view(torch.int16)).sum()),
            }
        r["elements"] = x.numel()
        r["kernel_vs_torch_fake_mismatches"] = int(
            (outs["kernel"][name + ".fake"].view(torch.int16) != outs["torch"][name + ".fake"].view(torch.int16)).sum())
        result[name] = r
        print(name, json.dumps(r))
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Evaluation images and prompts for scripts/gpu/verify_vllm.sh, made with the model's own processor files.

    python3 make_prompts.py --model BASE_DIR --work DIR

Writes DIR/images/*.png (four 224x224 pictures, deterministic), DIR/eval-image.safetensors (their chat
samples, image then caption, in our calibration format, built by autoquant_client.calib exactly as
`autoquant-calib` builds a set) and DIR/prompts.json: the texts vLLM is given for the same samples
(`eval_image`: [chat text, image]) and for greedy generation (`text`: chat prompts, `image`: [chat prompt,
image]). calib.py is loaded from its file: it needs only transformers, torch and safetensors, not the
gRPC half of the client package.
"""
import argparse
import importlib.util
import json
import pathlib
import sys

import torch
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[2]
CAPTIONS = ["A smooth gradient from red to blue.", "Grey static noise.", "A green field under a yellow sky.",
            "A black and white checkerboard."]


def load_calib():
    spec = importlib.util.spec_from_file_location("aq_calib", ROOT / "client/python/autoquant_client/calib.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def images(out: pathlib.Path):
    out.mkdir(parents=True, exist_ok=True)
    n = 224
    x = torch.linspace(0, 1, n)
    g = torch.Generator().manual_seed(0)
    pictures = [
        torch.stack([x.expand(n, n), torch.zeros(n, n), 1 - x.expand(n, n)], -1),
        torch.rand(n, n, 1, generator=g).expand(n, n, 3),
        torch.cat([torch.tensor([0.9, 0.9, 0.1]).expand(n // 2, n, 3), torch.tensor([0.1, 0.7, 0.2]).expand(n - n // 2, n, 3)]),
        ((torch.arange(n)[:, None] // 28 + torch.arange(n)[None, :] // 28) % 2).float()[..., None].expand(n, n, 3),
    ]
    paths = []
    for i, p in enumerate(pictures):
        path = out / f"eval{i}.png"
        Image.fromarray((p * 255).round().to(torch.uint8).numpy()).save(path)
        paths.append(path)
    return paths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    work = pathlib.Path(a.work)
    calib = load_calib()
    paths = images(work / "images")
    samples = [calib.Sample(p, c) for p, c in zip(paths, CAPTIONS)]
    calib.build_calib_set(a.model, samples, work / "eval-image.safetensors", model_dir=a.model, overwrite=True)
    processor = calib.load_processor(a.model)
    gen_text = [processor.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                              add_generation_prompt=True)
                for q in ["Write a short poem about the sea.", "What is the capital of France?"]]
    gen_image = [[calib.chat_text(processor, "", include_caption=False), str(p)] for p in paths[:2]]
    prompts = {"eval_image": [[calib.chat_text(processor, s.caption), str(s.image)] for s in samples],
               "text": gen_text, "image": gen_image}
    (work / "prompts.json").write_text(json.dumps(prompts, indent=1))
    print(f"{len(samples)} image samples, {len(gen_text)} + {len(gen_image)} generation prompts")


if __name__ == "__main__":
    main()

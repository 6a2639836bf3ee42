"""Helpers for the forward-parity tests: tiny transformers models, inputs in
the `autoquant model forward` format, and running both sides."""
import json
import pathlib
import subprocess

import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

# Token ids of the tiny configs (same as the `tiny` preset).
VISION_START, VISION_END, IMAGE = 500, 501, 503
PATCH, MERGE = 14, 2
PATCH_DIM = 3 * 2 * PATCH * PATCH  # C * T * P * P = 1176


def tiny_config(tied: bool) -> Qwen2_5_VLConfig:
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=4096,
            rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[2, 3, 3]),
            tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2,
        ),
        vision_config=dict(
            depth=3, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64, patch_size=PATCH,
            spatial_merge_size=MERGE, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
            tokens_per_second=2,
        ),
        image_token_id=IMAGE, video_token_id=504, vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END, tie_word_embeddings=tied,
    )


def make_hf_model(tied: bool, seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
    """A random tiny model created by transformers. Weights, biases and norms are
    all randomised (HF init leaves biases 0 and norms 1, which would hide bugs)."""
    torch.manual_seed(seed)
    config = tiny_config(tied)
    model = Qwen2_5_VLForConditionalGeneration._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_q" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.08)
    return model.eval()


def save_layouts(model, root: pathlib.Path) -> dict:
    """save_pretrained, plus a copy with the other key layout. Returns
    {"legacy": dir, "v5": dir}."""
    saved = root / "saved"
    model.save_pretrained(saved)
    weights = load_file(saved / "model.safetensors")
    legacy = any(k.startswith("visual.") for k in weights)
    other = root / "other"
    other.mkdir()
    (other / "config.json").write_text((saved / "config.json").read_text())

    def to_v5(k):
        if k.startswith("visual."):
            return "model." + k
        if k.startswith("model.") and not k.startswith(("model.visual.", "model.language_model.")):
            return "model.language_model." + k[len("model."):]
        return k

    def to_legacy(k):
        if k.startswith("model.visual."):
            return k[len("model."):]
        if k.startswith("model.language_model."):
            return "model." + k[len("model.language_model."):]
        return k

    convert = to_v5 if legacy else to_legacy
    save_file({convert(k): v.contiguous() for k, v in weights.items()}, other / "model.safetensors",
              metadata={"format": "pt"})
    return {"legacy": saved, "v5": other} if legacy else {"legacy": other, "v5": saved}


def image_tokens(h: int, w: int) -> int:
    return (h // PATCH) * (w // PATCH) // (MERGE * MERGE)


def image_block(h: int, w: int) -> list:
    return [VISION_START] + [IMAGE] * image_tokens(h, w) + [VISION_END]


def random_text(gen: torch.Generator, n: int) -> list:
    return torch.randint(3, 500, (n,), generator=gen).tolist()


def make_inputs(rows: list, images: list, seed: int = 0, pad_left: bool = True) -> dict:
    """rows: token lists (different lengths get padded with id 0 and
    attention_mask 0); images: (h, w) in pixels, in token order."""
    gen = torch.Generator().manual_seed(seed)
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.int64)
    mask = torch.zeros(len(rows), length, dtype=torch.int64)
    for i, r in enumerate(rows):
        sl = slice(length - len(r), length) if pad_left else slice(0, len(r))
        ids[i, sl] = torch.tensor(r)
        mask[i, sl] = 1
    out = {"input_ids": ids}
    if any(len(r) != length for r in rows):
        out["attention_mask"] = mask
    if images:
        grids = torch.tensor([[1, h // PATCH, w // PATCH] for h, w in images], dtype=torch.int64)
        patches = int(grids.prod(-1).sum())
        out["pixel_values"] = torch.randn(patches, PATCH_DIM, generator=gen)
        out["image_grid_thw"] = grids
    return out


def hf_logits(model, inputs: dict) -> torch.Tensor:
    kwargs = dict(inputs)
    # transformers 5.x computes 3D M-RoPE positions only when mm_token_type_ids is passed.
    kwargs["mm_token_type_ids"] = (inputs["input_ids"] == model.config.image_token_id).int()
    with torch.no_grad():
        return model(**kwargs).logits.float()


def our_logits(binary: pathlib.Path, model_dir: pathlib.Path, inputs: dict, work: pathlib.Path,
               dtype: str = "float32") -> torch.Tensor:
    work.mkdir(parents=True, exist_ok=True)
    inp, out = work / "in.safetensors", work / "out.safetensors"
    save_file({k: v.contiguous() for k, v in inputs.items()}, inp)
    proc = subprocess.run([str(binary), "model", "forward", "--model", str(model_dir), "--input", str(inp),
                           "--output", str(out), "--device", "cpu", "--dtype", dtype, "--overwrite"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return load_file(out)["logits"]


def max_abs_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor = None) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    d = (a - b).abs()
    if mask is not None:
        d = d[mask.bool()]
    return float(d.max())

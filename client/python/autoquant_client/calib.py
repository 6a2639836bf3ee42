"""Builds a calibration or evaluation set (docs/calibration-format.md, `autoquant.calib.v1`) from local
images and captions with a local Qwen2.5-VL processor directory. Nothing is downloaded.

Each sample is one image and its caption as a chat: a user turn holding the image and `prompt`, then
(with `include_caption`, the default) an assistant turn holding the caption, rendered by the
processor's own chat template and run through the processor itself (its image resizing, its
`<|image_pad|>` expansion), so the rows are exactly what the processor gives for that text and image.

    from autoquant_client.calib import build_calib_set, folder_samples
    build_calib_set("qwen2.5-vl-7b/", folder_samples("photos/"), "calib.safetensors",
                    max_pixels=448 * 448, model_dir="qwen2.5-vl-7b/")

Command line: `autoquant-calib` or `python -m autoquant_client.calib` (`--help`).

Sample sources:
- `folder_samples(dir)`: `dir/captions.jsonl` (one `{"image": "relative/path", "caption": "..."}` per
  line) when it exists, otherwise every image `NAME.{jpg,jpeg,png,webp,bmp}` with its caption in
  `NAME.txt` beside it, in name order.
- `coco_samples(annotations_json, images_dir)`: COCO captions (`annotations/captions_*.json`: `images[]`
  with `id`/`file_name`, `annotations[]` with `image_id`/`caption`), in `images[]` order, the first
  caption of each image (`all_captions=True`: one sample per caption).

Errors name the file: a missing image or processor directory is `FileNotFoundError`, an existing
output without `overwrite=True` is `FileExistsError`, anything else wrong with the inputs (an image
without a caption, bad COCO JSON, a sample longer than `seq_len`, a processor whose token ids or patch
geometry do not match `model_dir`'s config.json) is `CalibError`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import tempfile
from typing import Iterable, List, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]

FORMAT = "autoquant.calib.v1"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CAPTIONS_JSONL = "captions.jsonl"
DEFAULT_PROMPT = "Describe this image."
# The special tokens whose ids the engine reads from config.json (Qwen2.5-VL's names for them).
VISION_TOKENS = {"vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}


class CalibError(ValueError):
    """Inputs that cannot make a calibration set; the message names the file at fault."""


@dataclasses.dataclass(frozen=True)
class Sample:
    image: pathlib.Path
    caption: str


@dataclasses.dataclass(frozen=True)
class CalibSummary:
    path: pathlib.Path
    samples: int
    seq_len: int
    images: int
    patches: int


# ----------------------------------------------------------------------------- sample sources

def folder_samples(folder: PathLike) -> List[Sample]:
    """The samples of an image folder (see the module docstring for the two layouts)."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    jsonl = folder / CAPTIONS_JSONL
    if jsonl.exists():
        return _jsonl_samples(jsonl)
    samples = []
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        caption_file = image.with_suffix(".txt")
        if not caption_file.is_file():
            raise CalibError(f"{image} has no caption: expected {caption_file} (or a {jsonl})")
        caption = caption_file.read_text(encoding="utf-8").strip()
        if not caption:
            raise CalibError(f"{caption_file} is empty: the caption of {image}")
        samples.append(Sample(image, caption))
    if not samples:
        raise CalibError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) and no {CAPTIONS_JSONL}")
    return samples


def _jsonl_samples(jsonl: pathlib.Path) -> List[Sample]:
    samples = []
    for n, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CalibError(f"{jsonl}:{n}: not JSON ({e})") from e
        if not isinstance(row, dict) or not isinstance(row.get("image"), str):
            raise CalibError(f'{jsonl}:{n}: expected {{"image": "relative/path", "caption": "..."}}')
        caption = row.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            raise CalibError(f"{jsonl}:{n}: image {row['image']} has no caption")
        samples.append(Sample(jsonl.parent / row["image"], caption.strip()))
    if not samples:
        raise CalibError(f"{jsonl} lists no samples")
    return samples


def coco_samples(annotations: PathLike, images_dir: PathLike, all_captions: bool = False) -> List[Sample]:
    """The samples of a COCO captions file; `file_name`s are relative to `images_dir`."""
    annotations, images_dir = pathlib.Path(annotations), pathlib.Path(images_dir)
    try:
        doc = json.loads(annotations.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO captions file {annotations} does not exist") from None
    except json.JSONDecodeError as e:
        raise CalibError(f"{annotations}: not JSON ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or \
            not isinstance(doc.get("annotations"), list):
        raise CalibError(f"{annotations}: not COCO captions (needs lists 'images' and 'annotations')")
    captions = {}
    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
            raise CalibError(f"{annotations}: annotations[{i}] needs 'image_id' and a string 'caption'")
        if ann["caption"].strip():
            captions.setdefault(ann["image_id"], []).append(ann["caption"].strip())
    samples = []
    for i, img in enumerate(doc["images"]):
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise CalibError(f"{annotations}: images[{i}] needs 'id' and a string 'file_name'")
        found = captions.get(img["id"])
        if not found:
            raise CalibError(f"{annotations}: image {img['file_name']} (id {img['id']}) has no caption")
        for caption in (found if all_captions else found[:1]):
            samples.append(Sample(images_dir / img["file_name"], caption))
    if not samples:
        raise CalibError(f"{annotations} lists no images")
    return samples


# ----------------------------------------------------------------------------- the builder

def load_processor(processor_dir: PathLike):
    """The Hugging Face processor saved in `processor_dir`, from local files only."""
    from transformers import AutoProcessor
    processor_dir = pathlib.Path(processor_dir)
    if not processor_dir.is_dir():
        raise FileNotFoundError(f"processor directory {processor_dir} does not exist")
    try:
        processor = AutoProcessor.from_pretrained(str(processor_dir), local_files_only=True)
    except (OSError, ValueError) as e:
        raise CalibError(f"{processor_dir}: cannot load a Hugging Face processor from it ({e})") from e
    for needed in ("image_processor", "tokenizer", "image_token_id"):
        if getattr(processor, needed, None) is None:
            raise CalibError(f"{processor_dir}: {type(processor).__name__} has no {needed}; "
                             "expected a Qwen2.5-VL processor")
    if not getattr(processor, "chat_template", None):
        raise CalibError(f"{processor_dir}: the processor has no chat template")
    return processor


def check_processor_against_model(processor, model_dir: PathLike) -> dict:
    """Raises CalibError unless the processor's image/vision token ids and patch geometry are those of
    `model_dir/config.json`; returns that config."""
    config_path = pathlib.Path(model_dir) / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"model config {config_path} does not exist") from None
    except json.JSONDecodeError as e:
        raise CalibError(f"{config_path}: not JSON ({e})") from e
    tok = processor.tokenizer
    mismatches = []
    if config.get("image_token_id") != processor.image_token_id:
        mismatches.append(f"image_token_id {config.get('image_token_id')} but the processor's "
                          f"{processor.image_token} is {processor.image_token_id}")
    for key, token in VISION_TOKENS.items():
        ours = tok.convert_tokens_to_ids(token)
        if key in config and config[key] != ours:
            mismatches.append(f"{key} {config[key]} but the processor's {token} is {ours}")
    vision = config.get("vision_config", {})
    ip = processor.image_processor
    for key, ours in (("patch_size", ip.patch_size), ("spatial_merge_size", ip.merge_size),
                      ("temporal_patch_size", ip.temporal_patch_size)):
        if key in vision and vision[key] != ours:
            mismatches.append(f"vision_config.{key} {vision[key]} but the image processor's is {ours}")
    if mismatches:
        raise CalibError(f"the processor does not fit {config_path}: " + "; ".join(mismatches))
    return config


def chat_text(processor, caption: str, prompt: str = DEFAULT_PROMPT, include_caption: bool = True) -> str:
    """One sample's text: the processor's chat template over a user turn (the image, then `prompt`)
    and, with `include_caption`, an assistant turn holding the caption (else the generation prompt)."""
    user = [{"type": "image"}] + ([{"type": "text", "text": prompt}] if prompt else [])
    messages = [{"role": "user", "content": user}]
    if include_caption:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": caption}]})
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=not include_caption)


def process_sample(processor, sample: Sample, prompt: str = DEFAULT_PROMPT, include_caption: bool = True,
                   min_pixels: Optional[int] = None, max_pixels: Optional[int] = None) -> dict:
    """The processor's own output for one sample: input_ids [L], pixel_values [P, 1176],
    image_grid_thw [1, 3]."""
    from PIL import Image
    if not sample.image.is_file():
        raise FileNotFoundError(f"image {sample.image} does not exist")
    try:
        with Image.open(sample.image) as im:
            image = im.convert("RGB")
    except OSError as e:
        raise CalibError(f"{sample.image}: not a readable image ({e})") from e
    kwargs = {}
    if min_pixels is not None or max_pixels is not None:
        size = dict(processor.image_processor.size)
        if min_pixels is not None:
            size["shortest_edge"] = min_pixels
        if max_pixels is not None:
            size["longest_edge"] = max_pixels
        kwargs["size"] = size
    out = processor(text=[chat_text(processor, sample.caption, prompt, include_caption)], images=[image],
                    return_tensors="pt", **kwargs)
    return {"input_ids": out["input_ids"][0], "pixel_values": out["pixel_values"],
            "image_grid_thw": out["image_grid_thw"]}


def build_calib_set(processor_dir: PathLike, samples: Iterable[Sample], out_path: PathLike, *,
                    prompt: str = DEFAULT_PROMPT, include_caption: bool = True, seq_len: Optional[int] = None,
                    min_pixels: Optional[int] = None, max_pixels: Optional[int] = None,
                    model_dir: Optional[PathLike] = None, limit: Optional[int] = None,
                    overwrite: bool = False) -> CalibSummary:
    """Writes `samples` (at most `limit`) to `out_path` in our calibration format, atomically.

    Every sample is right-padded to `seq_len` (default: the longest sample) with the tokenizer's pad
    token, attention_mask 0 there. `min_pixels`/`max_pixels` override the image processor's resize
    bounds. With `model_dir`, the processor is checked against its config.json first and every token
    id against its vocab_size."""
    import torch
    from safetensors.torch import save_file

    out_path = pathlib.Path(out_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass overwrite=True (--overwrite) to replace it")
    if out_path.is_dir():
        raise CalibError(f"{out_path} is a directory")
    if seq_len is not None and seq_len <= 0:
        raise CalibError(f"seq_len must be positive, got {seq_len}")
    samples = list(samples)[:limit] if limit is not None else list(samples)
    if not samples:
        raise CalibError("no samples to write")
    processor = load_processor(processor_dir)
    vocab_size = None
    if model_dir is not None:
        vocab_size = check_processor_against_model(processor, model_dir).get("vocab_size")

    rows = [process_sample(processor, s, prompt, include_caption, min_pixels, max_pixels) for s in samples]
    longest = max(r["input_ids"].numel() for r in rows)
    length = longest if seq_len is None else seq_len
    for s, r in zip(samples, rows):
        n = r["input_ids"].numel()
        if n > length:
            raise CalibError(f"{s.image}: the sample is {n} tokens, longer than seq_len {length}; "
                             "raise seq_len or lower max_pixels")
        if vocab_size is not None and int(r["input_ids"].max()) >= vocab_size:
            raise CalibError(f"{s.image}: token id {int(r['input_ids'].max())} is outside the model's "
                             f"vocab_size {vocab_size}")

    tok = processor.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.int64)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.int64)
    for i, r in enumerate(rows):
        n = r["input_ids"].numel()
        input_ids[i, :n] = r["input_ids"]
        attention_mask[i, :n] = 1
    grids = torch.cat([r["image_grid_thw"] for r in rows]).to(torch.int64).contiguous()
    pixels = torch.cat([r["pixel_values"] for r in rows]).to(torch.float32).contiguous()
    image_offsets = torch.zeros(len(rows) + 1, dtype=torch.int64)
    patch_offsets = torch.zeros(len(rows) + 1, dtype=torch.int64)
    for i, r in enumerate(rows):
        image_offsets[i + 1] = image_offsets[i] + r["image_grid_thw"].shape[0]
        patch_offsets[i + 1] = patch_offsets[i] + r["pixel_values"].shape[0]

    tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixels,
               "image_grid_thw": grids, "sample_image_offsets": image_offsets,
               "sample_patch_offsets": patch_offsets}
    metadata = {"format": "pt", "autoquant.format": FORMAT, "samples": str(len(rows)), "seq_len": str(length)}
    _write_atomically(out_path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return CalibSummary(out_path, len(rows), length, int(grids.shape[0]), int(pixels.shape[0]))


def _write_atomically(path: pathlib.Path, write) -> None:
    """write(tmp) into a temporary file beside `path`, then rename it over `path`: a reader sees the
    old file or the whole new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(pathlib.Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="autoquant-calib",
        description="Build an autoquant calibration/evaluation set (autoquant.calib.v1) from local images and "
                    "captions with a local Qwen2.5-VL processor directory. No network.",
        epilog="Exit codes: 0 success, 1 runtime failure, 2 usage or validation error (bad flags, missing or "
               "caption-less images, bad COCO JSON, a processor that does not fit --model, an existing --out "
               "without --overwrite).")
    p.add_argument("--processor", required=True, metavar="DIR",
                   help="Hugging Face processor directory (e.g. the Qwen2.5-VL checkpoint itself)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR",
                     help=f"image folder: NAME.jpg + NAME.txt pairs, or a {CAPTIONS_JSONL}")
    src.add_argument("--coco", metavar="JSON", help="COCO captions file (annotations/captions_*.json)")
    p.add_argument("--coco-images", metavar="DIR", help="with --coco: the folder its file_names are relative to "
                   "(default: COCO's layout, annotations/captions_val2017.json -> val2017/ beside annotations/)")
    p.add_argument("--all-captions", action="store_true", help="with --coco: one sample per caption")
    p.add_argument("--out", required=True, metavar="FILE", help="output .safetensors (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--model", metavar="DIR", help="check the processor's token ids and patch geometry "
                                                  "against DIR/config.json")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="user text after the image (default: %(default)r)")
    p.add_argument("--no-caption", action="store_true",
                   help="end each sample at the generation prompt instead of the caption as the answer")
    p.add_argument("--seq-len", type=int, help="pad every sample to this length (default: the longest)")
    p.add_argument("--min-pixels", type=int, help="image resize lower bound (default: the processor's)")
    p.add_argument("--max-pixels", type=int, help="image resize upper bound (default: the processor's)")
    p.add_argument("--limit", type=int, help="use at most this many samples")
    return p


def _coco_images_dir(annotations: pathlib.Path) -> pathlib.Path:
    # COCO: annotations/captions_val2017.json describes val2017/ beside annotations/.
    split = annotations.stem.split("_", 1)[-1]
    return annotations.resolve().parent.parent / split


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.coco is None and (args.coco_images or args.all_captions):
        parser.error("--coco-images and --all-captions need --coco")
    for name in ("seq_len", "min_pixels", "max_pixels", "limit"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    try:
        if args.coco:
            coco = pathlib.Path(args.coco)
            images = pathlib.Path(args.coco_images) if args.coco_images else _coco_images_dir(coco)
            samples = coco_samples(coco, images, all_captions=args.all_captions)
        else:
            samples = folder_samples(args.images)
        summary = build_calib_set(args.processor, samples, args.out, prompt=args.prompt,
                                  include_caption=not args.no_caption, seq_len=args.seq_len,
                                  min_pixels=args.min_pixels, max_pixels=args.max_pixels, model_dir=args.model,
                                  limit=args.limit, overwrite=args.overwrite)
    except (CalibError, FileNotFoundError, FileExistsError) as e:
        print(f"autoquant-calib: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # anything else is a runtime failure, reported in one line
        print(f"autoquant-calib: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {summary.path}: {summary.samples} samples, seq_len {summary.seq_len}, "
          f"{summary.images} images, {summary.patches} patches")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""autoquant_client.calib: calibration sets from local images + captions with a local Qwen2.5-VL
processor, checked against the processor's own output and read by our engine.

No network: the processor is made here. A byte-level tokenizer whose special tokens have the tiny
preset's ids (<|vision_start|> 500, <|vision_end|> 501, <|vision_pad|> 502, <|image_pad|> 503,
<|video_pad|> 504; vocab 505 <= 512), Qwen2.5-VL's image processor (patch 14, merge 2, temporal 2,
small max_pixels so the sets stay short) and a Qwen-style chat template, saved with save_pretrained.
The package is built from this working tree into a temporary directory (as test_python_client.py
does), which also installs the `autoquant-calib` console script.

- A folder set and a COCO set: every row equals processor(text=<the chat written out by hand>,
  images=[the image]) — input_ids then right padding (pad id, mask 0), pixel_values rows, grid —
  with the offsets and header metadata of docs/calibration-format.md.
- `autoquant inspect`, `autoquant model forward` and `autoquant quantize` accept the file on the tiny model.
- Refusals: an existing output (untouched), a missing image, a caption-less image, bad COCO JSON, a
  sample longer than seq_len, a processor whose image token id does not fit the model; no temporary
  file is left behind; the CLI exits 2 on each usage or validation error.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from aq_paths import REPO

TINY_IDS = {"<|vision_start|>": 500, "<|vision_end|>": 501, "<|vision_pad|>": 502, "<|image_pad|>": 503,
            "<|video_pad|>": 504}
TEXT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MAX_PIXELS = 28 * 28 * 16            # at most 16 LLM tokens per image
SYSTEM = "You are a helpful assistant."
# Qwen2.5-VL's chat layout: a default system turn, images as <|vision_start|><|image_pad|><|vision_end|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n" + SYSTEM + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

IMAGES = {  # name: (size WxH, colour or None for noise, caption)
    "beach": ((100, 60), (230, 200, 120), "A sandy beach under a pale sky."),
    "forest": ((64, 64), None, "Dense green trees."),
    "tower": ((90, 200), (40, 40, 160), "A tall blue tower at dusk."),
}


def expected_text(caption, prompt="Describe this image."):
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
            f"<|vision_start|><|image_pad|><|vision_end|>{prompt}<|im_end|>\n"
            f"<|im_start|>assistant\n{caption}<|im_end|>\n")


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def aq_pkg(client_package):
    """(autoquant_client.calib built from client/python, the --target directory holding it)."""
    from autoquant_client import calib
    return calib, client_package[1]


@pytest.fixture(scope="session")
def processor_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, Qwen2_5_VLProcessor, Qwen2VLImageProcessor,
                              Qwen2VLVideoProcessor)
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for token in TEXT_SPECIALS:
        vocab[token] = len(vocab)
    while len(vocab) < min(TINY_IDS.values()):
        vocab[f"<|reserved_{len(vocab)}|>"] = len(vocab)
    vocab.update(TINY_IDS)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(TEXT_SPECIALS + list(TINY_IDS))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=MAX_PIXELS),
                                    tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
                                    chat_template=CHAT_TEMPLATE)
    out = tmp_path_factory.mktemp("processor")
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def processor(processor_dir):
    from transformers import AutoProcessor
    return AutoProcessor.from_pretrained(str(processor_dir), local_files_only=True)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, autoquant_bin):
    out = tmp_path_factory.mktemp("tiny") / "model"
    subprocess.run([str(autoquant_bin), "model", "init", "--preset", "tiny", "--out", str(out)], check=True,
                   capture_output=True)
    config = json.loads((out / "config.json").read_text())
    assert config["image_token_id"] == TINY_IDS["<|image_pad|>"] and config["vocab_size"] > max(TINY_IDS.values())
    return out


def _write_image(path, size, colour, seed):
    if colour is None:
        g = torch.Generator().manual_seed(seed)
        pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(path)
    else:
        Image.new("RGB", size, colour).save(path)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for seed, (name, (size, colour, caption)) in enumerate(IMAGES.items()):
        _write_image(folder / f"{name}.png", size, colour, seed)
        (folder / f"{name}.txt").write_text(caption + "\n")
    return folder


@pytest.fixture(scope="session")
def coco_dir(tmp_path_factory):
    """COCO's layout: annotations/captions_val2017.json and val2017/*.jpg; 'tower' has two captions."""
    root = tmp_path_factory.mktemp("coco")
    (root / "val2017").mkdir()
    (root / "annotations").mkdir()
    images, annotations = [], []
    for i, (name, (size, colour, caption)) in enumerate(IMAGES.items()):
        file_name = f"{i:012d}.jpg"
        _write_image(root / "val2017" / file_name, size, colour, 10 + i)
        images.append({"id": 100 + i, "file_name": file_name, "width": size[0], "height": size[1]})
        annotations.append({"id": len(annotations), "image_id": 100 + i, "caption": caption})
    annotations.append({"id": len(annotations), "image_id": 102, "caption": "The same tower, again."})
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps({"images": images,
                                                                            "annotations": annotations}))
    return root


def _load(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _assert_rows_are_the_processors(path, processor, pairs, max_pixels=None, seq_len=None):
    """pairs: [(image path, caption)] in sample order; seq_len: the padded length (default: the longest)."""
    tensors, meta = _load(path)
    assert set(tensors) == {"input_ids", "attention_mask", "pixel_values", "image_grid_thw",
                            "sample_image_offsets", "sample_patch_offsets"}
    n, length = tensors["input_ids"].shape
    assert n == len(pairs)
    assert meta == {"format": "pt", "autoquant.format": "autoquant.calib.v1", "samples": str(n), "seq_len": str(length)}
    for name in ("input_ids", "attention_mask", "image_grid_thw", "sample_image_offsets", "sample_patch_offsets"):
        assert tensors[name].dtype == torch.int64, name
    assert tensors["pixel_values"].dtype == torch.float32 and tensors["pixel_values"].shape[1] == 1176
    img_off, patch_off = tensors["sample_image_offsets"], tensors["sample_patch_offsets"]
    assert img_off.tolist() == list(range(n + 1))
    assert patch_off[0] == 0 and patch_off[-1] == tensors["pixel_values"].shape[0]
    lengths = []
    kwargs = {} if max_pixels is None else {"size": {"shortest_edge": 56 * 56, "longest_edge": max_pixels}}
    for i, (image, caption) in enumerate(pairs):
        with Image.open(image) as im:
            ref = processor(text=[expected_text(caption)], images=[im.convert("RGB")], return_tensors="pt", **kwargs)
        ids = ref["input_ids"][0]
        k = ids.numel()
        lengths.append(k)
        assert torch.equal(tensors["input_ids"][i, :k], ids), image
        assert (tensors["input_ids"][i, k:] == processor.tokenizer.pad_token_id).all(), image
        assert tensors["attention_mask"][i].tolist() == [1] * k + [0] * (length - k), image
        assert torch.equal(tensors["image_grid_thw"][img_off[i]:img_off[i + 1]], ref["image_grid_thw"]), image
        assert torch.equal(tensors["pixel_values"][patch_off[i]:patch_off[i + 1]], ref["pixel_values"]), image
        grid = ref["image_grid_thw"][0]
        assert int((ids == TINY_IDS["<|image_pad|>"]).sum()) == int(grid.prod()) // 4
    assert length == (max(lengths) if seq_len is None else seq_len)
    return tensors


# ----------------------------------------------------------------------------- building

def test_folder_set_rows_equal_the_processors_own_output(aq_pkg, processor_dir, processor, image_folder, tiny_model,
                                                         tmp_path):
    calib, _ = aq_pkg
    samples = calib.folder_samples(image_folder)
    assert [s.image.stem for s in samples] == sorted(IMAGES)
    out = tmp_path / "calib.safetensors"
    summary = calib.build_calib_set(processor_dir, samples, out, model_dir=tiny_model)
    assert (summary.samples, summary.images) == (3, 3)
    tensors = _assert_rows_are_the_processors(out, processor, [(s.image, s.caption) for s in samples])
    # Different sizes give different grids (the resizing is the processor's, not ours).
    assert len({tuple(g) for g in tensors["image_grid_thw"].tolist()}) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.safetensors"]


def test_coco_set_takes_the_first_caption_or_all(aq_pkg, processor_dir, processor, coco_dir, tmp_path):
    calib, _ = aq_pkg
    ann = coco_dir / "annotations" / "captions_val2017.json"
    first = calib.coco_samples(ann, coco_dir / "val2017")
    assert [s.caption for s in first] == [c for _, _, c in IMAGES.values()]
    every = calib.coco_samples(ann, coco_dir / "val2017", all_captions=True)
    assert [s.caption for s in every][-2:] == ["A tall blue tower at dusk.", "The same tower, again."]
    out = tmp_path / "coco.safetensors"
    calib.build_calib_set(processor_dir, every, out, seq_len=200, max_pixels=28 * 28 * 8)
    tensors = _assert_rows_are_the_processors(out, processor, [(s.image, s.caption) for s in every],
                                              max_pixels=28 * 28 * 8, seq_len=200)
    assert tensors["input_ids"].shape == (4, 200)
    assert (tensors["image_grid_thw"].prod(dim=1) <= 28 * 28 * 8 // (14 * 14)).all()


def test_engine_reads_the_set_inspect_forward_and_quantize(aq_pkg, processor_dir, image_folder, tiny_model,
                                                           autoquant_bin, tmp_path):
    calib, _ = aq_pkg
    path = tmp_path / "calib.safetensors"
    calib.build_calib_set(processor_dir, calib.folder_samples(image_folder), path, model_dir=tiny_model)
    tensors, _ = _load(path)

    def run(*args):
        proc = subprocess.run([str(autoquant_bin), *map(str, args)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"autoquant {args[0]}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    assert "sample_patch_offsets" in run("inspect", path)
    logits_path = tmp_path / "logits.safetensors"
    run("model", "forward", "--model", tiny_model, "--input", path, "--output", logits_path)
    logits = _load(logits_path)[0]["logits"]
    assert logits.shape == (*tensors["input_ids"].shape, 512) and torch.isfinite(logits).all()
    scheme = tmp_path / "schemes" / "top50"
    run("quantize", "--model", tiny_model, "--calib", path, "--out", scheme, "--coverage", "top50")
    assert (scheme / "config.json").exists()


# ----------------------------------------------------------------------------- refusals

def test_existing_output_is_refused_and_left_untouched(aq_pkg, processor_dir, image_folder, tmp_path):
    calib, _ = aq_pkg
    out = tmp_path / "calib.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=str(out)):
        calib.build_calib_set(processor_dir, calib.folder_samples(image_folder), out)
    assert out.read_bytes() == b"precious"
    calib.build_calib_set(processor_dir, calib.folder_samples(image_folder), out, overwrite=True)
    assert _load(out)[1]["autoquant.format"] == "autoquant.calib.v1"


def test_caption_less_image_is_named(aq_pkg, tmp_path):
    calib, _ = aq_pkg
    Image.new("RGB", (56, 56)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("fine")
    Image.new("RGB", (56, 56)).save(tmp_path / "b.jpg")
    with pytest.raises(calib.CalibError, match=r"b\.jpg has no caption"):
        calib.folder_samples(tmp_path)


def test_missing_image_is_named_and_no_temporary_file_is_left(aq_pkg, processor_dir, tmp_path):
    calib, _ = aq_pkg
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (56, 56)).save(src / "here.png")
    (src / "captions.jsonl").write_text('{"image": "here.png", "caption": "ok"}\n'
                                        '{"image": "gone.png", "caption": "missing"}\n')
    samples = calib.folder_samples(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(FileNotFoundError, match=r"gone\.png"):
        calib.build_calib_set(processor_dir, samples, out_dir / "calib.safetensors")
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("doc, message", [
    ("{not json", "not JSON"),
    (json.dumps({"images": []}), "needs lists 'images' and 'annotations'"),
    (json.dumps({"images": [{"id": 1}], "annotations": []}), r"images\[0\] needs 'id' and a string 'file_name'"),
    (json.dumps({"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": [{"image_id": 1}]}),
     r"annotations\[0\] needs 'image_id' and a string 'caption'"),
    (json.dumps({"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": [{"image_id": 2, "caption": "c"}]}),
     r"image x\.jpg \(id 1\) has no caption"),
])
def test_bad_coco_json_is_refused_naming_the_file(aq_pkg, tmp_path, doc, message):
    calib, _ = aq_pkg
    ann = tmp_path / "captions_train2017.json"
    ann.write_text(doc)
    with pytest.raises(calib.CalibError, match=message) as e:
        calib.coco_samples(ann, tmp_path)
    assert str(ann) in str(e.value)


def test_sample_longer_than_seq_len_is_refused(aq_pkg, processor_dir, image_folder, tmp_path):
    calib, _ = aq_pkg
    with pytest.raises(calib.CalibError, match=r"beach\.png: the sample is \d+ tokens, longer than seq_len 20"):
        calib.build_calib_set(processor_dir, calib.folder_samples(image_folder), tmp_path / "c.safetensors",
                              seq_len=20)
    assert list(tmp_path.iterdir()) == []


def test_processor_that_does_not_fit_the_model_is_refused(aq_pkg, processor_dir, image_folder, tiny_model,
                                                           tmp_path):
    calib, _ = aq_pkg
    other = tmp_path / "other-model"
    other.mkdir()
    config = json.loads((tiny_model / "config.json").read_text())
    config["image_token_id"] = 151655
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(calib.CalibError, match=r"config\.json: image_token_id 151655 but the processor's "
                                               r"<\|image_pad\|> is 503"):
        calib.build_calib_set(processor_dir, calib.folder_samples(image_folder), tmp_path / "c.safetensors",
                              model_dir=other)


# ----------------------------------------------------------------------------- command line

def test_console_script_builds_and_exits_2_on_usage_and_validation_errors(aq_pkg, processor_dir, coco_dir,
                                                                          tiny_model, tmp_path):
    _, target = aq_pkg
    script = target / "bin" / "autoquant-calib"
    assert script.exists()
    env = dict(os.environ, PYTHONPATH=str(target))

    def cli(*args):
        return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=300)

    out = tmp_path / "cli.safetensors"
    args = ["--processor", processor_dir, "--coco", coco_dir / "annotations" / "captions_val2017.json",
            "--model", tiny_model, "--out", out]
    ok = cli(*args)
    assert ok.returncode == 0, ok.stderr
    assert f"wrote {out}: 3 samples" in ok.stdout
    again = cli(*args)
    assert again.returncode == 2 and "exists" in again.stderr and str(out) in again.stderr
    assert cli(*args, "--overwrite", "--limit", "1").returncode == 0
    assert _load(out)[1]["samples"] == "1"
    assert cli("--processor", processor_dir, "--out", out).returncode == 2            # no source
    assert cli(*args, "--seq-len", "0").returncode == 2
    missing = cli("--processor", tmp_path / "nowhere", "--images", coco_dir / "val2017", "--out", tmp_path / "x")
    assert missing.returncode == 2
    assert cli("--help").returncode == 0
    # python -m works the same way.
    mod = subprocess.run([sys.executable, "-m", "autoquant_client.calib", "--help"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert mod.returncode == 0 and "autoquant-calib" in mod.stdout

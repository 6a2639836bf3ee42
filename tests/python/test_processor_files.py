"""`autoquant model init` writes a Qwen2.5-VL tokenizer and processor with the model
(core/model/qwen2_5_vl/processor_files.h), so a generated checkpoint loads where a published one
does, and schemes carry the same files.

Checked against transformers itself (the venv's and 5.17, the GPU machine's): AutoProcessor and
AutoTokenizer load the directory offline; the special tokens have the config's ids; text round-trips
through encode/decode; the chat template writes Qwen2.5-VL's turns; the processor expands an image
into grid/4 <|image_pad|> tokens. `autoquant-calib` builds a calibration set with the model
directory as its processor, and our engine runs it. Files are the same for every seed, and a
quantized scheme holds byte-identical copies.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest
from PIL import Image

TF_517 = pathlib.Path(os.environ.get("AUTOQUANT_CACHE", pathlib.Path.home() / ".cache" / "autoquant")) / \
    "transformers-5.17"
FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "preprocessor_config.json"]

# Runs in a subprocess (for transformers 5.17 on PYTHONPATH); prints one JSON object.
PROBE = r"""
import json, sys
import transformers
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer
d = sys.argv[1]
p = AutoProcessor.from_pretrained(d, local_files_only=True)
tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
text = "Hello world, the quick brown fox. Ünïcödé ✓ 123\n\tend"
ids = tok(text)["input_ids"]
msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
chat = p.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
out = p(text=[chat], images=[Image.new("RGB", (100, 60), (200, 100, 50))], return_tensors="pt")
print(json.dumps({
    "version": transformers.__version__, "processor": type(p).__name__,
    "image_processor": type(p.image_processor).__name__, "len": len(tok),
    "ids": {t: tok.convert_tokens_to_ids(t) for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>",
            "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]},
    "image_token_id": p.image_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id,
    "roundtrip": tok.decode(ids) == text, "max_id": max(ids), "n_ids": len(ids), "chat": chat,
    "image_tokens": int((out["input_ids"] == p.image_token_id).sum()),
    "grid": out["image_grid_thw"].tolist(), "tokenizer_chat_template": tok.chat_template is not None,
}))
"""


def probe(model_dir, transformers_dir=None):
    env = dict(os.environ)
    if transformers_dir is not None:
        env["PYTHONPATH"] = str(transformers_dir)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(model_dir)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, autoquant_bin):
    out = tmp_path_factory.mktemp("processor-files") / "base"
    subprocess.run([str(autoquant_bin), "model", "init", "--preset", "tiny", "--out", str(out), "--seed", "3"],
                   check=True, capture_output=True)
    return out


@pytest.mark.parametrize("version", ["newest", "5.17"])
def test_transformers_loads_the_processor_with_the_configs_token_ids(tiny, version):
    config = json.loads((tiny / "config.json").read_text())
    generation = json.loads((tiny / "generation_config.json").read_text())
    got = probe(tiny, None if version == "newest" else TF_517)
    if version == "5.17":
        assert got["version"] == "5.17.0"
    assert got["processor"] == "Qwen2_5_VLProcessor" and got["image_processor"] == "Qwen2VLImageProcessor"
    ids = got["ids"]
    assert ids["<|endoftext|>"] == config["bos_token_id"] == generation["bos_token_id"] == generation["pad_token_id"]
    assert ids["<|im_end|>"] == config["eos_token_id"] == generation["eos_token_id"][0] == got["eos"]
    assert got["pad"] == ids["<|endoftext|>"]
    assert ids["<|vision_start|>"] == config["vision_start_token_id"]
    assert ids["<|vision_end|>"] == config["vision_end_token_id"]
    assert ids["<|vision_pad|>"] == config["vision_token_id"]
    assert ids["<|image_pad|>"] == config["image_token_id"] == got["image_token_id"]
    assert ids["<|video_pad|>"] == config["video_token_id"]
    assert got["len"] == config["vocab_size"]  # every id is a token: 491 BPE tokens + 21 added
    assert got["roundtrip"] and got["max_id"] < config["bos_token_id"]
    assert got["n_ids"] < len("Hello world, the quick brown fox. Ünïcödé ✓ 123\n\tend".encode())  # merges apply
    assert got["chat"] == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                           "<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n"
                           "<|im_start|>assistant\n")
    (t, h, w), = got["grid"]
    assert got["image_tokens"] == t * h * w // 4
    assert got["tokenizer_chat_template"]


def test_files_do_not_depend_on_the_seed(tiny, tmp_path, autoquant_bin):
    other = tmp_path / "other"
    subprocess.run([str(autoquant_bin), "model", "init", "--preset", "tiny", "--out", str(other), "--seed", "4"],
                   check=True, capture_output=True)
    for name in FILES:
        assert (other / name).read_bytes() == (tiny / name).read_bytes(), name


def test_schemes_carry_the_same_files(tiny, tmp_path, autoquant_bin):
    calib = tmp_path / "calib.safetensors"
    subprocess.run([str(autoquant_bin), "calib", "synth", "--model", str(tiny), "--out", str(calib), "--samples", "4",
                    "--seq-len", "32", "--images-per-sample", "1", "--image-size", "56x56", "--seed", "1"],
                   check=True, capture_output=True)
    scheme = tmp_path / "top50"
    proc = subprocess.run([str(autoquant_bin), "quantize", "--model", str(tiny), "--calib", str(calib), "--out",
                           str(scheme), "--coverage", "0.5"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in FILES:
        assert (scheme / name).read_bytes() == (tiny / name).read_bytes(), name
    assert probe(scheme)["processor"] == "Qwen2_5_VLProcessor"


def test_autoquant_calib_uses_the_model_directory_as_its_processor(tiny, tmp_path, client_package, autoquant_bin):
    _, target = client_package
    images = tmp_path / "images"
    images.mkdir()
    for i, (size, colour) in enumerate([((100, 60), (230, 200, 120)), ((64, 64), (20, 140, 60))]):
        Image.new("RGB", size, colour).save(images / f"img{i}.png")
        (images / f"img{i}.txt").write_text(f"Caption number {i}.")
    out = tmp_path / "calib.safetensors"
    env = dict(os.environ, PYTHONPATH=str(target))
    proc = subprocess.run([sys.executable, "-m", "autoquant_client.calib", "--processor", str(tiny), "--model",
                           str(tiny), "--images", str(images), "--out", str(out), "--max-pixels", str(28 * 28 * 16)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    logits = tmp_path / "logits.safetensors"
    proc = subprocess.run([str(autoquant_bin), "model", "forward", "--model", str(tiny), "--input", str(out),
                           "--output", str(logits)], capture_output=True, text=True)
    # The calibration file carries offsets the forward ignores; the engine reads every row.
    assert proc.returncode == 0, proc.stderr
    from safetensors import safe_open
    with safe_open(str(out), "pt") as f:
        ids = f.get_tensor("input_ids")
    config = json.loads((tiny / "config.json").read_text())
    assert ids.shape[0] == 2 and int((ids == config["image_token_id"]).sum()) > 0
    assert int(ids.max()) < config["vocab_size"]

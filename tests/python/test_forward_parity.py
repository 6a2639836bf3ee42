"""`autoquant model forward` against transformers' Qwen2_5_VLForConditionalGeneration
on the CPU in float32 (sdpa attention), for tiny random models created by
transformers and saved in both checkpoint key layouts, and for our own
`model init --preset tiny` checkpoint loaded by transformers."""
import subprocess

import pytest
import torch
from safetensors.torch import load_file
from transformers import Qwen2_5_VLForConditionalGeneration

import forward_helpers as fh

TOL = 1e-4


def cases():
    g = torch.Generator().manual_seed(1)
    t = lambda n: fh.random_text(g, n)  # noqa: E731
    return {
        "text_only": fh.make_inputs([t(23)], [], seed=1),
        "one_image": fh.make_inputs([t(5) + fh.image_block(112, 112) + t(9)], [(112, 112)], seed=2),
        "two_images_different_sizes": fh.make_inputs(
            [t(4) + fh.image_block(112, 112) + t(3) + fh.image_block(84, 168) + t(6)],
            [(112, 112), (84, 168)], seed=3),
        "batch_of_two_padded": fh.make_inputs(
            [t(3) + fh.image_block(112, 112) + t(12), t(2) + fh.image_block(56, 84) + t(4)],
            [(112, 112), (56, 84)], seed=4),
    }


CASES = cases()


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    model = fh.make_hf_model(tied=False, seed=0)
    return model, fh.save_layouts(model, tmp_path_factory.mktemp("untied"))


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    model = fh.make_hf_model(tied=True, seed=1)
    return model, fh.save_layouts(model, tmp_path_factory.mktemp("tied"))


def check(binary, model, model_dir, inputs, work):
    ref = fh.hf_logits(model, inputs)
    ours = fh.our_logits(binary, model_dir, inputs, work)
    diff = fh.max_abs_diff(ref, ours, inputs.get("attention_mask"))
    print(f"max |d logits| = {diff:.3g} (|logits| max {float(ref.abs().max()):.3g})")
    assert diff <= TOL
    return diff


@pytest.mark.parametrize("layout", ["legacy", "v5"])
@pytest.mark.parametrize("case", list(CASES))
def test_untied_matches_transformers(autoquant_bin, untied, tmp_path, case, layout):
    model, dirs = untied
    check(autoquant_bin, model, dirs[layout], CASES[case], tmp_path)


@pytest.mark.parametrize("case", ["one_image", "batch_of_two_padded"])
def test_tied_matches_transformers(autoquant_bin, tied, tmp_path, case):
    model, dirs = tied
    assert "lm_head.weight" not in load_file(dirs["legacy"] / "model.safetensors")
    check(autoquant_bin, model, dirs["legacy"], CASES[case], tmp_path)


def test_tiny_preset_loads_in_transformers_and_agrees(autoquant_bin, tmp_path):
    out = tmp_path / "tiny"
    proc = subprocess.run([str(autoquant_bin), "model", "init", "--preset", "tiny", "--out", str(out),
                           "--dtype", "float32", "--seed", "7"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, dtype=torch.float32,
                                                               attn_implementation="sdpa").eval()
    for case in ("one_image", "batch_of_two_padded"):
        check(autoquant_bin, model, out, CASES[case], tmp_path / case)

"""`autoquant model generate` against transformers' greedy `generate` (do_sample=False) on a tiny
random Qwen2.5-VL created by transformers, CPU float32.

One calibration-format file holds a right-padded text-only sample, an image sample and a left-padded
image sample; the command strips each sample's padding, and its tokens must equal those transformers
generates from the unpadded prompt (with mm_token_type_ids, as the processor passes them, so that
transformers computes the 3D M-RoPE positions). Stop ids: the checkpoint's eos by default (which ends
the text-only sample early on both sides), none (the whole budget), or a chosen token, which ends both
right after it is emitted. The JSON has the documented keys.
"""
import json
import subprocess

import pytest
import torch
from safetensors.torch import save_file

import forward_helpers as fh

NEW_TOKENS = 12
EOS = 2  # the tiny config's eos_token_id


def prompts():
    g = torch.Generator().manual_seed(5)
    t = lambda n: fh.random_text(g, n)  # noqa: E731
    return {
        "text_only": (t(17), []),
        "one_image": (t(4) + fh.image_block(112, 112) + t(7), [(112, 112)]),
        "image_left_padded": (t(3) + fh.image_block(56, 84) + t(5), [(56, 84)]),
    }


PROMPTS = prompts()


def write_calib(path, seq_len):
    """Samples in PROMPTS' order, padded to seq_len (left for *_left_padded, else right) with id 0.
    Returns {name: (unpadded input_ids [1, L], pixel_values, image_grid_thw)}."""
    gen = torch.Generator().manual_seed(6)
    ids = torch.zeros(len(PROMPTS), seq_len, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    pixels, grids, image_off, patch_off, rows = [], [], [0], [0], {}
    for i, (name, (tokens, images)) in enumerate(PROMPTS.items()):
        sl = slice(seq_len - len(tokens), seq_len) if name.endswith("left_padded") else slice(0, len(tokens))
        ids[i, sl] = torch.tensor(tokens)
        mask[i, sl] = 1
        grid = torch.tensor([[1, h // fh.PATCH, w // fh.PATCH] for h, w in images], dtype=torch.int64).view(-1, 3)
        pv = torch.randn(int(grid.prod(-1).sum()), fh.PATCH_DIM, generator=gen)
        pixels.append(pv)
        grids.append(grid)
        image_off.append(image_off[-1] + len(images))
        patch_off.append(patch_off[-1] + pv.shape[0])
        rows[name] = (torch.tensor([tokens]), pv if images else None, grid if images else None)
    save_file({"input_ids": ids, "attention_mask": mask, "pixel_values": torch.cat(pixels),
               "image_grid_thw": torch.cat(grids), "sample_image_offsets": torch.tensor(image_off),
               "sample_patch_offsets": torch.tensor(patch_off)}, path,
              metadata={"format": "pt", "autoquant.format": "autoquant.calib.v1", "samples": str(len(PROMPTS)),
                        "seq_len": str(seq_len)})
    return rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    model = fh.make_hf_model(tied=False, seed=2)
    model.save_pretrained(root / "model")
    rows = write_calib(root / "calib.safetensors", seq_len=max(len(t) for t, _ in PROMPTS.values()) + 3)
    return model, root / "model", root / "calib.safetensors", rows


def hf_generate(model, row, **kwargs):
    ids, pixel_values, grid = row
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if pixel_values is not None:
        inputs.update(pixel_values=pixel_values, image_grid_thw=grid,
                      mm_token_type_ids=(ids == model.config.image_token_id).int())
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=NEW_TOKENS, **kwargs)
    return out[0, ids.shape[1]:].tolist()


def our_generate(binary, model_dir, calib, sample, *extra):
    proc = subprocess.run([str(binary), "model", "generate", "--model", str(model_dir), "--inputs", str(calib),
                           "--sample", str(sample), "--max-new-tokens", str(NEW_TOKENS), "--device", "cpu",
                           "--dtype", "float32", "--json", *extra], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("case", list(PROMPTS))
def test_tokens_match_transformers_greedy(autoquant_bin, setup, case):
    """Default stop ids on both sides: the checkpoint's eos (2), which ends text_only early."""
    model, model_dir, calib, rows = setup
    ref = hf_generate(model, rows[case])
    ours = our_generate(autoquant_bin, model_dir, calib, list(PROMPTS).index(case))
    print(f"{case}: {ours}")
    assert list(ours) == ["tokens", "finite", "prefill_seconds", "decode_seconds", "tokens_per_second"]
    assert ours["tokens"] == ref
    assert len(ref) == NEW_TOKENS or ref[-1] == EOS
    assert ours["finite"] is True
    assert ours["prefill_seconds"] > 0 and ours["decode_seconds"] > 0 and ours["tokens_per_second"] > 0


@pytest.mark.parametrize("case", list(PROMPTS))
def test_without_stop_tokens_the_whole_budget_matches(autoquant_bin, setup, case):
    model, model_dir, calib, rows = setup
    ref = hf_generate(model, rows[case], eos_token_id=None)
    assert len(ref) == NEW_TOKENS
    ours = our_generate(autoquant_bin, model_dir, calib, list(PROMPTS).index(case), "--stop-token-ids", "none")
    assert ours["tokens"] == ref


@pytest.mark.parametrize("case", ["text_only", "one_image"])
def test_stop_token_ends_generation_as_in_transformers(autoquant_bin, setup, case):
    model, model_dir, calib, rows = setup
    full = hf_generate(model, rows[case], eos_token_id=None)
    # The latest token that occurs there first and is not the last: generation must stop right after it.
    stop_at = max(i for i, t in enumerate(full[:-1]) if full.index(t) == i and t != EOS)
    stop = full[stop_at]
    unused = min(set(range(3, 500)) - set(full))  # a second stop id that never comes
    ref = hf_generate(model, rows[case], eos_token_id=[unused, stop])
    assert ref == full[:stop_at + 1]
    ours = our_generate(autoquant_bin, model_dir, calib, list(PROMPTS).index(case),
                        "--stop-token-ids", f"{unused},{stop}")
    assert ours["tokens"] == ref


def test_bad_sample_is_a_usage_error(autoquant_bin, setup):
    _, model_dir, calib, _ = setup
    proc = subprocess.run([str(autoquant_bin), "model", "generate", "--model", str(model_dir), "--inputs", str(calib),
                           "--sample", str(len(PROMPTS)), "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "--sample 3" in proc.stderr

"""`autoquant model config --preset NAME`: the presets' config.json read by transformers' own
Qwen2_5_VLConfig, the model it builds (on the meta device, so no memory) has the published parameter
counts (Qwen2.5-VL-3B-Instruct: 3.75 B, 7B-Instruct: 8.29 B, as the Hub lists them), and the 7B's
lm_head is its own tensor while the 3B ties it to the embeddings."""
import json

import pytest

import quant_helpers as qh

PUBLISHED = {"qwen2.5-vl-3b": 3.75e9, "qwen2.5-vl-7b": 8.29e9}


@pytest.mark.parametrize("preset", ["tiny", "qwen2.5-vl-3b", "qwen2.5-vl-7b"])
def test_preset_config_builds_in_transformers(autoquant_bin, preset):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    proc = qh.run(autoquant_bin, "model", "config", "--preset", preset, check=True)
    cfg = json.loads(proc.stdout)
    assert cfg["model_type"] == "qwen2_5_vl" and cfg["torch_dtype"] == "bfloat16"
    config = Qwen2_5_VLConfig(**cfg)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    n = sum(p.numel() for p in model.parameters())
    if preset in PUBLISHED:
        assert abs(n - PUBLISHED[preset]) / PUBLISHED[preset] < 0.005, (preset, n)
    tied = model.lm_head.weight is model.model.language_model.embed_tokens.weight
    assert tied == (preset == "qwen2.5-vl-3b"), preset


def test_unknown_preset_is_a_clear_error(autoquant_bin):
    proc = qh.run(autoquant_bin, "model", "config", "--preset", "qwen2.5-vl-72b")
    assert proc.returncode == 2
    assert "unknown preset 'qwen2.5-vl-72b'" in proc.stderr and "qwen2.5-vl-7b" in proc.stderr

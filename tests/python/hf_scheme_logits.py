"""Runs a checkpoint through transformers in a fresh interpreter, so that a test can use another
transformers version (put first on PYTHONPATH) than the one installed in the venv.

    python hf_scheme_logits.py MODEL_DIR INPUTS.safetensors DTYPE OUT.safetensors

Loads Qwen2_5_VLForConditionalGeneration.from_pretrained(MODEL_DIR, dtype=DTYPE) exactly as the seeds'
evaluation scripts do, runs the inputs (forward_helpers.hf_logits) and writes the logits as float32.
Prints one JSON line: transformers and compressed-tensors versions, load problems, the dtype of the
first decompressed quantized weight."""
import json
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import forward_helpers as fh  # noqa: E402


def main():
    model_dir, inputs_path, dtype, out = sys.argv[1:5]
    import transformers
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2_5_VLForConditionalGeneration
    try:
        import compressed_tensors
        ct_version = compressed_tensors.__version__
    except ImportError:
        ct_version = None
    model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        model_dir, dtype=getattr(torch, dtype), output_loading_info=True)
    logits = fh.hf_logits(model.eval(), load_file(inputs_path))
    save_file({"logits": logits.float().contiguous()}, out)
    print(json.dumps({"transformers": transformers.__version__, "compressed_tensors": ct_version,
                      "problems": {k: sorted(v) for k, v in info.items() if v},
                      "weight_dtype": str(next(model.parameters()).dtype)}))


if __name__ == "__main__":
    main()

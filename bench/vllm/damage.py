"""Doubles one FP8 weight scale of a scheme copy, in place: the deliberately damaged checkpoint that the
vLLM check (scripts/gpu/verify_vllm.sh) must flag. Picks the quantized MLP down_proj of the deepest
decoder layer (nearest the logits, so the damage is not averaged away). Prints JSON naming the tensor.

    python3 damage.py SCHEME_COPY_DIR
"""
import json
import os
import pathlib
import re
import sys

from safetensors import safe_open
from safetensors.torch import save_file


def main(d: pathlib.Path):
    index = json.loads((d / "model.safetensors.index.json").read_text())["weight_map"]
    layer = re.compile(r"layers\.(\d+)\.mlp\.down_proj\.weight_scale$")
    candidates = [(int(m.group(1)), k) for k in index if (m := layer.search(k)) and "visual" not in k]
    if not candidates:
        sys.exit(f"{d}: no quantized down_proj weight_scale to damage")
    _, name = max(candidates)
    shard = d / index[name]
    with safe_open(str(shard), "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    before = tensors[name].clone()
    tensors[name] = before * 2
    tmp = shard.with_name(shard.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, shard)  # the copy's own file: the scheme it came from is untouched
    print(json.dumps({"tensor": name, "shard": shard.name, "before": before.flatten().tolist(),
                      "after": tensors[name].flatten().tolist()}))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))

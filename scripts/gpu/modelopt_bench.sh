#!/usr/bin/env bash
# Same-run comparison on the GPU machine: ModelOpt 0.47 `auto_quantize`
# (gradient, FP8 vs NONE) against `autoquant quantize` on the random-weight
# qwen2.5-vl-3b preset with the same 128 calibration samples, batch size 1
# (ModelOpt's reference harness feeds one sample per step), bf16, vision
# disabled. Reports wall time of calibration + scoring and peak GPU memory.
# Needs .gpu-bundle and .whl (the ModelOpt wheels) carried. Output in $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/aq-out}"; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
AQ="${AUTOQUANT_BUILD_DIR:?}/bin/autoquant"
W=/tmp/aq3b; mkdir -p "$W"
[ -d "$W/base" ] || "$AQ" model init --preset qwen2.5-vl-3b --out "$W/base" --dtype bfloat16 --seed 0 2>&1 | tail -1
[ -f "$W/calib.safetensors" ] || "$AQ" calib synth --model "$W/base" --out "$W/calib.safetensors" --samples 128 \
  --seq-len 768 --images-per-sample 1 --image-size 448x448 --seed 1 2>&1 | tail -1
s=$SECONDS
"$AQ" quantize --model "$W/base" --calib "$W/calib.safetensors" --out "$W/ours-b1" --coverage top50 --device cuda \
  --batch-size 1 --score-steps 128 --calib-steps 128 --baseline-cache "$W/cache-b1" --json --overwrite \
  > "$OUT/ours-b1.json" 2> "$OUT/ours-b1.log"
echo "ours rc=$? wall $((SECONDS - s)) s"; cat "$OUT/ours-b1.json"
s=$SECONDS
PYTHONPATH=/tmp/site:${PYTHONPATH:-} python3 tests/python/modelopt_reference.py --model "$W/base" \
  --calib "$W/calib.safetensors" --out "$OUT/modelopt-scores.json" --details "$OUT/modelopt-details.json" \
  --steps 128 --device cuda --dtype bfloat16 > "$OUT/modelopt.log" 2>&1
echo "modelopt rc=$? wall $((SECONDS - s)) s"; grep -E "auto_quantize|peak|best:" "$OUT/modelopt.log" | cut -c1-400; tail -3 "$OUT/modelopt.log" | cut -c1-300

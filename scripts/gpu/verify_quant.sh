#!/usr/bin/env bash
# GPU check of the AutoQuant engine at the real 3B shapes (run on the GPU
# machine via scripts/gpu/run.sh exec, with .gpu-bundle carried):
#   1. random-weight qwen2.5-vl-3b checkpoint (bf16) + 128 calibration samples
#      (one 448x448 image + text, 768 tokens each)
#   2. `autoquant quantize` top50: calibration + gradient scoring + export;
#      reports scoring time and the CUDA allocator's peak reserved memory
#   3. top10 from the same baseline (must reuse it: no scoring pass)
#   4. `autoquant diff` on the two schemes
# Writes quant-3b.json and logs to $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/aq-out}"
mkdir -p "$OUT"
AQ="${AUTOQUANT_BUILD_DIR:?}/bin/autoquant"
W=/tmp/aq3b
BATCH="${BATCH:-4}"
mkdir -p "$W"
t() { local s=$SECONDS; "$@"; local rc=$?; echo "[$(basename "$1") $2: $((SECONDS - s)) s, rc=$rc]" >&2; return $rc; }
[ -d "$W/base" ] || t "$AQ" model init --preset qwen2.5-vl-3b --out "$W/base" --dtype bfloat16 --seed 0 2>&1 | tail -2
[ -f "$W/calib.safetensors" ] || t "$AQ" calib synth --model "$W/base" --out "$W/calib.safetensors" --samples 128 \
  --seq-len 768 --images-per-sample 1 --image-size 448x448 --seed 1 2>&1 | tail -2
(while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 1; done) > "$OUT/nvidia-smi-mem.log" &
SMI=$!
t "$AQ" quantize --model "$W/base" --calib "$W/calib.safetensors" --out "$W/top50" --coverage top50 \
  --device cuda --batch-size "$BATCH" --baseline-cache "$W/cache" --json --overwrite > "$OUT/top50.json" 2> "$OUT/top50.log"
echo "top50 rc=$?"; tail -3 "$OUT/top50.log"; cat "$OUT/top50.json"
kill $SMI
t "$AQ" quantize --model "$W/base" --calib "$W/calib.safetensors" --out "$W/top10" --coverage top10 \
  --device cuda --batch-size "$BATCH" --baseline-cache "$W/cache" --json --overwrite > "$OUT/top10.json" 2> "$OUT/top10.log"
echo "top10 rc=$?"; tail -2 "$OUT/top10.log"; cat "$OUT/top10.json"
t "$AQ" diff "$W/top10" "$W/top50" > "$OUT/diff.txt" 2>&1; echo "diff rc=$?"; tail -4 "$OUT/diff.txt"
echo "nvidia-smi peak MiB (whole GPU, includes CUDA context): $(sort -n "$OUT/nvidia-smi-mem.log" | tail -1)"
cp "$W/top50/layer-sensitivity/per-layer-sensitivity.md" "$OUT/top50-per-layer-sensitivity.md" 2>/dev/null

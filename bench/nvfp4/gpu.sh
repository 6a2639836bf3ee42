#!/usr/bin/env bash
# Issue 26 on the GPU machine, through scripts/gpu/run.sh exec (.gpu-bundle and .whl carried):
#   numerics  NVFP4 at the 3B's shapes: ours (kernel and torch paths) vs ModelOpt's Triton kernel and export
#   tiny      scores vs ModelOpt auto_quantize (NVFP4 + FP8) on the tiny preset, both on CUDA
#   3b        the 3B: scoring NVFP4 + FP8 vs FP8 alone (time, peak memory); with MO=1 ModelOpt's scores too
#   7b        the 7B preset's NVFP4 + FP8 baseline: peak device memory
# Results in $OUT; work in /tmp/aq-nvfp4.
set -uo pipefail
OUT="${OUT:-/tmp/aq-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/nvfp4.log") 2>&1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
AQ="${AUTOQUANT_BUILD_DIR:?run through scripts/gpu/run.sh}/bin/autoquant"
PY="${PYTHON:-python3}"
W=/tmp/aq-nvfp4
mkdir -p "$W"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
if ! "$PY" -c 'import modelopt' 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/mo-site "$ROOT"/.whl/*.whl
  export PYTHONPATH="/tmp/mo-site${PYTHONPATH:+:$PYTHONPATH}"
fi
t() { local s=$SECONDS; "$@"; local rc=$?; echo "[$(basename "$1") ${2:-}: $((SECONDS - s)) s, rc=$rc]"; return $rc; }
rc=0
for part in "$@"; do
  echo "=== $part ($SECONDS s)"
  case "$part" in
    numerics)
      t "$PY" "$ROOT/bench/nvfp4/numerics_vs_modelopt.py" --autoquant "$AQ" --work "$W/numerics" \
        --out "$OUT/numerics.json" || rc=1 ;;
    tiny)
      [ -d "$W/tiny" ] || "$AQ" model init --preset tiny --out "$W/tiny" --seed 0
      "$AQ" calib synth --model "$W/tiny" --out "$W/tiny-calib.safetensors" --samples 8 --seq-len 96 \
        --images-per-sample 1 --image-size 56x56 --seed 1
      t "$PY" "$ROOT/bench/nvfp4/scores_vs_modelopt.py" --autoquant "$AQ" --model "$W/tiny" \
        --calib "$W/tiny-calib.safetensors" --steps 8 --device cuda --dtype float32 --work "$W/tiny-work" \
        --out "$OUT/scores-tiny.json" || rc=1 ;;
    3b)
      [ -d "$W/base3b" ] || t "$AQ" model init --preset qwen2.5-vl-3b --out "$W/base3b" --dtype bfloat16 --seed 0
      [ -f "$W/calib3b.safetensors" ] || t "$AQ" calib synth --model "$W/base3b" --out "$W/calib3b.safetensors" \
        --samples 32 --seq-len 768 --images-per-sample 1 --image-size 448x448 --seed 1
      t "$PY" "$ROOT/bench/nvfp4/scores_vs_modelopt.py" --autoquant "$AQ" --model "$W/base3b" \
        --calib "$W/calib3b.safetensors" --steps "${STEPS3B:-32}" --batch-size "${BATCH3B:-1}" --device cuda \
        --dtype bfloat16 --work "$W/3b-work" --out "$OUT/scores-3b.json" $([ "${MO:-0}" = 1 ] || echo --skip-modelopt) \
        || rc=1 ;;
    7b)
      [ -d "$W/base7b" ] || t "$AQ" model init --preset qwen2.5-vl-7b --out "$W/base7b" --dtype bfloat16 --seed 0
      [ -f "$W/calib7b.safetensors" ] || t "$AQ" calib synth --model "$W/base7b" --out "$W/calib7b.safetensors" \
        --samples 32 --seq-len 768 --images-per-sample 1 --image-size 448x448 --seed 1
      t "$AQ" quantize --model "$W/base7b" --calib "$W/calib7b.safetensors" --out "$W/7b-mixed" --formats nvfp4,fp8 \
        --effective-bits 6 --batch-size 4 --device cuda --baseline-cache "$W/cache7b" --overwrite --json \
        > "$OUT/7b-mixed.json" || rc=1
      grep -E '"(baseline_seconds|baseline_peak_device_bytes|effective_bits|export_seconds)"' "$OUT/7b-mixed.json" ;;
    *) echo "unknown part $part"; rc=2 ;;
  esac
done
exit $rc

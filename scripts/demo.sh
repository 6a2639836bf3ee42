#!/usr/bin/env bash
# The main job on an embedded default, on a fresh machine: sets up and builds
# (scripts/setup.sh), generates a tiny random Qwen2.5-VL and a synthetic
# calibration set, quantizes three coverage schemes (top10, top50, top100)
# from one sensitivity baseline, and proves with `autoquant diff` that they
# really differ. Runs on the GPU when there is one, else on the CPU.
# Usage: scripts/demo.sh [WORKDIR]   (default: ./demo-out)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT/demo-out}"
bash "$ROOT/scripts/setup.sh"
AQ="$ROOT/build/bin/autoquant"
mkdir -p "$WORK"
[ -d "$WORK/base" ] || "$AQ" model init --preset tiny --out "$WORK/base" --seed 0
[ -f "$WORK/calib.safetensors" ] || "$AQ" calib synth --model "$WORK/base" --out "$WORK/calib.safetensors" \
  --samples 16 --seq-len 96 --images-per-sample 1 --image-size 56x56 --seed 1
for c in 10 50 100; do
  "$AQ" quantize --model "$WORK/base" --calib "$WORK/calib.safetensors" --out "$WORK/top$c" --coverage "top$c" \
    --baseline-cache "$WORK/baselines" --overwrite --json
done
"$AQ" diff "$WORK/top10" "$WORK/top50" "$WORK/top100"
echo "schemes in $WORK; per-layer sensitivity: $WORK/top50/layer-sensitivity/per-layer-sensitivity.md"

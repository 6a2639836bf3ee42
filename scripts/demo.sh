#!/usr/bin/env bash
# The main job on an embedded default, on a fresh machine: sets up and builds
# (scripts/setup.sh), generates a tiny random Qwen2.5-VL and a synthetic
# calibration set, starts autoquantd on them, quantizes three coverage schemes
# (top10, top50, top100) as one sweep sharing one sensitivity baseline, and
# proves with `autoquant diff` that they really differ. Runs on the GPU when there is one, else on the CPU.
# Usage: scripts/demo.sh [WORKDIR]   (default: ./demo-out)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT/demo-out}"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
export BUILD_DIR
bash "$ROOT/scripts/setup.sh"
AQ="$BUILD_DIR/bin/autoquant"
AUTOQUANT_CACHE_PY="${AUTOQUANT_CACHE:-$HOME/.cache/autoquant}/venv/bin/python"
mkdir -p "$WORK"
[ -d "$WORK/base" ] || "$AQ" model init --preset tiny --out "$WORK/base" --seed 0
[ -f "$WORK/calib.safetensors" ] || "$AQ" calib synth --model "$WORK/base" --out "$WORK/calib.safetensors" \
  --samples 16 --seq-len 96 --images-per-sample 1 --image-size 56x56 --seed 1
# Through the daemon: autoquantd loads the model and calibration set once, one SubmitSweep queues
# three schemes sharing one baseline, and the driver follows them to SUCCEEDED, scrapes /metrics,
# stops the daemon (SIGTERM) and runs `autoquant diff` on the three schemes.
"$AUTOQUANT_CACHE_PY" "$ROOT/bench/daemon_sweep/sweep_bench.py" --autoquantd "$BUILD_DIR/bin/autoquantd" \
  --autoquant "$AQ" --model "$WORK/base" --calib "$WORK/calib.safetensors" --work "$WORK/daemon" \
  --out "$WORK/daemon-out" --device auto --batch-size 1 --points top10,top50,top100 --skip-disk-check
echo "schemes in $WORK/daemon/models; summary: $WORK/daemon-out/daemon-sweep.md;" \
  "per-layer sensitivity: $WORK/daemon/models/top50/layer-sensitivity/per-layer-sensitivity.md"

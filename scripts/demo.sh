#!/usr/bin/env bash
# The main job on an embedded default, on a fresh machine: sets up and builds
# (scripts/setup.sh), generates a tiny random Qwen2.5-VL and a synthetic
# calibration set, starts autoquantd on them (SQLite store, GPU if there is one,
# else CPU), sweeps top10/top50/top100 through the `autoquant` CLI with
# progress (one baseline shared by the three), evaluates each against the base
# model on a held-out evaluation set, proves with `autoquant diff` that the
# schemes really differ, writes the coverage trade-off report (report.md,
# report.json, report.png) and stops the daemon cleanly (SIGTERM, exit 0).
# Usage: scripts/demo.sh [WORKDIR]   (default: ./demo-out; a repeat run replaces its schemes)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT/demo-out}"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
export BUILD_DIR
# The demo runs two programs: build those (and what they link), not the tests and benchmarks.
AUTOQUANT_BUILD_TARGET="${AUTOQUANT_BUILD_TARGET:-autoquant autoquantd}" bash "$ROOT/scripts/setup.sh"
AQ="$BUILD_DIR/bin/autoquant"
AQD="$BUILD_DIR/bin/autoquantd"
mkdir -p "$WORK"
say() { printf '\n== %s\n' "$*"; }

say "a tiny random Qwen2.5-VL and a synthetic calibration set in $WORK"
[ -d "$WORK/base" ] || "$AQ" model init --preset tiny --out "$WORK/base" --seed 0
[ -f "$WORK/calib.safetensors" ] || "$AQ" calib synth --model "$WORK/base" --out "$WORK/calib.safetensors" \
  --samples 16 --seq-len 96 --images-per-sample 1 --image-size 56x56 --seed 1
[ -f "$WORK/eval.safetensors" ] || "$AQ" calib synth --model "$WORK/base" --out "$WORK/eval.safetensors" \
  --samples 12 --seq-len 96 --images-per-sample 1 --image-size 56x56 --seed 2   # held out: another seed

say "autoquantd: loads the model and the calibration set once, keeps them on the device"
# Gone before the daemon starts: a repeat run must not read the last run's port from it (the shell may
# look before the new daemon's redirection has emptied the file).
rm -f "$WORK/autoquantd.out"
"$AQD" --model "$WORK/base" --calib "$WORK/calib.safetensors" --models-root "$WORK/models" \
  --eval-set "$WORK/eval.safetensors" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --device auto >"$WORK/autoquantd.out" 2>"$WORK/autoquantd.log" &
DAEMON=$!
stop_daemon() {
  if kill -0 "$DAEMON" 2>/dev/null; then
    kill -TERM "$DAEMON"
    wait "$DAEMON"
  fi
}
trap 'stop_daemon || true' EXIT
# The port is stdout's first line; then health SERVING. Each wait is bounded: a daemon that never gets
# there is a failure with its log, not a demo that hangs.
waited=0
until [ -s "$WORK/autoquantd.out" ]; do
  kill -0 "$DAEMON" 2>/dev/null || { cat "$WORK/autoquantd.log"; exit 1; }
  [ $((waited += 1)) -le 600 ] || { echo "autoquantd printed no port in 60 s; its log:"; cat "$WORK/autoquantd.log"; exit 1; }
  sleep 0.1
done
export AUTOQUANT_SERVER="127.0.0.1:$(head -n1 "$WORK/autoquantd.out")"
waited=0
until "$AQ" server info --json 2>/dev/null | grep -q '"serving": *true'; do
  kill -0 "$DAEMON" 2>/dev/null || { cat "$WORK/autoquantd.log"; exit 1; }
  [ $((waited += 1)) -le 1500 ] || { echo "autoquantd at $AUTOQUANT_SERVER not serving after 5 min; its log:"; cat "$WORK/autoquantd.log"; exit 1; }
  sleep 0.2
done
"$AQ" server info

say "one sweep, three schemes, each evaluated: autoquant sweep --coverages top10,top50,top100 --evaluate --wait"
"$AQ" sweep --coverages top10,top50,top100 --overwrite --evaluate --wait

say "do they really differ? autoquant diff"
"$AQ" diff "$WORK/models/top10" "$WORK/models/top50" "$WORK/models/top100"

say "the coverage trade-off: autoquant report (report.md, report.json, report.png)"
AUTOQUANT_PYTHON="${AUTOQUANT_PYTHON:-${AUTOQUANT_CACHE:-$HOME/.cache/autoquant}/venv/bin/python}" \
  "$AQ" report "$WORK/models/top10" "$WORK/models/top50" "$WORK/models/top100" --out "$WORK/report" --overwrite
sed -n '1,/^## Findings/p' "$WORK/report/report.md"

say "stopping autoquantd (SIGTERM: drain, exit 0)"
trap - EXIT
kill -TERM "$DAEMON"
rc=0
wait "$DAEMON" || rc=$?
[ "$rc" -eq 0 ] || { echo "autoquantd exited with $rc; its log: $WORK/autoquantd.log"; exit 1; }
echo "schemes: $WORK/models/{top10,top50,top100}; daemon log: $WORK/autoquantd.log;" \
  "per-layer sensitivity: $WORK/models/top50/layer-sensitivity/per-layer-sensitivity.md;" \
  "report: $WORK/report/report.md"

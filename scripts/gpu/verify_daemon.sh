#!/usr/bin/env bash
# GPU benchmark of autoquantd at the real 3B shapes (run on the GPU machine
# via scripts/gpu/run.sh exec, with .gpu-bundle carried, and .gpu-deps when
# the machine's Python lacks grpcio-tools):
#   1. random-weight qwen2.5-vl-3b checkpoint (bf16) + 128 calibration samples
#      (one 448x448 image + text, 768 tokens each), the same as verify_quant.sh
#   2. bench/daemon_sweep/sweep_bench.py: raw read of model + calibration set,
#      autoquantd start to SERVING, one SubmitSweep of top10..top100, /metrics,
#      nvidia-smi, SIGTERM exit code, `autoquant diff` of the ten schemes
# Writes daemon-sweep.{json,md}, daemon.log, metrics-{first,mid,last}.prom and
# verify-daemon.log to $OUT. The schemes (about 60 GB at 3B) go under the
# largest of $W and /dev/shm unless WORK is set; they are removed afterwards
# unless KEEP_SCHEMES=1. BATCH (default 4) is the daemon's --batch-size; POINTS (default
# top10,...,top100) is passed as --points.
# LIMIT (default 570) is the seconds this script may take in all: the
# benchmark gets what is left after the setup and stops itself (daemon
# included) before the device tool's 600 s limit.
set -uo pipefail
OUT="${OUT:-/tmp/aq-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/verify-daemon.log") 2>&1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${AUTOQUANT_BUILD_DIR:?run through scripts/gpu/run.sh, which sets AUTOQUANT_BUILD_DIR}/bin"
AQ="$BIN/autoquant"
AQD="$BIN/autoquantd"
PY="${PYTHON:-python3}"
W=/tmp/aq3b
BATCH="${BATCH:-4}"
LIMIT="${LIMIT:-570}"
for b in "$AQ" "$AQD"; do [ -x "$b" ] || { echo "missing $b (rebuild the bundle: scripts/gpu/bundle.sh)"; exit 2; }; done
mkdir -p "$W"
t() { local s=$SECONDS; "$@"; local rc=$?; echo "[$(basename "$1") $2: $((SECONDS - s)) s, rc=$rc]" >&2; return $rc; }

"$PY" -c 'import grpc, grpc_tools.protoc, google.protobuf as p; print("grpcio", grpc.__version__, "protobuf", p.__version__)' \
  || { echo "grpcio / grpcio-tools not usable with $PY (above): carry .gpu-deps (bench/daemon_sweep/README.md)"; exit 2; }

[ -d "$W/base" ] || t "$AQ" model init --preset qwen2.5-vl-3b --out "$W/base" --dtype bfloat16 --seed 0 2>&1 | tail -2
[ -f "$W/calib.safetensors" ] || t "$AQ" calib synth --model "$W/base" --out "$W/calib.safetensors" --samples 128 \
  --seq-len 768 --images-per-sample 1 --image-size 448x448 --seed 1 2>&1 | tail -2
if [ ! -d "$W/base" ] || [ ! -f "$W/calib.safetensors" ]; then echo "setup failed"; exit 2; fi

# Where the ten schemes go: the filesystem with the most room (the disk may be too small for them).
if [ -z "${WORK:-}" ]; then
  best=0
  for d in "$W" /dev/shm; do
    if [ ! -d "$d" ] || [ ! -w "$d" ]; then continue; fi
    avail=$(df -Pk "$d" | awk 'NR==2 {print $4}')
    echo "free under $d: $((avail / 1024 / 1024)) GiB"
    if [ "${avail:-0}" -gt "$best" ]; then best=$avail; WORK="$d/aq-daemon-sweep"; fi
  done
fi
echo "work dir: $WORK"

left=$((LIMIT - SECONDS))
[ "$left" -gt 60 ] || { echo "only $left s left of LIMIT=$LIMIT after the setup"; exit 2; }
echo "benchmark time limit: $left s"
s=$SECONDS
timeout -s TERM -k 45 "$left" "$PY" "$ROOT/bench/daemon_sweep/sweep_bench.py" --autoquantd "$AQD" --autoquant "$AQ" \
  --model "$W/base" --calib "$W/calib.safetensors" --work "$WORK" --out "$OUT" \
  --batch-size "$BATCH" --device cuda --stop-timeout 20 ${POINTS:+--points "$POINTS"}
rc=$?
echo "sweep_bench rc=$rc wall $((SECONDS - s)) s"
[ -f "$OUT/daemon-sweep.md" ] && cat "$OUT/daemon-sweep.md"
if pgrep -x autoquantd >/dev/null; then echo "autoquantd still running:"; pgrep -a -x autoquantd; rc=1; fi
[ "${KEEP_SCHEMES:-0}" = 1 ] || rm -rf "$WORK/models"
exit $rc

#!/usr/bin/env bash
# GPU evaluation run (issue 10), through scripts/gpu/run.sh exec with .gpu-bundle carried:
#   1. random-weight qwen2.5-vl-3b (bf16), 128 calibration samples (448x448 image + text, 768 tokens),
#      a held-out evaluation set: 24 samples with an image + 8 text-only (other seeds)
#   2. autoquantd --eval-set (fp8 matmul auto = _scaled_mm on cc >= 8.9), `autoquant sweep
#      --coverages 10,50,100 --evaluate --wait --json`: eval time per scheme, generation tokens/s
#   3. a second daemon with --eval-fp8-matmul emulated: `autoquant eval` of the same three schemes
#   4. bench/eval/eval_bench.py compare: _scaled_mm against emulation, per sample and in summary
# Writes eval-bench.{json,md} and verify-eval.log to $OUT, and eval-results.tgz: the evaluation.json
# files of both runs, the jobs' JSON, the daemon logs, server info and the report.
set -uo pipefail
OUT="${OUT:-/tmp/aq-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/verify-eval.log") 2>&1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${AUTOQUANT_BUILD_DIR:?run through scripts/gpu/run.sh, which sets AUTOQUANT_BUILD_DIR}/bin"
AQ="$BIN/autoquant"
AQD="$BIN/autoquantd"
PY="${PYTHON:-python3}"
W=/tmp/aq3b
M=/dev/shm/aq-eval/models
GEN="${GEN:-32}"
mkdir -p "$W" "$M"
t() { local s=$SECONDS; "$@"; local rc=$?; echo "[$(basename "$1") $2: $((SECONDS - s)) s, rc=$rc]" >&2; return $rc; }

[ -d "$W/base" ] || t "$AQ" model init --preset qwen2.5-vl-3b --out "$W/base" --dtype bfloat16 --seed 0 2>&1 | tail -2
[ -f "$W/calib.safetensors" ] || t "$AQ" calib synth --model "$W/base" --out "$W/calib.safetensors" --samples 128 \
  --seq-len 768 --images-per-sample 1 --image-size 448x448 --seed 1 2>&1 | tail -2
t "$AQ" calib synth --model "$W/base" --out "$W/eval-img.safetensors" --samples 24 --seq-len 768 \
  --images-per-sample 1 --image-size 448x448 --seed 7 2>&1 | tail -1
t "$AQ" calib synth --model "$W/base" --out "$W/eval-txt.safetensors" --samples 8 --seq-len 768 \
  --images-per-sample 0 --seed 8 2>&1 | tail -1
"$PY" "$ROOT/bench/eval/eval_bench.py" merge "$W/eval.safetensors" "$W/eval-img.safetensors" "$W/eval-txt.safetensors" \
  || { echo "merging the evaluation set failed"; exit 2; }

start_daemon() {  # $1: name (logs), rest: extra flags. Sets PID and PORT.
  local name="$1" log="$OUT/daemon-$1.log"; shift
  "$AQD" --model "$W/base" --calib "$W/calib.safetensors" --models-root "$M" --listen 127.0.0.1:0 \
    --metrics 127.0.0.1:0 --device cuda --batch-size 4 --eval-set "$W/eval.safetensors" \
    --eval-generate-tokens "$GEN" --eval-generate-prompts 2 "$@" > "$OUT/port-$name.txt" 2> "$log" &
  PID=$!
  local s=$SECONDS
  until [ -s "$OUT/port-$name.txt" ]; do sleep 0.2; [ $((SECONDS - s)) -lt 120 ] || { echo "no port"; return 1; }; done
  PORT=$(head -1 "$OUT/port-$name.txt")
  export AUTOQUANT_SERVER="127.0.0.1:$PORT"
  until "$AQ" server info --json > "$OUT/server-info-$name.json" 2>/dev/null && grep -q '"serving": true' "$OUT/server-info-$name.json"; do
    sleep 0.5; kill -0 $PID 2>/dev/null || { echo "daemon died"; tail -20 "$log"; return 1; }
    [ $((SECONDS - s)) -lt 180 ] || { echo "daemon not serving after 180 s"; tail -20 "$log"; return 1; }
  done
  echo "daemon ($name) serving after $((SECONDS - s)) s on port $PORT"
}
stop_daemon() { kill -TERM $PID; wait $PID; echo "daemon exit $?"; }

rc=0
echo "== _scaled_mm against emulation per Linear (3B shapes, bf16)"
"$BIN/scheme_test" --gtest_filter='*ScaledMm*' 2>&1 | grep -E "scaled_mm vs|OK|FAILED|SKIPPED"

start_daemon scaled || exit 1
s=$SECONDS
timeout 300 "$AQ" sweep --coverages 10,50,100 --evaluate --wait --json > "$OUT/jobs-scaled.json" || rc=1
echo "sweep with evaluation: $((SECONDS - s)) s"
mkdir -p "$OUT/scaled" "$OUT/emulated"
for s in top10 top50 top100; do cp "$M/$s/layer-sensitivity/evaluation.json" "$OUT/scaled/$s.json"; done
nvidia-smi --query-gpu=name,memory.used --format=csv | tee "$OUT/nvidia-smi.csv"
"$AQ" server info --json > "$OUT/server-info-end.json"
stop_daemon

start_daemon emulated --eval-fp8-matmul emulated || exit 1
timeout 200 "$AQ" eval top10 top50 top100 --wait --json > "$OUT/jobs-emulated.json" || rc=1
for s in top10 top50 top100; do cp "$M/$s/layer-sensitivity/evaluation.json" "$OUT/emulated/$s.json"; done
stop_daemon
"$AQ" report "$M/top10" "$M/top50" "$M/top100" --out "$OUT/report" --no-plot || rc=1

"$PY" "$ROOT/bench/eval/eval_bench.py" compare --scaled "$OUT/scaled" --emulated "$OUT/emulated" \
  --jobs "$OUT/jobs-scaled.json" --out "$OUT" || rc=1
rm -rf /dev/shm/aq-eval
# At most 8 files come back from the device: the summary, the log, and the rest in one archive.
(cd "$OUT" && tar czf eval-results.tgz --remove-files scaled emulated report jobs-*.json daemon-*.log \
  server-info-*.json nvidia-smi.csv port-*.txt 2>/dev/null)
ls "$OUT"
exit $rc

#!/usr/bin/env bash
# The GPU performance benchmark (issue 13): autoquantd against ModelOpt 0.47 and against the
# machine's limits, on random weights of the real shapes, 128 calibration samples (one 448x448
# image + text, 768 tokens), bf16. One command; its parts run in order, or one at a time where a
# time limit per call requires (the device tool allows 600 s per call):
#
#   bash scripts/gpu/run.sh exec bash bench/perf/perf.sh [PART ...]      (default: all parts)
#
# PART:
#   limits    disk write floor (fsync) on the models root's filesystem, HBM copy bandwidth, bf16 GEMM
#             ceiling (bench/perf/limits.py)
#   shared    autoquantd, 3B, one SubmitSweep top10 ... top100 in the shared layout (the default):
#             cold start to SERVING vs the raw read, baseline (calibration + scoring), search and
#             export per scheme, submit to last SUCCEEDED, peak device memory
#             (bench/daemon_sweep/sweep_bench.py); then `autoquant diff` of top10/top50/top100
#   standalone the same daemon flow with --layout standalone on four points (top10, top40, top70,
#             top100: ten standalone 3B schemes need ~64 GB): each export against the disk floor
#             ($EXPORT_THREADS, when set, is the daemon's --export-threads)
#   7b        the qwen2.5-vl-7b preset: `autoquant quantize --coverage 0.5 --batch-size $BATCH`:
#             calibration + scoring time and peak device memory (target <= 30 GB)
#   kernels   the custom CUDA kernels: cuda_test (each kernel against its torch reference), then
#             aq_baseline_bench on the 3B: forward, calibration and scoring per batch with the kernels
#             on and off ($KERNEL_VARIANTS, default on,off) in one process, result agreement, a Kineto
#             profile of one batch of each, and scoring keeping 0/12/24/36 layers' graphs
#   b1        ours at batch 1: `autoquant quantize --batch-size 1` on the 3B (calibration + scoring time)
#   oom       issue 12: autoquantd with a 1024-sample calibration set, one job at batch 1024 (a real
#             CUDA out-of-memory: FAILED, RESOURCE_EXHAUSTED) then one at the default batch (SUCCEEDED)
#             (bench/perf/oom_check.py)
#   modelopt  ModelOpt 0.47 on the same 3B model and data at batch $BATCH (and $MO_BATCH1=1 adds
#             batch 1, flow b with one scheme: its scoring pass is what batch 1 compares; MO_BATCHES="1" runs
#             only that, e.g. in a second call beside `b1`): flow a (Option A: auto_quantize + export per scheme) and flow b (score once
#             with checkpoint=, then per scheme the saved search state + export), $MO_SCHEMES schemes
#             each (default 2; the ten-scheme cost is extrapolated and marked so)
#             (bench/modelopt/modelopt_flows.py; wheels in .whl, bench/modelopt/requirements.txt)
#
# Then `python3 bench/perf/summarize.py $OUT` writes perf.json and perf.md (ratios, targets) from
# whatever parts ran. Environment: OUT (results, default /tmp/aq-out), BATCH (4), WORK (where
# models and schemes go; default the larger of /tmp and /dev/shm), LIMIT (seconds for the whole
# call, default 570: parts that would not fit are skipped and say so).
set -uo pipefail
OUT="${OUT:-/tmp/aq-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/perf.log") 2>&1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${AUTOQUANT_BUILD_DIR:?run through scripts/gpu/run.sh, which sets AUTOQUANT_BUILD_DIR}/bin"
AQ="$BIN/autoquant"
AQD="$BIN/autoquantd"
PY="${PYTHON:-python3}"
BATCH="${BATCH:-4}"
LIMIT="${LIMIT:-570}"
MO_SCHEMES="${MO_SCHEMES:-2}"
PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=(limits shared standalone 7b modelopt)

if [ -z "${WORK:-}" ]; then
  best=0
  for d in /tmp /dev/shm; do
    [ -d "$d" ] && [ -w "$d" ] || continue
    avail=$(df -Pk "$d" | awk 'NR==2 {print $4}')
    if [ "${avail:-0}" -gt "$best" ]; then best=$avail; WORK="$d/aq-perf"; fi
  done
fi
mkdir -p "$WORK"
echo "parts: ${PARTS[*]}; work dir $WORK ($(df -h "$WORK" | awk 'NR==2 {print $4}') free); batch $BATCH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' \
  | tee "$OUT/versions.txt"
"$AQD" --version | tee -a "$OUT/versions.txt"

left() { echo $((LIMIT - SECONDS)); }
t() { local s=$SECONDS; "$@"; local rc=$?; echo "[$(basename "$1") ${2:-}: $((SECONDS - s)) s, rc=$rc]" >&2; return $rc; }

# The 3B model and calibration set (shared by the parts), as scripts/gpu/verify_daemon.sh makes them.
make3b() {
  [ -d "$WORK/base3b" ] || t "$AQ" model init --preset qwen2.5-vl-3b --out "$WORK/base3b" --dtype bfloat16 --seed 0
  [ -f "$WORK/calib3b.safetensors" ] || t "$AQ" calib synth --model "$WORK/base3b" --out "$WORK/calib3b.safetensors" \
    --samples 128 --seq-len 768 --images-per-sample 1 --image-size 448x448 --seed 1
  cp "$WORK/base3b/config.json" "$OUT/config3b.json"
}

sweep() {  # NAME LAYOUT POINTS [extra sweep_bench args]
  local name=$1 layout=$2 points=$3; shift 3
  local budget=$(( $(left) - 20 ))
  [ "$budget" -gt 60 ] || { echo "SKIPPED $name: only $budget s left"; return 1; }
  mkdir -p "$OUT/$name"
  timeout -s TERM -k 30 "$budget" "$PY" "$ROOT/bench/daemon_sweep/sweep_bench.py" --autoquantd "$AQD" --autoquant "$AQ" \
    --model "$WORK/base3b" --calib "$WORK/calib3b.safetensors" --work "$WORK/$name" --out "$OUT/$name" \
    --batch-size "$BATCH" --device cuda --stop-timeout 20 --points "$points" --skip-diff \
    --daemon-arg=--layout --daemon-arg="$layout" "$@"
  local rc=$?
  echo "$name: sweep_bench rc=$rc"
  [ -f "$OUT/$name/daemon-sweep.md" ] && cat "$OUT/$name/daemon-sweep.md"
  return $rc
}

rc=0
for part in "${PARTS[@]}"; do
  echo "=== $part ($(left) s left)"
  case "$part" in
    limits)
      "$PY" "$ROOT/bench/perf/limits.py" --dir "$WORK" --out "$OUT/limits.json" || rc=1
      ;;
    shared)
      make3b
      # A plain forward at the calibration's batch shape (512 text + 256 image tokens, one 448x448 image per
      # sample): what a calibration batch costs without its amax hooks.
      "$AQ" model bench --model "$WORK/base3b" --device cuda --batch "$BATCH" --text-tokens 510 --image 448x448 \
        --iters 10 > "$OUT/forward-b$BATCH.json" 2> "$OUT/forward-b$BATCH.log" && cat "$OUT/forward-b$BATCH.json" | cut -c1-300
      if sweep shared shared top10,top20,top30,top40,top50,top60,top70,top80,top90,top100; then
        s=$SECONDS
        "$AQ" diff "$WORK/shared/models/top10" "$WORK/shared/models/top50" "$WORK/shared/models/top100" --json \
          > "$OUT/shared/diff.json" 2> "$OUT/shared/diff.err"
        echo "diff of top10/top50/top100 (shared): rc=$? in $((SECONDS - s)) s"; tail -3 "$OUT/shared/diff.err"
        du -sh "$WORK/shared/models/.autoquant/blobs" | tee "$OUT/shared/blobs-du.txt"
      else
        rc=1
      fi
      rm -rf "$WORK/shared"
      ;;
    standalone)
      make3b
      if sweep standalone standalone top10,top40,top70,top100 \
          ${EXPORT_THREADS:+--daemon-arg=--export-threads --daemon-arg=$EXPORT_THREADS}; then
        # The exporter quantizes on the GPU: every FP8 weight of top100 against a CPU re-quantization.
        "$PY" "$ROOT/bench/perf/check_fp8.py" "$WORK/standalone/models/top100" "$WORK/base3b" \
          --out "$OUT/standalone/check-fp8.json" | tail -4 || rc=1
      else
        rc=1
      fi
      rm -rf "$WORK/standalone"
      ;;
    7b)
      [ -d "$WORK/base7b" ] || t "$AQ" model init --preset qwen2.5-vl-7b --out "$WORK/base7b" --dtype bfloat16 --seed 0
      [ -f "$WORK/calib7b.safetensors" ] || t "$AQ" calib synth --model "$WORK/base7b" --out "$WORK/calib7b.safetensors" \
        --samples 128 --seq-len 768 --images-per-sample 1 --image-size 448x448 --seed 1
      nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/7b-nvidia-smi.txt" &
      smi=$!
      t "$AQ" quantize --model "$WORK/base7b" --calib "$WORK/calib7b.safetensors" --out "$WORK/7b-top50" \
        --coverage 0.5 --device cuda --batch-size "$BATCH" --baseline-cache "$WORK/cache7b" --layout shared --json \
        --overwrite > "$OUT/7b-top50.json" 2> "$OUT/7b-top50.log" || rc=1
      kill $smi 2>/dev/null
      cat "$OUT/7b-top50.json"; tail -3 "$OUT/7b-top50.log"
      echo "nvidia-smi peak MiB: $(sort -n "$OUT/7b-nvidia-smi.txt" | tail -1)"
      rm -rf "$WORK/7b-top50" "$WORK/.autoquant"
      ;;
    modelopt)
      make3b
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mo-site \
        "$ROOT"/.whl/*.whl || { echo "installing .whl failed (bench/modelopt/README.md)"; rc=1; continue; }
      for b in ${MO_BATCHES:-$BATCH ${MO_BATCH1:+1}}; do
        budget=$(( $(left) - 15 ))
        [ "$budget" -gt 60 ] || { echo "SKIPPED modelopt batch $b: $budget s left"; rc=1; continue; }
        # Batch 1 scores four times as many batches: there, flow b's one scoring pass and one export.
        flows="--flows a,b --max-schemes $MO_SCHEMES"
        [ "$b" = 1 ] && [ "$BATCH" != 1 ] && flows="--flows b --max-schemes 1"
        PYTHONPATH="/tmp/mo-site${PYTHONPATH:+:$PYTHONPATH}" timeout -s TERM -k 15 "$budget" "$PY" \
          "$ROOT/bench/modelopt/modelopt_flows.py" --model "$WORK/base3b" --calib "$WORK/calib3b.safetensors" \
          --steps $((128 / b)) --batch-size "$b" --device cuda --dtype bfloat16 $flows \
          --work "$WORK/modelopt" --out "$OUT/modelopt-b$b.json" \
          --time-budget $((budget - 30)) || rc=1
        rm -rf "$WORK/modelopt"
      done
      ;;
    kernels)
      make3b
      "$BIN/cuda_test" --gtest_brief=1 > "$OUT/cuda_test.log" 2>&1 || rc=1
      tail -n 12 "$OUT/cuda_test.log"
      mkdir -p "$OUT/profile"
      "$BIN/aq_baseline_bench" --model "$WORK/base3b" --calib "$WORK/calib3b.safetensors" --device cuda \
        --batch "$BATCH" --steps 8 --profile-dir "$OUT/profile" --variants "${KERNEL_VARIANTS:-on,off}" \
        --graph-layers 0,12,24,36 > "$OUT/baseline-bench.json" || rc=1
      "$PY" "$ROOT/bench/perf/summarize.py" --kernels "$OUT/baseline-bench.json" || rc=1
      ;;
    b1)
      # Ours at batch 1 (ModelOpt's default), for the batch-1 comparison with `modelopt` under MO_BATCH1=1.
      make3b
      t "$AQ" quantize --model "$WORK/base3b" --calib "$WORK/calib3b.safetensors" --out "$WORK/b1-top50" \
        --coverage 0.5 --device cuda --batch-size 1 --layout shared --json --overwrite \
        > "$OUT/b1-top50.json" 2> "$OUT/b1-top50.log" || rc=1
      cat "$OUT/b1-top50.json"; tail -3 "$OUT/b1-top50.log"
      rm -rf "$WORK/b1-top50" "$WORK/.autoquant"
      ;;
    oom)
      # issue 12: a real device out-of-memory in one job; the daemon serves the next (bench/perf/oom_check.py).
      make3b
      [ -f "$WORK/calib3b-1024.safetensors" ] || t "$AQ" calib synth --model "$WORK/base3b" \
        --out "$WORK/calib3b-1024.safetensors" --samples 1024 --seq-len 768 --images-per-sample 1 --image-size 448x448 --seed 3
      timeout -s TERM -k 15 $(( $(left) - 10 )) "$PY" "$ROOT/bench/perf/oom_check.py" --model "$WORK/base3b" \
        --calib "$WORK/calib3b-1024.safetensors" --root "$WORK/oom/models" --out "$OUT/oom.json" || rc=1
      rm -rf "$WORK/oom" "$WORK/calib3b-1024.safetensors"
      ;;
    *) echo "unknown part '$part' (limits shared standalone 7b modelopt oom kernels b1)"; exit 2 ;;
  esac
done
"$PY" "$ROOT/bench/perf/summarize.py" "$OUT" || rc=1
# The device tool returns a few files only: everything goes into one archive, and only the summary stays beside it.
if tar -C "$OUT" -czf /tmp/perf-results.tgz . ; then
  find "$OUT" -mindepth 1 -maxdepth 1 ! -name perf.md ! -name perf.json -exec rm -rf {} +
  mv /tmp/perf-results.tgz "$OUT/perf-results.tgz"
fi
if pgrep -x autoquantd >/dev/null; then echo "autoquantd still running:"; pgrep -a -x autoquantd; rc=1; fi
exit $rc

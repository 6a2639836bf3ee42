#!/usr/bin/env bash
# vLLM itself loads and runs every scheme autoquant writes (issue 24), on the GPU machine, through
# scripts/gpu/run.sh exec with .gpu-bundle carried and vLLM staged by bench/vllm/stage.sh.
#
#   verify_vllm.sh prepare   random-weight qwen2.5-vl-3b with its tokenizer/processor (autoquant model init),
#                            a calibration set, an evaluation set (text-only from `calib synth`, image samples
#                            built by autoquant_client.calib with the model's own processor), then autoquantd:
#                            top10/top50/top100 in compressed-tensors (shared layout: ct-*, standalone: sa-*)
#                            and modelopt (shared: mo-*); a damaged copy of each scheme in $DAMAGE (default
#                            sa-top50 and sa-top100: one FP8 weight scale doubled); and autoquant's own logits
#                            ("as deployed": `autoquant model forward`) of every checkpoint on the evaluation set
#   verify_vllm.sh vllm      scripts/gpu/vllm_check.py on every checkpoint, one engine (process) at a time
#   verify_vllm.sh compare   bench/vllm/compare.py: the results table
#   verify_vllm.sh example   examples/vllm_eval.py on two schemes, as a user runs it
#   verify_vllm.sh all       the four in order
# Work in $VW (default /tmp/aqv); results and logs in $VW/results. PRESET (qwen2.5-vl-3b) and DEVICE
# (cuda) can be changed to try `prepare` on the tiny preset and the CPU. ONLY (names, e.g. "base ct-top100
# mo-top100 sa-top100 damaged-sa-top100") runs vLLM and compares on those checkpoints alone.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${AUTOQUANT_BUILD_DIR:?run through scripts/gpu/run.sh, which sets AUTOQUANT_BUILD_DIR}/bin"
AQ="$BIN/autoquant"
AQD="$BIN/autoquantd"
PY="${PYTHON:-python3}"
VW="${VW:-/tmp/aqv}"
M="$VW/models"
R="$VW/results"
mkdir -p "$VW" "$M" "$R" "$VW/ours"
# Python (vLLM, transformers) runs without the bundle's libraries (its libssl/libprotobuf are Debian's).
PY_LD="$(printf '%s' "${LD_LIBRARY_PATH:-}" | tr ':' '\n' | grep -v gpu-bundle | paste -sd: -)"
py() { LD_LIBRARY_PATH="$PY_LD" "$PY" "$@"; }
t() { local s=$SECONDS; "$@"; local rc=$?; echo "[$*: $((SECONDS - s)) s, rc=$rc]" >&2; return $rc; }
PRESET="${PRESET:-qwen2.5-vl-3b}"
DEVICE="${DEVICE:-cuda}"
SCHEMES="ct-top10 ct-top50 ct-top100 sa-top10 sa-top50 sa-top100 mo-top10 mo-top50 mo-top100"
DAMAGE="${DAMAGE:-sa-top50 sa-top100}"
ONLY="${ONLY:-}"
selected() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

start_daemon() {  # extra flags; sets PID, exports AUTOQUANT_SERVER
  rm -f "$VW/port.txt"  # an interrupted run's port must not be read for this daemon's
  "$AQD" --model "$VW/base" --calib "$VW/calib.safetensors" --models-root "$M" --listen 127.0.0.1:0 \
    --metrics 127.0.0.1:0 --device "$DEVICE" --batch-size 4 "$@" > "$VW/port.txt" 2>> "$R/daemon.log" &
  PID=$!
  local s=$SECONDS
  until [ -s "$VW/port.txt" ]; do sleep 0.2; [ $((SECONDS - s)) -lt 120 ] || { echo "no port"; return 1; }; done
  export AUTOQUANT_SERVER="127.0.0.1:$(head -1 "$VW/port.txt")"
  until "$AQ" server info --json 2>/dev/null | grep -q '"serving": true'; do
    sleep 0.5; kill -0 $PID 2>/dev/null || { echo "daemon died"; tail -20 "$R/daemon.log"; return 1; }
  done
}
stop_daemon() { kill -TERM $PID; wait $PID; echo "daemon exit $?"; PID=; rm -f "$VW/port.txt"; }
PID=
trap '[ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; true' EXIT  # a failed step leaves no daemon behind

prepare() {
  [ -d "$VW/base" ] || t "$AQ" model init --preset "$PRESET" --out "$VW/base" --seed 0 || return 1
  [ -f "$VW/calib.safetensors" ] || t "$AQ" calib synth --model "$VW/base" --out "$VW/calib.safetensors" \
    --samples 32 --seq-len 256 --images-per-sample 1 --image-size 224x224 --seed 1 || return 1
  [ -f "$VW/eval-text.safetensors" ] || t "$AQ" calib synth --model "$VW/base" --out "$VW/eval-text.safetensors" \
    --samples 6 --seq-len 128 --images-per-sample 0 --seed 7 || return 1
  # Image samples and the generation prompts, through the model's own processor files.
  t py "$ROOT/bench/vllm/make_prompts.py" --model "$VW/base" --work "$VW" || return 1

  start_daemon || return 1
  t "$AQ" sweep --coverages 10,50,100 --prefix ct- --overwrite --wait --json > "$R/jobs-ct.json" || return 1
  t "$AQ" sweep --coverages 10,50,100 --prefix mo- --format modelopt --overwrite --wait --json > "$R/jobs-mo.json" || return 1
  stop_daemon
  start_daemon --layout standalone || return 1
  t "$AQ" sweep --coverages 10,50,100 --prefix sa- --overwrite --wait --json > "$R/jobs-sa.json" || return 1
  stop_daemon
  for orig in $DAMAGE; do
    rm -rf "$VW/damaged-$orig"
    cp -r "$M/$orig" "$VW/damaged-$orig" && chmod -R u+w "$VW/damaged-$orig"
    t py "$ROOT/bench/vllm/damage.py" "$VW/damaged-$orig" > "$R/damaged-$orig.json" || return 1
  done

  for name in base $SCHEMES; do
    dir="$M/$name"; [ "$name" = base ] && dir="$VW/base"
    for set in text image; do
      [ -f "$VW/ours/$name-$set.safetensors" ] && continue
      t "$AQ" model forward --model "$dir" --input "$VW/eval-$set.safetensors" \
        --output "$VW/ours/$name-$set.safetensors" --device "$DEVICE" --dtype bfloat16 || return 1
    done
  done
  du -sh "$M" "$VW/ours" "$VW/base"; df -h /tmp
}

check_one() {  # NAME DIR
  [ -f "$R/vllm-$1.json" ] && return 0
  timeout 600 env LD_LIBRARY_PATH="$PY_LD" "$PY" "$ROOT/scripts/gpu/vllm_check.py" --model "$2" --eval-text "$VW/eval-text.safetensors" \
    --eval-image "$VW/eval-image.safetensors" --prompts "$VW/prompts.json" --out "$R/vllm-$1.json" \
    > "$R/vllm-$1.log" 2>&1
  echo "vllm $1: rc=$? $(tail -1 "$R/vllm-$1.log")"
}

vllm() {
  [ -f /tmp/vllm-stage/env.sh ] || { echo "vLLM is not staged (bench/vllm/stage.sh)"; return 1; }
  # shellcheck disable=SC1091
  source /tmp/vllm-stage/env.sh
  # The V2 model runner's sampler imports FlashInfer unless told not to; the pack does not carry it.
  export VLLM_USE_FLASHINFER_SAMPLER=0
  local names=(base $SCHEMES) orig
  for orig in $DAMAGE; do names+=("damaged-$orig"); done
  for name in "${names[@]}"; do
    selected "$name" || continue
    dir="$M/$name"; [ "$name" = base ] && dir="$VW/base"; [[ "$name" == damaged-* ]] && dir="$VW/$name"
    check_one "$name" "$dir"  # one engine at a time: three at once ran out of KV-cache memory
  done
}

compare() {
  local schemes="" damaged=() name orig
  for name in base $SCHEMES; do selected "$name" && schemes+="$name "; done
  for orig in $DAMAGE; do selected "damaged-$orig" && damaged+=(--damaged "damaged-$orig:$orig"); done
  py "$ROOT/bench/vllm/compare.py" --work "$VW" --models "$M" --results "$R" \
    --schemes "$schemes" "${damaged[@]}" --out "$R"
}

example() {  # the user-facing example, as a user would run it
  # shellcheck disable=SC1091
  source /tmp/vllm-stage/env.sh
  export VLLM_USE_FLASHINFER_SAMPLER=0
  timeout 400 env LD_LIBRARY_PATH="$PY_LD" "$PY" "$ROOT/examples/vllm_eval.py" --base "$VW/base" --eval "$VW/eval-text.safetensors" \
    "$M/ct-top50" "$M/mo-top100" > "$R/example.txt" 2> "$R/example.log"
  echo "example: rc=$?"; cat "$R/example.txt"
}

case "${1:-all}" in
  prepare) prepare ;;
  vllm) vllm ;;
  compare) compare ;;
  example) example ;;
  all) prepare && vllm; compare; example ;;
  *) echo "usage: verify_vllm.sh prepare|vllm|compare|example|all" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The fault suite (tests/python/test_faults.py: 20 seeded kill -9 rounds and a history check) run N times
# in a row, seeds 1..N, on a loaded machine: LOAD busy processes (default 1) spin beside it the whole
# time, so that the daemon's timing is not the idle machine's. Stops at the first failure.
#
#   scripts/fault_soak.sh [N=20]      (AUTOQUANT_BUILD_DIR: the build to test, default build-asan/)
#
# Writes one line per run to $OUT (default fault-soak.tsv): seed, result, seconds, and the run's figures
# (AUTOQUANT_FAULT_REPORT) as JSON; exits non-zero if any run failed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${1:-20}"
LOAD="${LOAD:-1}"
OUT="${OUT:-$ROOT/fault-soak.tsv}"
PY="${AUTOQUANT_CACHE:-$HOME/.cache/autoquant}/venv/bin/python"
export AUTOQUANT_BUILD_DIR="${AUTOQUANT_BUILD_DIR:-$ROOT/build-asan}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:detect_odr_violation=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

burners=()
for _ in $(seq 1 "$LOAD"); do
  "$PY" -c 'while True: pass' &
  burners+=($!)
done
trap 'kill "${burners[@]}" 2>/dev/null; wait 2>/dev/null' EXIT

: > "$OUT"
failed=0
for seed in $(seq 1 "$N"); do
  report="$(mktemp)"
  start=$SECONDS
  AUTOQUANT_FAULT_SEED="$seed" AUTOQUANT_FAULT_REPORT="$report" "$PY" -m pytest -q -x \
    "$ROOT/tests/python/test_faults.py" > "$OUT.seed-$seed.log" 2>&1
  rc=$?
  result=passed
  [ "$rc" -eq 0 ] || { result=FAILED; failed=1; }
  printf '%s\t%s\t%s\t%s\n' "$seed" "$result" "$((SECONDS - start))" "$(tr -d '\n ' < "$report" 2>/dev/null)" >> "$OUT"
  rm -f "$report"
  echo "seed $seed: $result in $((SECONDS - start)) s"
  [ "$rc" -eq 0 ] && rm -f "$OUT.seed-$seed.log"
  [ "$failed" -eq 0 ] || { echo "log: $OUT.seed-$seed.log"; break; }
done
exit "$failed"

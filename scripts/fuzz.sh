#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang + ASan + UBSan) into build-fuzz/ and
# runs each for a short time over its checked-in corpus (tests/fuzz/corpus/<name>/).
# Fails on any crash, sanitizer report or broken FUZZ_CHECK; libFuzzer then leaves the
# input as build-fuzz/artifacts/<name>/crash-* (add it to the corpus with a regression test).
# Usage: scripts/fuzz.sh [TARGET...]   (default: all). Env: FUZZ_SECONDS (per target,
# default 10), FUZZ_BUILD_DIR (default build-fuzz/). Needs clang (scripts/setup.sh installs it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-10}"
# The test command must not fail on a new random find: a fixed seed and a fixed number of runs per
# target make a run repeatable (the time limit only bounds a slow machine). FUZZ_RUNS=-1 and another
# FUZZ_SEED explore further (longer runs find more; a find becomes a fix, a regression test and a
# corpus entry).
FUZZ_SEED="${FUZZ_SEED:-1}"
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(safetensors_header qwen2_5_vl_config coverage_manifest baseline job_spec
                               scheme_spec_proto calib_set)
cd "$ROOT"

CC=clang CXX=clang++ AUTOQUANT_BUILD_TARGET=fuzz_targets bash scripts/build.sh "$BUILD" Sanitized \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DAUTOQUANT_FUZZ=ON -DAUTOQUANT_BUILD_TESTS=OFF

export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
for t in "${TARGETS[@]}"; do
  corpus="$ROOT/tests/fuzz/corpus/$t"
  work="$BUILD/corpus/$t"           # grows during the run; the checked-in seeds stay as they are
  artifacts="$BUILD/artifacts/$t/"
  mkdir -p "$work" "$artifacts"
  # LibTorch's one-time global allocations are not leaks of ours (as in the ASan test run).
  leaks=1; [ "$t" = calib_set ] && leaks=0
  echo "== fuzz $t (${SECONDS_PER_TARGET}s)"
  log="$BUILD/$t.log"
  if ! ASAN_OPTIONS="detect_leaks=$leaks:abort_on_error=1:detect_odr_violation=0" \
      "$BUILD/fuzz/${t}_fuzz" "$work" "$corpus" -max_total_time="$SECONDS_PER_TARGET" \
      -seed="$FUZZ_SEED" -runs="${FUZZ_RUNS:-$([ "$t" = calib_set ] && echo 2000 || echo 50000)}" \
      -rss_limit_mb=4096 -max_len=65536 -timeout=20 -print_final_stats=1 \
      -artifact_prefix="$artifacts" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz $t FAILED: input in $artifacts" >&2
    exit 1
  fi
  grep -E '^#[0-9]+[[:space:]]+DONE|^stat::number_of_executed_units' "$log" | tail -n 2
done
echo "== fuzzing passed"

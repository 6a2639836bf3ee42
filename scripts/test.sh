#!/usr/bin/env bash
# The test command: sets up (scripts/setup.sh: packages, venv, build/), then
# runs every C++ test (ctest: GoogleTest; in $BUILD_DIR, default build/), the C++ tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/), the job queue and store tests under
# ThreadSanitizer (build-tsan/), a short libFuzzer run of
# every parser target (scripts/fuzz.sh, build-fuzz/), and every Python test (pytest). Exits non-zero if anything fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${AUTOQUANT_CACHE:-$HOME/.cache/autoquant}"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
export BUILD_DIR
cd "$ROOT"

bash scripts/setup.sh
JOBS="${AUTOQUANT_JOBS:-$(nproc)}"

echo "== C++ tests ($BUILD_DIR)"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS"

if [ "${AUTOQUANT_SKIP_ASAN:-0}" != "1" ]; then
  echo "== C++ tests under ASan + UBSan (build-asan/)"
  bash scripts/build.sh "$ROOT/build-asan" RelWithDebInfo -DAUTOQUANT_SANITIZE=ON
  # LibTorch itself is not instrumented; its one-time global allocations are not leaks of ours.
  export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_odr_violation=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  ctest --test-dir build-asan --output-on-failure -j "$JOBS"
fi

if [ "${AUTOQUANT_SKIP_TSAN:-0}" != "1" ]; then
  # The job queue and store are the code with threads of its own (worker, RPC threads, subscribers);
  # they are torch-free, so ThreadSanitizer sees all of it (build-tsan/, jobs_test only).
  echo "== queue and store tests under ThreadSanitizer (build-tsan/, jobs_test)"
  AUTOQUANT_BUILD_TARGET=jobs_test bash scripts/build.sh "$ROOT/build-tsan" RelWithDebInfo -DAUTOQUANT_TSAN=ON
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" "$ROOT/build-tsan/bin/jobs_test"
fi

if [ "${AUTOQUANT_SKIP_FUZZ:-0}" != "1" ]; then
  echo "== fuzzing: libFuzzer targets over their corpora (build-fuzz/, scripts/fuzz.sh)"
  bash scripts/fuzz.sh
fi

echo "== Python tests"
AUTOQUANT_BUILD_DIR="$BUILD_DIR" "$CACHE/venv/bin/python" -m pytest tests/python -q
echo "== all tests passed"

#!/usr/bin/env bash
# The test command: sets up (scripts/setup.sh: packages, venv), then builds autoquant once with
# AddressSanitizer + UndefinedBehaviorSanitizer ($BUILD_DIR, default build-asan/) and runs every C++
# test (ctest: GoogleTest) and every Python test (pytest, which drives the same binaries) against
# that build (after a check that every C++ file is formatted, scripts/check_format.sh, and, once built,
# the C++ lint, scripts/lint_cpp.py: torch calls inside TorchCall, short functions); then the job
# queue and store tests under ThreadSanitizer (build-tsan/, jobs_test only),
# a short libFuzzer run of every parser target (scripts/fuzz.sh, build-fuzz/), and, where nvcc
# exists, a compile of the CUDA kernels (build/, target aq_kernels). Exits non-zero if anything fails.
#
# The benchmarks (bench/) are not built: the test command runs none of them (the GPU bundle builds them).
# One instrumented build serves both test suites: a second, plain build of every target cost a fresh
# 2-core machine about 20 minutes and found nothing the sanitized one does not. The sanitized build
# is scripts/build.sh's build type Sanitized (-O1 -g1, half the compile time of RelWithDebInfo).
# AUTOQUANT_SKIP_ASAN=1 tests the plain build instead ($BUILD_DIR default build/; for a quick local
# loop); AUTOQUANT_SKIP_TSAN=1, AUTOQUANT_SKIP_FUZZ=1 skip those parts.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${AUTOQUANT_CACHE:-$HOME/.cache/autoquant}"
cd "$ROOT"

timings=()
phase_start=$SECONDS
phase() {  # phase NAME: ends the running phase (its time goes into the summary) and starts NAME
  [ -n "${phase_name:-}" ] && timings+=("$(printf '%6ds  %s' $((SECONDS - phase_start)) "$phase_name")")
  phase_name="${1:-}"
  phase_start=$SECONDS
  [ -n "$phase_name" ] && echo "== $phase_name"
  return 0
}

phase "setup: packages and Python environment (scripts/setup.sh)"
AUTOQUANT_SKIP_BUILD=1 bash scripts/setup.sh
JOBS="${AUTOQUANT_JOBS:-$(nproc)}"

# Seconds, and before the build: a formatting slip fails at once, not after half an hour.
phase "formatting (scripts/check_format.sh)"
bash scripts/check_format.sh

if [ "${AUTOQUANT_SKIP_ASAN:-0}" != "1" ]; then
  BUILD_DIR="${BUILD_DIR:-$ROOT/build-asan}"
  phase "build with ASan + UBSan ($BUILD_DIR)"
  bash scripts/build.sh "$BUILD_DIR" Sanitized -DAUTOQUANT_SANITIZE=ON -DAUTOQUANT_WERROR=ON -DAUTOQUANT_BUILD_BENCH=OFF
  # LibTorch itself is not instrumented; its one-time global allocations are not leaks of ours.
  # Exported: the Python tests' daemons and CLIs run with the same options.
  export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_odr_violation=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
else
  BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
  phase "build ($BUILD_DIR)"
  bash scripts/build.sh "$BUILD_DIR" "${BUILD_TYPE:-RelWithDebInfo}"
fi
export BUILD_DIR

# The rules the compiler does not check: no torch call throws past a Status, no long function.
phase "C++ lint (scripts/lint_cpp.py)"
"$CACHE/venv/bin/python" scripts/lint_cpp.py "$BUILD_DIR"

phase "C++ tests ($BUILD_DIR)"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS"

phase "Python tests (against $BUILD_DIR)"
# A worker per core, each taking whole files (--dist loadfile: a file's module-scoped daemon is
# started once, by the worker that runs the file). Every test starts its servers on free ports and
# keeps its files under its own temporary directory, so workers share nothing.
AUTOQUANT_BUILD_DIR="$BUILD_DIR" "$CACHE/venv/bin/python" -m pytest tests/python -q --durations=15 \
  -n "$JOBS" --dist loadfile

if [ "${AUTOQUANT_SKIP_TSAN:-0}" != "1" ]; then
  # The job queue and store are the code with threads of its own (worker, RPC threads, subscribers);
  # they are torch-free, so ThreadSanitizer sees all of it (build-tsan/, jobs_test only).
  phase "queue and store tests under ThreadSanitizer (build-tsan/, jobs_test)"
  AUTOQUANT_BUILD_TARGET=jobs_test bash scripts/build.sh "$ROOT/build-tsan" Sanitized -DAUTOQUANT_TSAN=ON
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" "$ROOT/build-tsan/bin/jobs_test"
fi

if [ "${AUTOQUANT_SKIP_FUZZ:-0}" != "1" ]; then
  phase "fuzzing: libFuzzer targets over their corpora (build-fuzz/, scripts/fuzz.sh)"
  bash scripts/fuzz.sh
fi

if command -v nvcc >/dev/null && [ "${AUTOQUANT_SKIP_ASAN:-0}" != "1" ]; then
  # The sanitized build has no CUDA kernels (nvcc takes no sanitizer flags); compile them alone so
  # that a kernel that no longer compiles fails here, not on the GPU machine.
  phase "CUDA kernels compile (build/, aq_kernels)"
  AUTOQUANT_BUILD_TARGET=aq_kernels bash scripts/build.sh "$ROOT/build" "${BUILD_TYPE:-RelWithDebInfo}"
fi

phase
echo "== time per part"
printf '%s\n' "${timings[@]}"
echo "== all tests passed in $((SECONDS / 60)) min $((SECONDS % 60)) s"

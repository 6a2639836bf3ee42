#!/usr/bin/env bash
# Configures and builds autoquant. Usage: scripts/build.sh [BUILD_DIR] [BUILD_TYPE] [extra cmake args...]
# BUILD_TYPE: a CMake build type (default RelWithDebInfo), or Sanitized (below).
# Finds LibTorch through the Python environment's torch (AUTOQUANT_PYTHON, or
# the setup venv), and uses ccache with its cache outside the tree.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${1:-$ROOT/build}"
BUILD_TYPE="${2:-RelWithDebInfo}"
shift $(( $# > 2 ? 2 : $# ))
# "Sanitized": the build type of the sanitizer and fuzz builds, RelWithDebInfo with -O1 and line
# tables only (-g1): enough for symbolized sanitizer reports, and half the compile time of -O2 -g.
type_args=(-DCMAKE_BUILD_TYPE="$BUILD_TYPE")
if [ "$BUILD_TYPE" = Sanitized ]; then
  type_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG"
             "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG")
fi
CACHE="${AUTOQUANT_CACHE:-$HOME/.cache/autoquant}"
PY="${AUTOQUANT_PYTHON:-$CACHE/venv/bin/python}"
TORCH_PREFIX="$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"

export CCACHE_DIR="${CCACHE_DIR:-$CACHE/ccache}"
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-10G}"
# ccache keys on absolute paths; let fresh clones in other directories hit the cache.
export CCACHE_BASEDIR="$ROOT"
export CCACHE_NOHASHDIR=1

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

mkdir -p "$BUILD_DIR"
config=("${generator[@]}" "${launcher[@]}" "${type_args[@]}"
        -DCMAKE_PREFIX_PATH="${AUTOQUANT_PREFIX:+$AUTOQUANT_PREFIX;}$TORCH_PREFIX" -DCMAKE_CUDA_ARCHITECTURES=90 "$@")
# Configure again whenever the arguments differ from the last configure's (a build type or -D
# option given now must not be ignored because the directory was configured before).
STAMP="$BUILD_DIR/.autoquant-configure-args"
want="$(printf '%s\n' "${config[@]}")"
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" "${config[@]}" >"$BUILD_DIR/configure.log" 2>&1 \
    || { cat "$BUILD_DIR/configure.log"; exit 1; }
  printf '%s' "$want" >"$STAMP"
fi
# AUTOQUANT_BUILD_TARGET: build only these targets (space-separated; and what they need) instead of everything.
cmake --build "$BUILD_DIR" -j "${AUTOQUANT_JOBS:-$(nproc)}" ${AUTOQUANT_BUILD_TARGET:+--target $AUTOQUANT_BUILD_TARGET}

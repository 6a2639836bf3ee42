#!/usr/bin/env bash
# Runs on the GPU machine, in the repo root, with .gpu-bundle/ carried along
# (made here by scripts/gpu/bundle.sh). One command per device call:
#   scripts/gpu/run.sh info            versions, GPU, autoquantd --version
#   scripts/gpu/run.sh test            every C++ test binary (the CUDA ones run for real)
#   scripts/gpu/run.sh pytest ARGS...  Python tests against the bundled binaries
#   scripts/gpu/run.sh exec CMD...     any command with the bundle's environment
# Logs go to $OUT when set (the device tool returns that folder).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUNDLE="$ROOT/.gpu-bundle"
[ -d "$BUNDLE/bin" ] || { echo "no $BUNDLE: run scripts/gpu/bundle.sh here and carry .gpu-bundle" >&2; exit 2; }
PY="${PYTHON:-python3}"
TORCH_LIB="$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
SITE="$(dirname "$(dirname "$TORCH_LIB")")"
# CUDA runtime and NVRTC from the NVIDIA wheels torch uses.
NV_DIRS="$(find "$SITE/nvidia" -name 'libcudart.so*' -o -name 'libnvrtc.so*' 2>/dev/null | xargs -r -n1 dirname | sort -u | tr '\n' ':')"
export LD_LIBRARY_PATH="$BUNDLE/lib:$TORCH_LIB:${NV_DIRS}${LD_LIBRARY_PATH:-}"
export AUTOQUANT_BUILD_DIR="$BUNDLE"
export PYTHONUNBUFFERED=1
# grpcio, grpcio-tools (stub generation), health checking and reflection for the Python side: from
# the machine's Python, else from the wheels carried in .gpu-deps/grpc-wheels (one release, CPython
# 3.12), installed to a private directory so nothing else sees them.
if ! "$PY" -c 'import grpc, grpc_tools.protoc, grpc_health, grpc_reflection' 2>/dev/null \
    && ls "$ROOT"/.gpu-deps/grpc-wheels/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/aq-grpc-site \
    "$ROOT"/.gpu-deps/grpc-wheels/*.whl || echo "installing .gpu-deps/grpc-wheels failed" >&2
  export PYTHONPATH="/tmp/aq-grpc-site${PYTHONPATH:+:$PYTHONPATH}"
fi
# compressed-tensors (for transformers to load our default-format schemes; scripts/gpu/verify_ct_bf16.py),
# likewise from .gpu-deps/ct-wheels when the machine lacks it.
if ! "$PY" -c 'import compressed_tensors' 2>/dev/null && ls "$ROOT"/.gpu-deps/ct-wheels/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/aq-ct-site \
    "$ROOT"/.gpu-deps/ct-wheels/*.whl || echo "installing .gpu-deps/ct-wheels failed" >&2
  export PYTHONPATH="/tmp/aq-ct-site${PYTHONPATH:+:$PYTHONPATH}"
fi
LOGDIR="${OUT:-$ROOT/out}"
mkdir -p "$LOGDIR"

what="${1:-info}"
shift || true
case "$what" in
  info)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
    "$BUNDLE/bin/autoquantd" --version
    ;;
  test)
    rc=0
    for t in "$BUNDLE"/bin/*_test; do
      echo "== $(basename "$t")"
      "$t" --gtest_brief=1 2>&1 | tee "$LOGDIR/$(basename "$t").log" | tail -n 40
      [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
    done
    exit $rc
    ;;
  pytest)
    "$PY" -m pytest "$@" 2>&1 | tee "$LOGDIR/pytest.log"
    exit "${PIPESTATUS[0]}"
    ;;
  exec)
    "$@"
    ;;
  *)
    echo "unknown step '$what' (info | test | pytest ARGS | exec CMD)" >&2
    exit 2
    ;;
esac

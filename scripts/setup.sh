#!/usr/bin/env bash
# Sets up a development machine and builds autoquant into build/.
# Idempotent: each step checks whether it is already done, so a repeat run
# only rebuilds what changed. The Python environment and the ccache live
# outside the source tree (AUTOQUANT_CACHE, default ~/.cache/autoquant), so
# fresh clones (CI) reuse them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${AUTOQUANT_CACHE:-$HOME/.cache/autoquant}"
VENV="$CACHE/venv"
mkdir -p "$CACHE"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------
APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  python3 python3-venv  # stock Debian's python3 has no venv module without python3-venv
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev nlohmann-json3-dev prometheus-cpp-dev libcivetweb-dev
  libgtest-dev libgmock-dev libsqlite3-dev libcli11-dev libspdlog-dev libfmt-dev
  libssl-dev zlib1g-dev
  prometheus  # promtool: tests check autoquantd's /metrics with `promtool check metrics`
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- Python virtual environment --------------------------------------------
REQ="$ROOT/scripts/requirements.txt"
STAMP="$VENV/.autoquant-requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment at $VENV"
  python3 -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  log "installing Python packages from scripts/requirements.txt (first run downloads torch, several GB)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$REQ"
  echo "$want" >"$STAMP"
fi

# transformers 5.17 (the GPU machine's) beside the venv's newest, for the export-format tests; on
# PYTHONPATH only in the subprocesses that test it.
REQ_TF="$ROOT/scripts/requirements-transformers-5.17.txt"
TF_DIR="$CACHE/transformers-5.17"
TF_STAMP="$TF_DIR/.autoquant-requirements.sha256"
want_tf="$(sha256sum "$REQ_TF" | cut -d' ' -f1)"
if [ "$(cat "$TF_STAMP" 2>/dev/null)" != "$want_tf" ]; then
  log "installing scripts/requirements-transformers-5.17.txt into $TF_DIR"
  rm -rf "$TF_DIR"
  "$VENV/bin/python" -m pip install -q --target "$TF_DIR" -r "$REQ_TF"
  echo "$want_tf" >"$TF_STAMP"
fi

# --- Configure and build ---------------------------------------------------
if [ "${AUTOQUANT_SKIP_BUILD:-0}" != "1" ]; then
  "$ROOT/scripts/build.sh" "${BUILD_DIR:-$ROOT/build}" "${BUILD_TYPE:-RelWithDebInfo}"
fi

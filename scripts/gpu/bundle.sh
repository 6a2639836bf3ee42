#!/usr/bin/env bash
# Packs what a GPU run needs into .gpu-bundle/ (git-ignored; pass it in the
# device tool's `carry`): the built binaries (debug info stripped) and every
# shared library they load except LibTorch/CUDA/NVIDIA (the GPU machine has
# torch 2.11.0+cu130) and the C runtime. Usage: scripts/gpu/bundle.sh [BUILD_DIR]
# BINS="autoquant autoquantd" packs only those binaries (the device tool carries at most 64 MiB).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${1:-$ROOT/build}"
OUTDIR="$ROOT/.gpu-bundle"
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR/bin" "$OUTDIR/lib"

for exe in "$BUILD"/bin/*; do
  [ -x "$exe" ] && [ -f "$exe" ] || continue
  if [ -n "${BINS:-}" ] && [[ " $BINS " != *" $(basename "$exe") "* ]]; then continue; fi
  objcopy --strip-debug "$exe" "$OUTDIR/bin/$(basename "$exe")"
done

# Libraries every Linux has (or that must come from the GPU machine's own torch).
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|librt\.so|libpthread\.so|libstdc\+\+|libgcc_s|libtorch|libc10|libcuda|libcudart|libnvrtc|libcublas|libcudnn|libcufft|libcurand|libcusparse|libcusolver|libnccl|libnvJitLink|libnvToolsExt|libcupti|libgomp|libshm|libcufile|libnvshmem)'
for exe in "$OUTDIR"/bin/*; do
  ldd "$BUILD/bin/$(basename "$exe")" | awk '/=> \//{print $1, $3}'
done | sort -u | while read -r name path; do
  if ! [[ "$name" =~ $skip ]]; then
    cp -L "$path" "$OUTDIR/lib/$name"
  fi
done
strip --strip-debug "$OUTDIR"/lib/* 2>/dev/null || true
git -C "$ROOT" rev-parse HEAD > "$OUTDIR/REVISION" 2>/dev/null || true
du -sh "$OUTDIR" | awk '{print "bundle: " $1}'

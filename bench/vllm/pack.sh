#!/usr/bin/env bash
# Download the pinned wheels of bench/vllm/requirements.txt and pack vLLM 0.26.0 for the GPU
# machine (no network, <= 64 MiB per transfer) into two git-ignored folders in the repo root:
#
#   .vllm-part1/  first transfer:  vllm/_C_stable_libtorch.abi3.so, xz-compressed (+ its sha256)
#   .vllm-part2/  second transfer: vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so (xz), the rest of the
#                 vllm package minus binaries the offline dense-model path never loads (tar.xz),
#                 the small wheels, the xgrammar stub, and a manifest with sha256s
#
# Then on the GPU machine: bench/vllm/stage.sh part1 (first command), stage.sh part2 and
# stage.sh check (second command, sent right after). See bench/vllm/README.md.
#
# Usage: bench/vllm/pack.sh            (reuses the wheel cache and unchanged outputs)
# Env:   VLLM_WHEEL_CACHE  wheel cache (default ~/.cache/autoquant/vllm-wheels)
#        PYTHON            interpreter whose pip downloads (default python3; any version works)
#        FORCE=1           rebuild both parts even if their stamps match
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(git -C "$HERE" rev-parse --show-toplevel)"
REQ="$HERE/requirements.txt"
CACHE="${VLLM_WHEEL_CACHE:-$HOME/.cache/autoquant/vllm-wheels}"
PY="${PYTHON:-python3}"
P1="$ROOT/.vllm-part1"
P2="$ROOT/.vllm-part2"
LIMIT_P1=$((60 * 1024 * 1024))
LIMIT_P2=$((32 * 1024 * 1024))
MIB=$((1024 * 1024))

# Paths inside the vllm package that are not carried (besides the two big libraries, which travel
# compressed on their own). None of them is imported by the offline LLM(...) path of a dense
# BF16/FP8 model with FlashAttention 3 on sm_90:
DROP=(
  vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so # FlashAttention 2, sm_80 only (291 MiB); import is optional
  vllm/_moe_C_stable_libtorch.abi3.so      # MoE kernels; imported under contextlib.suppress(ImportError)
  vllm/_flashmla_C.abi3.so                 # FlashMLA (DeepSeek MLA attention); lazy, try/except
  vllm/_flashmla_extension_C.abi3.so       # FlashMLA helper, same
  vllm/vllm-rs                             # Rust frontend binary, only `vllm serve` with VLLM_USE_RUST_FRONTEND
  vllm/third_party/deep_gemm               # DeepGEMM (block-FP8 GEMM, 5 CPython builds + CUTLASS headers);
                                           # has_deep_gemm() then reports False and vLLM falls back to CUTLASS
  vllm/third_party/fmha_sm100              # sm_100 sparse attention for MiniMax-M3 (lazy import)
)

mkdir -p "$CACHE"
echo "== pip download -> $CACHE"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
  --disable-pip-version-check --progress-bar off \
  --require-hashes -r "$REQ" -d "$CACHE" >"$CACHE/.pip-download.log" 2>&1 \
  || { cat "$CACHE/.pip-download.log" >&2; echo "pack.sh: pip download failed" >&2; exit 1; }
grep -E '^(Saved|Successfully)' "$CACHE/.pip-download.log" || true

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Resolve each requirement to its file in the cache by sha256 (the cache may hold other versions).
"$PY" - "$REQ" "$CACHE" >"$WORK/plan.tsv" <<'PYEOF'
import hashlib, os, re, sys
req, cache = sys.argv[1], sys.argv[2]
text = open(req).read().replace("\\\n", " ")
only_if = {}
entries = []
for line in text.splitlines():
    m = re.match(r"#\s*autoquant:only-if-missing\s+(\S+)", line.strip())
    if m:
        spec = m.group(1)
        only_if[re.split(r"[<>=!~]", spec, maxsplit=1)[0].lower()] = spec
        continue
    line = line.split(" #", 1)[0].strip()
    if not line or line.startswith("#"):
        continue
    m = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)\s+(.*)$", line)
    if not m:
        sys.exit(f"pack.sh: cannot parse requirement line: {line!r}")
    name, ver, rest = m.groups()
    hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", rest)
    if not hashes:
        sys.exit(f"pack.sh: no sha256 for {name}")
    entries.append((name.lower(), ver, hashes))
by_hash = {}
for fn in sorted(os.listdir(cache)):
    if fn.endswith(".whl"):
        h = hashlib.sha256(open(os.path.join(cache, fn), "rb").read()).hexdigest()
        by_hash[h] = fn
for name, ver, hashes in entries:
    files = [by_hash[h] for h in hashes if h in by_hash]
    if not files:
        sys.exit(f"pack.sh: no wheel in {cache} matches the hash of {name}=={ver}")
    print(f"{name}\t{ver}\t{files[0]}\t{only_if.get(name, '')}")
PYEOF

VLLM_WHL="$(awk -F'\t' '$1=="vllm"{print $3}' "$WORK/plan.tsv")"
VLLM_SHA="$(sha256sum "$CACHE/$VLLM_WHL" | cut -c1-64)"
echo "== vllm wheel: $VLLM_WHL ($VLLM_SHA)"

echo "== unpack the vllm wheel"
"$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
  "$CACHE/$VLLM_WHL" "$WORK/pkg"
C_SO="$WORK/pkg/vllm/_C_stable_libtorch.abi3.so"
FA3_SO="$WORK/pkg/vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so"
[[ -f "$C_SO" && -f "$FA3_SO" ]] || { echo "pack.sh: libraries missing from the wheel" >&2; exit 1; }
C_RAW_SHA="$(sha256sum "$C_SO" | cut -c1-64)"
FA3_RAW_SHA="$(sha256sum "$FA3_SO" | cut -c1-64)"

# ---------------------------------------------------------------- part 1
STAMP1="vllm=$VLLM_SHA c=$C_RAW_SHA xz=-9e-T1"
if [[ "${FORCE:-0}" != 1 && -f "$P1/STAMP" && "$(cat "$P1/STAMP")" == "$STAMP1" \
      && -f "$P1/_C_stable_libtorch.abi3.so.xz" ]]; then
  echo "== part1 up to date"
else
  echo "== part1: xz -9e _C_stable_libtorch.abi3.so (single thread for the best ratio; ~2 min)"
  rm -rf "$P1"; mkdir -p "$P1"
  xz -9e -T1 -c "$C_SO" >"$P1/_C_stable_libtorch.abi3.so.xz"
  {
    echo "$(sha256sum "$P1/_C_stable_libtorch.abi3.so.xz" | cut -c1-64)  _C_stable_libtorch.abi3.so.xz"
    echo "$C_RAW_SHA  _C_stable_libtorch.abi3.so"
  } >"$P1/SHA256SUMS"
  echo "$STAMP1" >"$P1/STAMP"
fi
P1_XZ_SHA="$(head -1 "$P1/SHA256SUMS" | cut -c1-64)"

# ---------------------------------------------------------------- part 2
PLAN_SHA="$(cat "$WORK/plan.tsv" "$HERE/stubs/xgrammar/__init__.py" "$HERE/pack.sh" | sha256sum | cut -c1-64)"
STAMP2="vllm=$VLLM_SHA plan=$PLAN_SHA part1=$P1_XZ_SHA"
if [[ "${FORCE:-0}" != 1 && -f "$P2/STAMP" && "$(cat "$P2/STAMP")" == "$STAMP2" ]]; then
  echo "== part2 up to date"
else
  rm -rf "$P2"; mkdir -p "$P2/wheels/only-if-missing" "$P2/stubs"
  echo "== part2: xz -9e _vllm_fa3_C.abi3.so"
  xz -9e -T1 -c "$FA3_SO" >"$P2/_vllm_fa3_C.abi3.so.xz" &
  XZ_PID=$!

  echo "== part2: prune the package"
  rm -f "$C_SO" "$FA3_SO"
  for p in "${DROP[@]}"; do
    [[ -e "$WORK/pkg/$p" ]] || { echo "pack.sh: expected $p in the wheel" >&2; exit 1; }
    rm -rf "${WORK:?}/pkg/$p"
  done
  DISTINFO="$(cd "$WORK/pkg" && ls -d vllm-*.dist-info)"
  # Deterministic tar (sorted names, fixed owner and mtime).
  tar -C "$WORK/pkg" --sort=name --owner=0 --group=0 --numeric-owner --mode='u+rwX,go+rX,go-w' \
      --mtime='2026-07-25 00:00:00Z' --format=gnu -cf "$WORK/vllm-pkg.tar" vllm "$DISTINFO"
  xz -9e -T1 -c "$WORK/vllm-pkg.tar" >"$P2/vllm-pkg.tar.xz"
  wait "$XZ_PID"

  echo "== part2: wheels"
  : >"$P2/wheels/only-if-missing/REQUIRES"
  while IFS=$'\t' read -r name ver file cond; do
    [[ "$name" == vllm ]] && continue
    if [[ -n "$cond" ]]; then
      cp "$CACHE/$file" "$P2/wheels/only-if-missing/"
      printf '%s\t%s\n' "$cond" "$file" >>"$P2/wheels/only-if-missing/REQUIRES"
    else
      cp "$CACHE/$file" "$P2/wheels/"
    fi
  done <"$WORK/plan.tsv"
  cp -r "$HERE/stubs/xgrammar" "$P2/stubs/"
  find "$P2/stubs" -name __pycache__ -prune -exec rm -rf {} +

  {
    echo "vllm_version=${VLLM_WHL#vllm-}" | sed 's/-.*//'
    echo "vllm_wheel=$VLLM_WHL"
    echo "vllm_wheel_sha256=$VLLM_SHA"
    echo "part1_xz_sha256=$P1_XZ_SHA"
    echo "c_so_sha256=$C_RAW_SHA"
    echo "fa3_so_sha256=$FA3_RAW_SHA"
    echo "dist_info=$DISTINFO"
    echo "dropped=${DROP[*]}"
  } >"$P2/EXPECT"
  (cd "$P2" && find . -type f ! -name SHA256SUMS ! -name STAMP | LC_ALL=C sort | sed 's|^\./||' \
     | xargs sha256sum) >"$WORK/SHA256SUMS"
  mv "$WORK/SHA256SUMS" "$P2/SHA256SUMS"
  echo "$STAMP2" >"$P2/STAMP"
fi

# ---------------------------------------------------------------- report
size() { find "$1" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.2f", b/1048576}'; }
S1="$(size "$P1")"; S2="$(size "$P2")"
echo
echo "== contents"
(cd "$ROOT" && find .vllm-part1 .vllm-part2 -type f -printf '%10s  %p\n' | LC_ALL=C sort -k2)
echo
echo "part1: $S1 bytes = $(mib "$S1") MiB (limit $((LIMIT_P1 / MIB)) MiB)"
echo "part2: $S2 bytes = $(mib "$S2") MiB (limit $((LIMIT_P2 / MIB)) MiB)"
rc=0
(( S1 <= LIMIT_P1 )) || { echo "pack.sh: part1 is over its limit" >&2; rc=1; }
(( S2 <= LIMIT_P2 )) || { echo "pack.sh: part2 is over its limit" >&2; rc=1; }
exit $rc

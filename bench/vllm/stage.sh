#!/usr/bin/env bash
# Stage vLLM 0.26.0 on the GPU machine (no network) from the two folders bench/vllm/pack.sh built.
# Runs ON the GPU machine, from any directory; never touches the machine's own site-packages.
#
#   bench/vllm/stage.sh part1   first transfer (carry .vllm-part1): copy the compressed
#                               _C_stable_libtorch library to /tmp/vllm-stage/
#   bench/vllm/stage.sh part2   second transfer (carry .vllm-part2), sent right after while the
#                               machine is still warm: check part1 is there (exit 3 if the machine
#                               is a fresh one), install the small wheels and the vllm package into
#                               /tmp/vllm-site, decompress both libraries into it, and write
#                               /tmp/vllm-stage/env.sh
#   bench/vllm/stage.sh check   import vllm and vllm.LLM with that environment, print the version
#                               and whether the CUDA kernels and FlashAttention 3 load
#
# Then:  source /tmp/vllm-stage/env.sh && python3 your_script.py
# Env:   PYTHON (default python3, must be 3.12), VLLM_STAGE (default /tmp/vllm-stage),
#        VLLM_SITE (default /tmp/vllm-site)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-python3}"
STAGE="${VLLM_STAGE:-/tmp/vllm-stage}"
SITE="${VLLM_SITE:-/tmp/vllm-site}"
P1="$ROOT/.vllm-part1"
P2="$ROOT/.vllm-part2"
C_XZ=_C_stable_libtorch.abi3.so.xz

die() { local rc=$1; shift; echo "stage.sh: $*" >&2; exit "$rc"; }
sha() { sha256sum "$1" | cut -c1-64; }
expect() { sed -n "s/^$1=//p" "$P2/EXPECT"; }

# Decompress an .xz file with Python's lzma (no dependency on the xz tool), then check its sha256.
unxz_to() { # src dst sha256
  "$PY" - "$1" "$2" <<'PYEOF'
import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 16 << 20)
PYEOF
  [[ "$(sha "$2")" == "$3" ]] || die 1 "$2: sha256 mismatch after decompression"
}

part1() {
  [[ -f "$P1/$C_XZ" && -f "$P1/SHA256SUMS" ]] \
    || die 2 "$P1 is missing: carry .vllm-part1 (built by bench/vllm/pack.sh) with this command"
  (cd "$P1" && sha256sum --quiet -c <(head -1 SHA256SUMS)) || die 1 "$P1/$C_XZ is damaged"
  mkdir -p "$STAGE"
  cp "$P1/$C_XZ" "$P1/SHA256SUMS" "$STAGE/"
  (cd "$STAGE" && sha256sum --quiet -c <(head -1 SHA256SUMS)) || die 1 "copy to $STAGE failed"
  echo "stage.sh part1: $STAGE/$C_XZ ($(stat -c %s "$STAGE/$C_XZ") bytes) in place;" \
       "send the part2 command now, before the machine is given back"
}

part2() {
  [[ -f "$P2/EXPECT" && -f "$P2/SHA256SUMS" ]] \
    || die 2 "$P2 is missing: carry .vllm-part2 (built by bench/vllm/pack.sh) with this command"
  local want; want="$(expect part1_xz_sha256)"
  if [[ ! -f "$STAGE/$C_XZ" ]]; then
    die 3 "$STAGE/$C_XZ is not here: this is a fresh machine (the one that ran 'stage.sh part1'" \
          "was given back). Run 'bench/vllm/stage.sh part1' carrying .vllm-part1 again, then this."
  fi
  [[ "$(sha "$STAGE/$C_XZ")" == "$want" ]] \
    || die 3 "$STAGE/$C_XZ does not match this part2 (sha256 differs: stale or from another pack)." \
             "Run 'bench/vllm/stage.sh part1' with the .vllm-part1 of the same pack.sh run."
  "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' \
    || die 2 "$PY is not Python 3.12"
  (cd "$P2" && sha256sum --quiet -c SHA256SUMS) || die 1 "$P2 is damaged (SHA256SUMS)"

  rm -rf "$SITE"; mkdir -p "$SITE"
  echo "stage.sh part2: wheels -> $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
    --target "$SITE" "$P2"/wheels/*.whl
  # Fallback wheels, only where the machine's own version does not satisfy the requirement.
  local spec file
  while IFS=$'\t' read -r spec file; do
    [[ -n "$spec" ]] || continue
    if "$PY" - "$spec" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement
r = Requirement(sys.argv[1])
try:
    have = version(r.name)
except PackageNotFoundError:
    have = None
print(f"stage.sh part2: machine has {r.name} {have}; need {r.specifier}", file=sys.stderr)
sys.exit(0 if have is not None and r.specifier.contains(have, prereleases=True) else 1)
PYEOF
    then :; else
      echo "stage.sh part2: installing $file"
      "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
        --target "$SITE" "$P2/wheels/only-if-missing/$file"
    fi
  done <"$P2/wheels/only-if-missing/REQUIRES"
  # Stand-ins for packages that vLLM 0.26.0 imports but that do not fit (see stubs/*/__init__.py).
  cp -r "$P2"/stubs/* "$SITE/"

  echo "stage.sh part2: vllm package -> $SITE"
  "$PY" - "$P2/vllm-pkg.tar.xz" "$SITE" <<'PYEOF'
import sys, tarfile
with tarfile.open(sys.argv[1], "r:xz") as t:
    t.extractall(sys.argv[2], filter="data")
PYEOF
  echo "stage.sh part2: decompress the libraries"
  unxz_to "$STAGE/$C_XZ" "$SITE/vllm/_C_stable_libtorch.abi3.so" "$(expect c_so_sha256)"
  unxz_to "$P2/_vllm_fa3_C.abi3.so.xz" "$SITE/vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so" \
    "$(expect fa3_so_sha256)"
  chmod 755 "$SITE/vllm/_C_stable_libtorch.abi3.so" "$SITE/vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so"

  cat >"$STAGE/env.sh" <<EOF
# vLLM $(expect vllm_version) staged by bench/vllm/stage.sh; source this file.
export PYTHONPATH="$SITE\${PYTHONPATH:+:\$PYTHONPATH}"
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export VLLM_NO_USAGE_STATS=1
export DO_NOT_TRACK=1
export VLLM_ENABLE_V1_MULTIPROCESSING=0
EOF
  echo "stage.sh part2: done ($(du -sh "$SITE" | cut -f1) in $SITE). Use:"
  echo "  source $STAGE/env.sh"
  sed -n 's/^export /  export /p' "$STAGE/env.sh"
}

check() {
  [[ -f "$STAGE/env.sh" ]] || die 3 "$STAGE/env.sh is missing: run 'stage.sh part2' first"
  # shellcheck disable=SC1091
  source "$STAGE/env.sh"
  "$PY" - "$SITE" <<'PYEOF'
import sys
site = sys.argv[1]
import vllm
from vllm import LLM, SamplingParams  # noqa: F401
assert vllm.__file__.startswith(site), vllm.__file__
print("vllm", vllm.__version__, "from", vllm.__file__)

# Every staged distribution's own requirements (vllm's are informational: most are knowingly
# left out, see bench/vllm/requirements.txt).
from importlib.metadata import PackageNotFoundError, distributions, version
from packaging.requirements import Requirement
for d in sorted(distributions(path=[site]), key=lambda d: d.metadata["Name"].lower()):
    bad = []
    for line in d.requires or []:
        r = Requirement(line)
        if r.marker and not r.marker.evaluate({"extra": ""}):
            continue
        try:
            have = version(r.name)
        except PackageNotFoundError:
            have = None
        if have is None or not r.specifier.contains(have, prereleases=True):
            bad.append(f"{r.name}{r.specifier} (have {have})")
    name = d.metadata["Name"]
    if bad and name.lower() != "vllm":
        print(f"UNMET {name} {d.version}: " + ", ".join(bad))
    elif bad:
        print(f"note: vllm requirements not present (expected, see requirements.txt): {len(bad)}")

import torch
print("torch", torch.__version__, "cuda available:", torch.cuda.is_available())
from vllm.platforms import current_platform
print("platform:", type(current_platform).__name__,
      current_platform.get_device_name() if torch.cuda.is_available() else "")
import vllm._C_stable_libtorch  # noqa: F401
print("vllm._C_stable_libtorch loaded; cutlass_scaled_mm:", hasattr(torch.ops._C, "cutlass_scaled_mm"))
from vllm.vllm_flash_attn import flash_attn_interface as fa
print("FA3 available:", fa.FA3_AVAILABLE, fa.FA3_UNAVAILABLE_REASON or "")
PYEOF
}

case "${1:-}" in
  part1) part1 ;;
  part2) part2 ;;
  check) check ;;
  *) echo "usage: $0 part1|part2|check" >&2; exit 2 ;;
esac

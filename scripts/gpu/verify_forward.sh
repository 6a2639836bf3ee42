#!/usr/bin/env bash
# One device call: CUDA forward parity + the 3B prefill bench. Runs on the GPU
# machine in the repo root with .gpu-bundle/ carried (scripts/gpu/bundle.sh,
# here; `autoquant` is all it needs). Everything it writes goes to $OUT
# (else ./out): parity JSON + pytest log, bench JSON + log, info.
#   bash scripts/gpu/verify_forward.sh [MODEL_DIR=/tmp/rand-3b]
# Steps are time-boxed so that the whole stays near 8 minutes:
#   info (s) | parity pytest (<=2 min, +1.5 on failure) | 3B init + bench (<=5.5 min)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export OUT="${OUT:-$ROOT/out}"
mkdir -p "$OUT"
MODEL="${1:-/tmp/rand-3b}"
RUN="bash scripts/gpu/run.sh"
rc=0
t_start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - t_start )) s] $*"; }

stamp info
$RUN info 2>&1 | tee "$OUT/info.log"
$RUN exec python3 -c 'import torch; print("cuda", torch.version.cuda, "flash sdp", torch.backends.cuda.flash_sdp_enabled())' \
  2>&1 | tee -a "$OUT/info.log"

stamp "parity pytest"
# run.sh pytest tees into $OUT/pytest.log; the test writes $OUT/forward_parity_cuda.json.
if ! timeout 120 $RUN pytest tests/python/test_forward_parity_cuda.py -q -s -p no:cacheprovider; then
  rc=1
  # Isolate the varlen flash-attention vision path: same cases with the per-window SDPA loop.
  cp "$OUT/pytest.log" "$OUT/pytest_varlen.log"
  stamp "parity pytest again with AUTOQUANT_DISABLE_VARLEN=1"
  AUTOQUANT_DISABLE_VARLEN=1 AQ_PARITY_TAG=novarlen timeout 90 $RUN pytest \
    tests/python/test_forward_parity_cuda.py -q -s -p no:cacheprovider >/dev/null
  mv "$OUT/pytest.log" "$OUT/pytest_novarlen.log"; mv "$OUT/pytest_varlen.log" "$OUT/pytest.log"
fi
grep -hE "bfloat16|float32|overall|passed|failed|Error" "$OUT"/pytest*.log | grep -v Loading | tail -n 24

stamp "3B init + bench"
# bench_forward.py --init times `model init` (bf16, 7.5 GB) and records it in the JSON.
timeout 330 $RUN exec python3 bench/forward/bench_forward.py --model "$MODEL" --init \
  --iters 20 --warmup 3 --no-varlen-batch 8 --out "$OUT/forward_bench.json" 2>&1 | tee "$OUT/bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
stamp "done rc=$rc"
rm -rf "$MODEL"
exit $rc

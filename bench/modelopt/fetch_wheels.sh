#!/usr/bin/env bash
# Downloads the wheels of bench/modelopt/requirements.txt for the GPU machine (CPython 3.12, x86-64
# Linux) into .whl/ (gitignored), then trims pulp's wheel to its Linux x86-64 CBC binary: the wheel
# bundles CBC for Linux (x86-64, i32, arm64), macOS and Windows (16.4 MB); the trimmed one is about
# 3 MB. The trimmed wheel keeps its name and version; its RECORD lists only the files it still holds.
# Usage (repo root): bash bench/modelopt/fetch_wheels.sh [DEST]   (DEST default .whl)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${1:-$ROOT/.whl}"
PY="${PYTHON:-python3}"
mkdir -p "$DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d "$DEST" -r "$ROOT/bench/modelopt/requirements.txt"
"$PY" - "$DEST" <<'EOF'
import pathlib, sys, zipfile
dest = pathlib.Path(sys.argv[1])
for whl in dest.glob("pulp-*.whl"):
    keep_prefix, drop_prefix = "pulp/solverdir/cbc/linux/i64/", "pulp/solverdir/cbc/"
    with zipfile.ZipFile(whl) as z:
        infos = z.infolist()
        if not any(i.filename.startswith(drop_prefix) and not i.filename.startswith(keep_prefix) for i in infos):
            print(f"{whl.name}: already trimmed")
            continue
        kept = [i for i in infos if not i.filename.startswith(drop_prefix) or i.filename.startswith(keep_prefix)]
        names = {i.filename for i in kept}
        tmp = whl.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            for i in kept:
                data = z.read(i)
                if i.filename.endswith(".dist-info/RECORD"):
                    lines = [l for l in data.decode().splitlines() if l and l.split(",")[0] in names | {i.filename}]
                    data = ("\n".join(lines) + "\n").encode()
                out.writestr(i, data)  # the ZipInfo keeps the file mode (cbc stays executable)
    tmp.replace(whl)
    print(f"{whl.name}: trimmed to the Linux x86-64 CBC binary, {whl.stat().st_size} bytes")
EOF
ls -l "$DEST"
du -sh "$DEST"

"""Where the built binaries are: $AUTOQUANT_BUILD_DIR (default <repo>/build)."""
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD_DIR = pathlib.Path(os.environ.get("AUTOQUANT_BUILD_DIR", REPO / "build"))


def binary(name: str) -> pathlib.Path:
    path = BUILD_DIR / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not built: run scripts/build.sh (or set AUTOQUANT_BUILD_DIR)")
    return path

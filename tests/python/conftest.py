"""Shared pytest fixtures for the Python tests.

`autoquant_bin`: the built `autoquant` command, from $AUTOQUANT_BUILD_DIR
(default <repo>/build). Missing binaries fail the test with a clear message;
nothing is skipped.
"""
import pathlib

import pytest

from aq_paths import BUILD_DIR


@pytest.fixture(scope="session")
def autoquant_bin() -> pathlib.Path:
    path = BUILD_DIR / "bin" / "autoquant"
    if not path.exists():
        pytest.fail(f"{path} not built: run scripts/build.sh (or set AUTOQUANT_BUILD_DIR)", pytrace=False)
    return path

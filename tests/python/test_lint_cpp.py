"""scripts/lint_cpp.py, the C++ lint of the test command, on a small file parsed with the real build's
flags (LibTorch's headers), as the test command parses core/:
- a LibTorch call that can throw, in a function that returns a Status, outside TorchCall, is reported with
  its file and line; the same call inside TorchCall, inside a try block, or in a function that returns a
  tensor is not;
- a function over 80 lines in core/ is reported unless scripts/long_functions.txt lists it, and a listed
  function that is no longer long is reported too (the list only shrinks)."""
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from aq_paths import BUILD_DIR, REPO

SOURCE = r'''
#include <torch/torch.h>
#include "absl/status/statusor.h"
#include "core/util/torch_status.h"

namespace autoquant {
absl::Status Bad(torch::Tensor t) {
  t.add_(1);  // may throw: outside the wrapper
  return absl::OkStatus();
}
absl::StatusOr<int64_t> Good(torch::Tensor t) {
  if (!t.defined()) return 0;  // an accessor that never throws
  return TorchCall([&] { return t.sum().item<int64_t>(); });
}
absl::Status Caught(torch::Tensor t) {
  try {
    t.mul_(2);
  } catch (...) {
    return absl::InternalError("refused");
  }
  return absl::OkStatus();
}
torch::Tensor Throws(torch::Tensor t) { return t.matmul(t); }  // by contract; callers wrap it
int Long(int x) {
LONG_BODY  return x;
}
}  // namespace autoquant
'''
LONG = "  x += 1;\n" * 85


def torch_command():
    for c in json.loads((BUILD_DIR / "compile_commands.json").read_text()):
        if c["file"].endswith("core/util/torch_status.cc"):
            return c
    pytest.fail(f"no compile command for core/util/torch_status.cc in {BUILD_DIR}")


@pytest.fixture(scope="module")
def pch(tmp_path_factory):
    """One precompiled LibTorch header for the module's runs (the lint makes it on first use)."""
    return tmp_path_factory.mktemp("lint-pch") / "torch.pch"


def run_lint(tmp_path, pch, source, listed=""):
    """The lint, copied into a tree of its own (tmp_path) whose core/ holds only the probe file."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    (tmp_path / "core").mkdir(exist_ok=True)
    shutil.copy(REPO / "scripts" / "lint_cpp.py", tmp_path / "scripts" / "lint_cpp.py")
    (tmp_path / "scripts" / "long_functions.txt").write_text(listed)
    src = tmp_path / "core" / "probe.cc"
    src.write_text(source)
    c = torch_command()
    argv = c.get("arguments") or shlex.split(c["command"])
    argv = [str(src) if a.endswith("core/util/torch_status.cc") else a for a in argv]
    build = tmp_path / "build"
    build.mkdir(exist_ok=True)
    (build / "compile_commands.json").write_text(json.dumps(
        [{"directory": c["directory"], "file": str(src), "arguments": argv}]))
    r = subprocess.run([sys.executable, str(tmp_path / "scripts" / "lint_cpp.py"), str(build)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "LINT_PCH": str(pch)})
    return r, [l for l in r.stdout.splitlines() if l.strip()]


def test_a_throwing_call_outside_torchcall_and_a_long_function_are_reported_and_nothing_else(tmp_path, pch):
    r, found = run_lint(tmp_path, pch, SOURCE.replace("LONG_BODY", LONG))
    assert r.returncode == 1, r.stdout + r.stderr
    assert len(found) == 2, found
    assert "core/probe.cc:8:" in found[0] and "Bad()" in found[0] and "add_" in found[0], found
    assert "Long() is 88 lines" in found[1], found


def test_with_the_call_wrapped_and_the_long_function_listed_it_passes(tmp_path, pch):
    fixed = SOURCE.replace("  t.add_(1);  // may throw: outside the wrapper",
                           "  if (absl::Status s = TorchCall([&] { t.add_(1); }); !s.ok()) return s;")
    assert fixed != SOURCE
    r, found = run_lint(tmp_path, pch, fixed.replace("LONG_BODY", LONG), listed="core/probe.cc Long  a test\n")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_listed_function_that_is_no_longer_long_must_leave_the_list(tmp_path, pch):
    fixed = SOURCE.replace("  t.add_(1);  // may throw: outside the wrapper", "")
    r, found = run_lint(tmp_path, pch, fixed.replace("LONG_BODY", ""), listed="core/probe.cc Long  a test\n")
    assert r.returncode == 1, r.stdout + r.stderr
    assert found == ["scripts/long_functions.txt: core/probe.cc Long is no longer over 80 lines: remove it"], found

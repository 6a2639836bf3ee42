"""The README's first command, scripts/demo.sh, end to end (setup is idempotent; the build is the
tested one): a daemon on the tiny model, a sweep through the CLI, diff, SIGTERM exit 0; and again in
the same directory, which replaces its own schemes."""
import os
import json
import subprocess

from aq_paths import BUILD_DIR, REPO


def test_demo_runs_twice(tmp_path):
    env = dict(os.environ, BUILD_DIR=str(BUILD_DIR), AUTOQUANT_SKIP_BUILD="1")
    for run in (1, 2):
        p = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), str(tmp_path / "demo")], env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, f"run {run}: {p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        assert "OK: every scheme is distinct and matches its manifest" in p.stdout
        assert "SUCCEEDED" in p.stdout
        for scheme in ("top10", "top50", "top100"):
            assert (tmp_path / "demo" / "models" / scheme / "config.json").exists()
            assert (tmp_path / "demo" / "models" / scheme / "layer-sensitivity" / "evaluation.json").exists()
        report = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
        assert [p["scheme"] for p in report["points"]] == ["top10", "top50", "top100"]
        assert report["findings"]["identical_schemes"] == []
        assert (tmp_path / "demo" / "report" / "report.png").stat().st_size > 10_000
    assert "stopped cleanly" in (tmp_path / "demo" / "autoquantd.log").read_text()
    assert subprocess.run(["pgrep", "-f", str(tmp_path / "demo" / "base")], capture_output=True).returncode == 1

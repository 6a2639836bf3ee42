"""The README's first command, scripts/demo.sh, end to end (setup is idempotent; the build is the
tested one): a daemon on the tiny model, a sweep through the CLI, diff, SIGTERM exit 0; and again in
the same directory, which replaces its own schemes."""
import os
import json
import signal
import subprocess

from aq_paths import BUILD_DIR, REPO


def run_demo(work, env):
    """demo.sh in a session of its own: on a timeout the whole session goes (the daemon it started too,
    which its EXIT trap cannot stop when the script is killed)."""
    proc = subprocess.Popen(["bash", str(REPO / "scripts" / "demo.sh"), str(work)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"demo.sh timed out: {out[-3000:]}\n{err[-3000:]}")
    return proc.returncode, out, err


def test_demo_runs_twice(tmp_path):
    env = dict(os.environ, BUILD_DIR=str(BUILD_DIR), AUTOQUANT_SKIP_BUILD="1")
    (tmp_path / "demo").mkdir()
    # A port file left by an earlier run, whose daemon is gone: the demo must wait for its own daemon's.
    (tmp_path / "demo" / "autoquantd.out").write_text("1\n")
    for run in (1, 2):
        rc, stdout, stderr = run_demo(tmp_path / "demo", env)
        assert rc == 0, f"run {run}: {stdout[-3000:]}\n{stderr[-3000:]}"
        p = subprocess.CompletedProcess([], rc, stdout, stderr)
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

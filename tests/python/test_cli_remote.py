"""The `autoquant` commands against a live autoquantd on loopback (tiny model, CPU):
submit, sweep (coverage lists, the seeds' coverage-manifest layout, --only, --dry-run),
status, wait, logs (-f, --from), list, cancel, sensitivity, server info; --json parsed;
exit codes 0, 1 (a waited-for job failed or was cancelled), 2 (usage), 3 (no server, or a
missing or wrong token); --server / --token-file from the environment; progress in place
on a terminal and plain lines on a pipe. Every daemon is stopped by its fixture."""
import json
import os
import pathlib
import pty
import subprocess
import time

import pytest

from daemon_helpers import Daemon, free_port, stubs

pb, _ = stubs()


def cli(autoquant_bin, *args, daemon=None, env=None, timeout=300):
    """Runs `autoquant ARGS`, pointed at `daemon` through $AUTOQUANT_SERVER."""
    e = dict(os.environ)
    e.pop("AUTOQUANT_SERVER", None)
    e.pop("AUTOQUANT_TOKEN_FILE", None)
    if daemon is not None:
        e["AUTOQUANT_SERVER"] = f"127.0.0.1:{daemon.port}"
    e.update(env or {})
    return subprocess.run([str(autoquant_bin), *map(str, args)], capture_output=True, text=True, env=e,
                          timeout=timeout)


def ok_json(proc):
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def first_job(daemon, autoquant_bin):
    """A finished scheme, so that the baseline exists."""
    out = ok_json(cli(autoquant_bin, "submit", "first-top50", "--coverage", "top50", "--wait", "--json",
                      daemon=daemon))
    assert [j["state"] for j in out["jobs"]] == ["JOB_STATE_SUCCEEDED"]
    return out["jobs"][0]


def test_server_info(daemon, autoquant_bin):
    info = ok_json(cli(autoquant_bin, "server", "info", "--json", daemon=daemon))
    assert info["serving"] is True and info["models_root"] == str(daemon.root)
    assert info["version"].startswith("autoquant ") and len(info["model_fingerprint"]) == 64
    text = cli(autoquant_bin, "server", "info", "--server", f"127.0.0.1:{daemon.port}")
    assert text.returncode == 0 and "serving: true" in text.stdout and f"models_root: {daemon.root}" in text.stdout


def test_submit_status_wait_logs_list(daemon, autoquant_bin, first_job):
    sub = ok_json(cli(autoquant_bin, "submit", "s-top10", "--coverage", "10%", "--json", daemon=daemon))
    (job,) = sub["jobs"]
    assert job["scheme"] == "s-top10" and job["spec"]["coverage"] == pytest.approx(0.1)
    assert job["state"] in ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED")
    waited = ok_json(cli(autoquant_bin, "wait", job["id"], "--json", daemon=daemon))
    (done,) = waited["jobs"]
    assert done["state"] == "JOB_STATE_SUCCEEDED" and done["result"]["output_dir"] == str(daemon.root / "s-top10")
    assert 0 < done["result"]["groups_quantized"] < first_job["result"]["groups_quantized"]

    status = ok_json(cli(autoquant_bin, "status", job["id"], first_job["id"], "--json", daemon=daemon))
    assert [j["id"] for j in status["jobs"]] == [job["id"], first_job["id"]]
    text = cli(autoquant_bin, "status", job["id"], daemon=daemon)
    assert text.returncode == 0 and job["id"] in text.stdout and "SUCCEEDED" in text.stdout

    lines = [json.loads(l) for l in ok_lines(cli(autoquant_bin, "logs", job["id"], "--json", daemon=daemon))]
    seqs = [int(l["sequence"]) for l in lines]  # int64 is a string in proto3 JSON
    assert seqs == list(range(1, len(seqs) + 1)) and lines[-1]["state"] == "JOB_STATE_SUCCEEDED"
    middle = seqs[len(seqs) // 2]
    resumed = [json.loads(l) for l in ok_lines(cli(autoquant_bin, "logs", job["id"], "--from", middle, "--json",
                                                   daemon=daemon))]
    assert [int(l["sequence"]) for l in resumed] == seqs[middle:]
    followed = cli(autoquant_bin, "logs", "-f", job["id"], daemon=daemon)
    assert followed.returncode == 0 and "(SUCCEEDED)" in followed.stdout.splitlines()[-1]
    assert len(followed.stdout.splitlines()) == len(seqs)

    listed = ok_json(cli(autoquant_bin, "list", "--json", daemon=daemon))
    ids = [j["id"] for j in listed["jobs"]]
    assert ids.index(first_job["id"]) < ids.index(job["id"])
    running = ok_json(cli(autoquant_bin, "list", "--state", "queued,running", "--json", daemon=daemon))
    assert job["id"] not in [j["id"] for j in running["jobs"]]
    text = cli(autoquant_bin, "list", "--state", "succeeded", daemon=daemon)
    assert text.returncode == 0 and any(job["id"] in l and "s-top10" in l for l in text.stdout.splitlines())


def ok_lines(proc):
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout.splitlines()


def test_sensitivity(daemon, autoquant_bin, first_job):
    sens = ok_json(cli(autoquant_bin, "sensitivity", "--json", daemon=daemon))
    assert sens["baseline_key"] == first_job["result"]["baseline_key"]
    assert sorted(g["rank"] for g in sens["groups"]) == list(range(len(sens["groups"])))
    text = ok_lines(cli(autoquant_bin, "sensitivity", daemon=daemon))
    least = min(sens["groups"], key=lambda g: g["rank"])["key"]
    assert text[0].startswith(f"baseline {sens['baseline_key']}") and text[1].startswith(f"0  {least}")
    # No kl_div baseline yet: FAILED_PRECONDITION is a usage error.
    assert cli(autoquant_bin, "sensitivity", "--method", "kl_div", daemon=daemon).returncode == 2


def test_sweep_coverages_only_and_wait(daemon, autoquant_bin, first_job):
    out = ok_json(cli(autoquant_bin, "sweep", "--coverages", "10,20,top50", "--only", "top10,50", "--prefix", "sw-",
                      "--wait", "--json", daemon=daemon))
    assert out["sweep_id"] and out["dry_run"] is False
    assert [j["scheme"] for j in out["jobs"]] == ["sw-top10", "sw-top50"]
    assert all(j["state"] == "JOB_STATE_SUCCEEDED" and j["sweep_id"] == out["sweep_id"] for j in out["jobs"])
    assert (daemon.root / "sw-top10").is_dir() and not (daemon.root / "sw-top20").exists()
    # Plain lines (not a terminal): one per change, the last one per job its outcome.
    text = cli(autoquant_bin, "sweep", "--coverages", "30", "--prefix", "plain-", "--wait", daemon=daemon)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("sweep ") and lines[1].startswith("submitted ")
    assert "\x1b[" not in text.stdout and "SUCCEEDED" in lines[-1] and str(daemon.root / "plain-top30") in lines[-1]


def seed_layout(root: pathlib.Path, keys_by_rank, coverages):
    """DIR/<scheme>/layer-sensitivity/<scheme>_coverage_from_baseline.json, as the seeds laid them out."""
    for c in coverages:
        scheme = f"fp8_autoquant_all_layers_top{c}_coco2017"
        n = max(1, round(len(keys_by_rank) * c / 100))
        folder = root / scheme / "layer-sensitivity"
        folder.mkdir(parents=True)
        (folder / f"{scheme}_coverage_from_baseline.json").write_text(json.dumps({
            "baseline_manifest": "fp8_autoquant_all_layers_fp8_quant_manifest.json", "coverage_fraction": c / 100,
            "selected_layers": keys_by_rank[:n], "dropped_layers": keys_by_rank[n:]}))
        (folder / "per-layer-sensitivity.md").write_text("# not a manifest\n")


def test_sweep_discovers_the_seeds_manifest_layout(daemon, autoquant_bin, first_job, tmp_path):
    sens = ok_json(cli(autoquant_bin, "sensitivity", "--json", daemon=daemon))
    keys = [g["key"] for g in sorted(sens["groups"], key=lambda g: g["rank"])]
    seed_layout(tmp_path / "seeds", keys, [10, 50, 100])
    plan = ok_json(cli(autoquant_bin, "sweep", "--coverage-manifests", tmp_path / "seeds", "--suffix", "_v2",
                       "--dry-run", "--json", daemon=daemon))
    assert plan["dry_run"] is True
    assert [p["scheme"] for p in plan["points"]] == [f"fp8_autoquant_all_layers_top{c}_coco2017_v2"
                                                     for c in (10, 50, 100)]
    out = ok_json(cli(autoquant_bin, "sweep", "--coverage-manifests", tmp_path / "seeds", "--suffix", "_v2",
                      "--only", "top10,top100", "--wait", "--json", daemon=daemon))
    assert [j["scheme"] for j in out["jobs"]] == ["fp8_autoquant_all_layers_top10_coco2017_v2",
                                                  "fp8_autoquant_all_layers_top100_coco2017_v2"]
    assert all(j["state"] == "JOB_STATE_SUCCEEDED" for j in out["jobs"])
    # Each scheme quantized exactly its manifest's selection, and wrote its manifest in the same layout.
    for job, c in zip(out["jobs"], (10, 100)):
        given = json.loads((tmp_path / "seeds" / f"fp8_autoquant_all_layers_top{c}_coco2017" / "layer-sensitivity" /
                            f"fp8_autoquant_all_layers_top{c}_coco2017_coverage_from_baseline.json").read_text())
        written = json.loads((daemon.root / job["scheme"] / "layer-sensitivity" /
                              f"{job['scheme']}_coverage_from_baseline.json").read_text())
        assert sorted(written["selected_layers"]) == sorted(given["selected_layers"])
        assert job["result"]["groups_quantized"] == len(given["selected_layers"])
    # The daemon's own models root is that layout too: its schemes are rediscovered.
    again = ok_json(cli(autoquant_bin, "sweep", "--coverage-manifests", daemon.root, "--only", "top10", "--dry-run",
                        "--json", daemon=daemon))
    assert {p["scheme"] for p in again["points"]} >= {"s-top10", "sw-top10",
                                                      "fp8_autoquant_all_layers_top10_coco2017_v2"}


def test_dry_run_submits_nothing_and_tokens_are_checked(tmp_path, daemon_inputs, autoquant_bin):
    base, calib = daemon_inputs
    token_file = tmp_path / "token"
    token_file.write_text("cli-secret-7\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-it\n")
    d = Daemon(base, calib, tmp_path / "models", "--token-file", token_file, token="cli-secret-7").start()
    try:
        plan = cli(autoquant_bin, "sweep", "--coverages", "10,50,100", "--dry-run", daemon=d)
        assert plan.returncode == 0 and "nothing was" in plan.stdout
        assert [l.split()[0] for l in plan.stdout.splitlines()[1:]] == ["top10", "top50", "top100"]
        # No daemon needed for a plan.
        assert cli(autoquant_bin, "sweep", "--coverages", "10", "--dry-run", "--server",
                   f"127.0.0.1:{free_port()}").returncode == 0
        assert list(d.call("ListJobs", pb.ListJobsRequest()).jobs) == []
        # Missing and wrong tokens: 3, and nothing submitted.
        for extra in ([], ["--token-file", wrong]):
            p = cli(autoquant_bin, "submit", "t", "--coverage", "top10", *extra, daemon=d)
            assert p.returncode == 3 and "UNAUTHENTICATED" not in p.stdout and "token" in p.stderr.lower(), p
            assert "cli-secret-7" not in p.stderr
        assert list(d.call("ListJobs", pb.ListJobsRequest()).jobs) == []
        # The right token, by flag and from $AUTOQUANT_TOKEN_FILE.
        assert ok_json(cli(autoquant_bin, "server", "info", "--json", "--token-file", token_file, daemon=d))["serving"]
        assert ok_json(cli(autoquant_bin, "list", "--json", daemon=d,
                           env={"AUTOQUANT_TOKEN_FILE": str(token_file)})) == {"jobs": []}
        # An unreadable or empty token file is a usage error.
        empty = tmp_path / "empty"
        empty.write_text("\n")
        for f in (tmp_path / "missing", empty):
            assert cli(autoquant_bin, "list", "--token-file", f, daemon=d).returncode == 2
    finally:
        assert d.stop() == 0, d.stop_report()


def test_cancelled_and_failed_jobs_exit_1(tmp_path, daemon_inputs, slow_calib, autoquant_bin):
    base, _ = daemon_inputs
    d = Daemon(base, slow_calib, tmp_path / "models").start()
    try:
        run = ok_json(cli(autoquant_bin, "submit", "slow", "--coverage", "top50", "--json", daemon=d))["jobs"][0]
        blocked = ok_json(cli(autoquant_bin, "submit", "blocked", "--coverage", "top50", "--json",
                              daemon=d))["jobs"][0]
        d.wait_job(run["id"], states={pb.JOB_STATE_RUNNING})
        # Something autoquant did not write takes the queued scheme's place: that job will fail at export.
        (d.root / "blocked").mkdir()
        (d.root / "blocked" / "mine.txt").write_text("not autoquant's")
        cancelled = ok_json(cli(autoquant_bin, "cancel", run["id"], "--json", daemon=d))["jobs"][0]
        assert cancelled["id"] == run["id"]
        waited = cli(autoquant_bin, "wait", run["id"], blocked["id"], "--json", daemon=d)
        assert waited.returncode == 1, (waited.stdout, waited.stderr)
        states = [j["state"] for j in json.loads(waited.stdout)["jobs"]]
        assert states == ["JOB_STATE_CANCELLED", "JOB_STATE_FAILED"]
        assert "did not succeed" in waited.stderr and "blocked" in waited.stderr
        assert cli(autoquant_bin, "logs", "-f", run["id"], daemon=d).returncode == 1
        assert cli(autoquant_bin, "logs", run["id"], daemon=d).returncode == 0
        # Cancelling a finished job: FAILED_PRECONDITION, a usage error.
        again = cli(autoquant_bin, "cancel", run["id"], daemon=d)
        assert again.returncode == 2 and "CancelJob" in again.stderr
    finally:
        assert d.stop() == 0, d.stop_report()


def test_progress_in_place_on_a_terminal(daemon, autoquant_bin, first_job):
    job = ok_json(cli(autoquant_bin, "submit", "tty-top20", "--coverage", "top20", "--json", daemon=daemon))["jobs"][0]
    main, sub = pty.openpty()
    env = dict(os.environ, AUTOQUANT_SERVER=f"127.0.0.1:{daemon.port}")
    p = subprocess.Popen([str(autoquant_bin), "wait", job["id"]], stdout=sub, stderr=sub, env=env)
    os.close(sub)
    out = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert p.wait(timeout=300) == 0
    os.close(main)
    text = out.decode()
    assert "\x1b[2K" in text and "tty-top20" in text and "SUCCEEDED" in text


def test_unreachable_server_exits_3(autoquant_bin):
    port = free_port()
    for args in (["server", "info"], ["status", "x"], ["list"], ["wait", "x"], ["logs", "x"], ["cancel", "x"],
                 ["sensitivity"], ["submit", "s", "--coverage", "top10"], ["sweep", "--coverages", "10"]):
        p = cli(autoquant_bin, *args, "--server", f"127.0.0.1:{port}", "--timeout", "10")
        assert p.returncode == 3, (args, p.returncode, p.stderr)
        assert f"127.0.0.1:{port}" in p.stderr, p.stderr
    p = cli(autoquant_bin, "list", env={"AUTOQUANT_SERVER": f"127.0.0.1:{port}"})
    assert p.returncode == 3 and f"127.0.0.1:{port}" in p.stderr


@pytest.mark.parametrize("args", [
    ["submit"],                                                  # no scheme
    ["submit", "s", "--coverage", "2"],                          # a bare number above 1
    ["submit", "s", "--coverage", "top10", "--effective-bits", "8"],
    ["submit", "s", "--coverage", "top10", "--method", "hessian"],
    ["submit", "s", "--coverage", "top10", "--format", "gguf"],
    ["submit", "s", "--coverage-manifest", "/nonexistent.json"],
    ["sweep"],                                                   # no points
    ["sweep", "--coverages", "10", "--coverage-manifests", "/tmp"],
    ["sweep", "--coverages", "ten"],
    ["sweep", "--coverages", "10,top10"],
    ["sweep", "--coverages", "10,50", "--only", "top20"],
    ["sweep", "--coverage-manifests", "/nonexistent"],
    ["sweep", "--coverages", "10", "--suffix", "_v2"],
    ["status"], ["wait"], ["cancel"], ["logs"],
    ["logs", "x", "--from", "-1"],
    ["list", "--state", "sleeping"],
    ["server"],
    ["list", "--bogus"],
])
def test_usage_errors_exit_2_without_a_server(autoquant_bin, args):
    p = cli(autoquant_bin, *args, "--server", f"127.0.0.1:{free_port()}")
    assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)


def test_usage_errors_the_daemon_finds_exit_2(daemon, autoquant_bin, first_job):
    for args in (["status", "no-such-job"], ["wait", "no-such-job"], ["logs", "no-such-job"],
                 ["submit", "first-top50", "--coverage", "top10"],   # exists, no --overwrite
                 ["submit", "bad/name", "--coverage", "top10"],
                 ["submit", "none-selected"],                        # no selection
                 ["sweep", "--coverages", "10", "--prefix", "../x"]):
        p = cli(autoquant_bin, *args, daemon=daemon)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert p.stderr.startswith("autoquant: error: "), p.stderr


def test_help_lists_the_remote_commands_and_exit_code_3(autoquant_bin):
    top = cli(autoquant_bin, "--help")
    for command in ("submit", "sweep", "status", "wait", "logs", "list", "cancel", "sensitivity", "server",
                    "quantize", "diff", "inspect", "model", "calib"):
        assert f"  {command}" in top.stdout, command
    for command in (["sweep"], ["wait"], ["server", "info"]):
        h = cli(autoquant_bin, *command, "--help")
        assert h.returncode == 0 and "3 server unavailable" in h.stdout and "AUTOQUANT_SERVER" in h.stdout

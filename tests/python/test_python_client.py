"""The Python client (client/python, package autoquant_client) against a live autoquantd on loopback
with the tiny model.

The package is built from this working tree into a temporary directory (pip install --target, no
build isolation, so the venv's grpcio-tools generates the stubs) and put first on sys.path: the test
exercises the build hook and the current sources, whatever an earlier `scripts/setup.sh` installed
into the venv.

- A sweep top10/top50/top100 submitted by the client, its first job's logs streamed to the terminal
  line, all waited for; every checkpoint loaded with transformers on the CPU: the Linears that are FP8
  (compressed-tensors weight + weight_scale) are exactly those of the groups the scheme's quant
  manifest marks chosen FP8, each within half an E4M3 step of the base weight, every other Linear
  equals the base; and between any two schemes the weights differ exactly on the symmetric
  difference of their manifests' FP8 modules.
- Errors map to exception classes carrying the daemon's message and the gRPC code; a daemon with
  --token-file refuses a client without the token (Unauthenticated) and accepts one with it, also
  from AUTOQUANT_TOKEN_FILE / AUTOQUANT_SERVER.
- cancel, list_jobs paging, server_info, sensitivity, stream_logs resumption, tqdm progress.
- examples/eval_sweep.py runs against the daemon and prints one row per scheme.
"""
import io
import itertools
import json
import pathlib
import subprocess
import sys
import time

import pytest
import torch

import quant_helpers as qh
from aq_paths import REPO
from daemon_helpers import TEST_DEVICE, Daemon

TOKEN = "py-client-token-0123456789abcdef"
SWEEP = ["top10", "top50", "top100"]


@pytest.fixture(scope="session")
def aq(client_package):
    return client_package[0]


@pytest.fixture(scope="module")
def client(aq, daemon):
    with aq.Client(f"127.0.0.1:{daemon.port}") as c:
        yield c


@pytest.fixture(scope="module")
def sweep(aq, client):
    """(Sweep as submitted, the first job's streamed log lines, the finished jobs)."""
    submitted = client.submit_sweep(SWEEP)
    lines = list(client.stream_logs(submitted.jobs[0], follow=True))
    done = client.wait_all(submitted.jobs, timeout=600, progress=False)
    return submitted, lines, done


# ----------------------------------------------------------------------------- the sweep

def _manifest_fp8_modules(scheme_dir: pathlib.Path) -> set:
    manifest = json.loads((scheme_dir / "layer-sensitivity" / f"{scheme_dir.name}_quant_manifest.json").read_text())
    modules = {m for g in manifest["groups"].values() if g["chosen"] != "NONE" for m in g["modules"]}
    assert len([g for g in manifest["groups"].values() if g["chosen"] != "NONE"]) == manifest["num_quantized"]
    return modules


def _effective_linear_weights(model_dir: pathlib.Path) -> dict:
    """module name -> (weight as the model computes with it, in float32; whether it is stored FP8)."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32,
                                                                     output_loading_info=True)
    assert not {k: v for k, v in info.items() if v}, info
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            w = module.weight.detach()
            if w.dtype == torch.float8_e4m3fn:
                out[name] = (w.float() * module.weight_scale.detach().float(), True)
            else:
                assert not hasattr(module, "weight_scale"), name
                out[name] = (w.float(), False)
    return out


def test_sweep_submits_three_jobs_sharing_one_sweep_id(aq, sweep):
    submitted, _, done = sweep
    assert isinstance(submitted, aq.Sweep) and submitted.id
    assert [j.scheme for j in submitted.jobs] == SWEEP
    assert [j.spec.coverage for j in submitted.jobs] == [0.1, 0.5, 1.0]
    assert all(j.sweep_id == submitted.id for j in done)
    assert [j.state for j in done] == [aq.JobState.SUCCEEDED] * 3, [j.message for j in done]
    assert all(isinstance(j.result, aq.JobResult) and j.finished_at >= j.started_at for j in done)
    quantized = [j.result.groups_quantized for j in done]
    assert quantized[0] < quantized[1] < quantized[2] == done[2].result.groups_total


def test_streamed_logs_are_consecutive_and_end_with_the_terminal_state(aq, sweep):
    _, lines, _ = sweep
    assert all(isinstance(l, aq.LogLine) for l in lines)
    assert [l.sequence for l in lines] == list(range(1, len(lines) + 1))
    assert lines[-1].state == aq.JobState.SUCCEEDED and all(l.state is None for l in lines[:-1])
    assert any(l.phase == aq.Phase.EXPORT for l in lines)


def test_checkpoints_differ_exactly_where_their_manifests_say(sweep, daemon_inputs):
    _, _, done = sweep
    base_dir, _ = daemon_inputs
    base = _effective_linear_weights(base_dir)
    assert not any(fp8 for _, fp8 in base.values())
    schemes = {}
    for job in done:
        d = pathlib.Path(job.result.output_dir)
        planned = _manifest_fp8_modules(d)
        weights = _effective_linear_weights(d)
        assert weights.keys() == base.keys()
        assert {m for m, (_, fp8) in weights.items() if fp8} == planned, job.scheme
        assert len(planned) >= job.result.groups_quantized  # a group holds one or more Linears
        for m, (w, fp8) in weights.items():
            b = base[m][0]
            if fp8:
                assert not torch.equal(w, b), f"{job.scheme}: {m} is FP8 but equals the base"
                scale = dict(_scales(d))[m]
                assert bool(((w - b).abs() <= qh.e4m3_error_bound(b, scale)).all()), f"{job.scheme}: {m}"
            else:
                assert torch.equal(w, b), f"{job.scheme}: {m} is not in the plan but differs from the base"
        schemes[job.scheme] = (planned, weights)
    for (a, (plan_a, w_a)), (b, (plan_b, w_b)) in itertools.combinations(schemes.items(), 2):
        differing = {m for m in w_a if not torch.equal(w_a[m][0], w_b[m][0])}
        assert differing == plan_a ^ plan_b, (a, b)
        assert differing, f"{a} and {b} are identical"


def _scales(scheme_dir):
    """(transformers module name, weight_scale as float32) for each FP8 Linear of a scheme."""
    tensors = qh.read_checkpoint(scheme_dir)
    for name in qh.fp8_modules(tensors):
        yield qh.hf_module_name(name), qh.to_tensor(tensors[name + ".weight_scale"]).float()


def test_sensitivity_is_the_sweeps_baseline(aq, client, sweep):
    _, _, done = sweep
    sens = client.sensitivity()
    assert isinstance(sens, aq.Sensitivity) and sens.baseline_key == done[0].result.baseline_key
    assert sorted(g.rank for g in sens.groups) == list(range(len(sens.groups))) and len(sens.groups) == \
        done[0].result.groups_total
    assert all("FP8" in g.scores and g.modules for g in sens.groups)
    with pytest.raises(aq.FailedPrecondition):
        client.sensitivity(method="kl_div")


# ----------------------------------------------------------------------------- other calls

def test_stream_logs_resumes_from_a_sequence_number(client, sweep):
    _, lines, _ = sweep
    job = sweep[0].jobs[0]
    stored = list(client.stream_logs(job, follow=False))
    assert [(l.sequence, l.message) for l in stored] == [(l.sequence, l.message) for l in lines]
    middle = lines[len(lines) // 2].sequence
    resumed = list(client.stream_logs(job.id, follow=True, from_seq=middle))
    assert [l.sequence for l in resumed] == list(range(middle, len(lines) + 1))
    assert list(client.stream_logs(job, from_seq=len(lines) + 100)) == []


def test_list_jobs_iterates_through_pages_in_submission_order(aq, client, sweep):
    extra = [client.submit_scheme(f"page{i}", coverage=0.2 + 0.1 * i) for i in range(3)]
    client.wait_all(extra, timeout=600, progress=False, check=True)
    one_per_page = list(client.list_jobs(page_size=1))
    assert all(isinstance(j, aq.Job) for j in one_per_page)
    assert [j.id for j in one_per_page] == [j.id for j in client.list_jobs(page_size=1000)]
    ids = [j.id for j in one_per_page]
    assert ids.index(sweep[0].jobs[0].id) < ids.index(extra[0].id) < ids.index(extra[1].id) < ids.index(extra[2].id)
    assert len(ids) >= 6 and len(set(ids)) == len(ids)
    assert {j.id for j in client.list_jobs(states=["succeeded"], page_size=2)} == set(ids)
    assert list(client.list_jobs(states=[aq.JobState.FAILED])) == []


def test_server_info_fields(aq, client, daemon):
    info = client.server_info()
    assert isinstance(info, aq.ServerInfo)
    assert info.serving and info.device.startswith(TEST_DEVICE) and info.version.startswith("autoquant ")
    assert len(info.model_fingerprint) == 64 and len(info.calib_fingerprint) == 64
    assert info.calib_samples == 16 and info.models_root == str(daemon.root) and info.batch_size == 1
    assert info.metrics_address.startswith("127.0.0.1:") and info.uptime_seconds > 0
    assert isinstance(info.cached_baselines, list)


def test_wait_with_progress_draws_a_tqdm_bar(aq, client):
    job = client.submit_scheme("progress", coverage="30%")
    stream = io.StringIO()
    done = client.wait(job, timeout=600, file=stream)
    assert done.ok and done.spec.coverage == pytest.approx(0.3)
    text = stream.getvalue()
    assert "progress: 100%" in text and "succeeded" in text, text
    quiet = io.StringIO()
    assert client.wait(job.id, progress=False, file=quiet).ok and quiet.getvalue() == ""


def test_nvfp4_fp8_search_and_its_sensitivity(aq, client, daemon):
    """A search over NVFP4 and FP8 through the client: the scheme mixes both formats under its target,
    GetSensitivity keyed by the same formats shows both scores per group, and the spec comes back with
    its formats."""
    job = client.submit_scheme("mixed-6", effective_bits=6.0, formats=["nvfp4", aq.QuantFormat.FP8])
    assert [str(f) for f in job.spec.formats] == ["nvfp4", "fp8"]
    done = client.wait(job, timeout=600, progress=False)
    assert done.state == aq.JobState.SUCCEEDED, done.message
    assert done.result.effective_bits <= 6.0 + 1e-9
    sens = client.sensitivity(formats=["fp8", "nvfp4"])  # any order: the baseline's key sorts them
    assert sens.baseline_key == done.result.baseline_key
    assert all(set(g.scores) == {"NVFP4", "FP8", "NONE"} for g in sens.groups)
    assert all(g.scores["NVFP4"] >= g.scores["FP8"] for g in sens.groups)  # monotone in bits
    assert all(g.costs["NVFP4"] == pytest.approx(g.costs["NONE"] * 4.5 / 16) for g in sens.groups)
    with pytest.raises(aq.InvalidRequest) as e:  # two formats need a search, not a coverage
        client.submit_scheme("mixed-cov", coverage=0.5, formats=["nvfp4", "fp8"])
    assert "effective_bits" in e.value.message
    with pytest.raises(aq.InvalidRequest) as e:
        client.submit_scheme("mixed-twice", effective_bits=6.0, formats=["fp8", "fp8"])
    assert "FP8 twice" in e.value.message
    with pytest.raises(aq.FailedPrecondition) as e:  # NVFP4 keeps out of the vision tower
        client.submit_scheme("mixed-vision", effective_bits=6.0, formats=["nvfp4", "fp8"], include_vision=True)
    assert "vision" in e.value.message and "NVFP4" in e.value.message


def test_unreachable_effective_bits_raises_out_of_range(aq, client):
    with pytest.raises(aq.OutOfRange) as e:
        client.submit_scheme("too-few-bits", effective_bits=2.0)
    assert e.value.code.name == "OUT_OF_RANGE" and e.value.message


# ----------------------------------------------------------------------------- errors

def test_bad_coverage_raises_invalid_request_with_the_daemons_message(aq, client):
    with pytest.raises(aq.InvalidRequest) as e:
        client.submit_scheme("bad", coverage=1.5)
    assert e.value.code.name == "INVALID_ARGUMENT"
    assert "coverage" in e.value.message and "(0, 1]" in e.value.message
    assert str(e.value).startswith("INVALID_ARGUMENT: ")
    with pytest.raises(aq.InvalidRequest):  # a whole sweep is refused for one bad point
        client.submit_sweep(["top20", {"scheme": "bad", "coverage": 0.0}])
    assert not any(j.scheme == "top20" for j in client.list_jobs())
    with pytest.raises(ValueError, match="topXX"):
        client.submit_scheme("bad", coverage="most")


def test_unknown_job_raises_not_found(aq, client):
    for call in (client.status, client.cancel, lambda j: list(client.stream_logs(j))):
        with pytest.raises(aq.NotFound) as e:
            call("no-such-job")
        assert e.value.code.name == "NOT_FOUND" and "no-such-job" in e.value.message
        assert isinstance(e.value, aq.AutoquantError)


def test_existing_scheme_raises_already_exists(aq, client, sweep):
    with pytest.raises(aq.AlreadyExists) as e:
        client.submit_scheme("top50", coverage=0.4)
    assert "overwrite" in e.value.message


def test_no_target_is_a_clear_error(aq, monkeypatch):
    monkeypatch.delenv(aq.ENV_SERVER, raising=False)
    with pytest.raises(ValueError, match="AUTOQUANT_SERVER"):
        aq.Client()


def test_unreachable_daemon_raises_unavailable(aq):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with aq.Client(f"127.0.0.1:{port}", timeout=5) as c, pytest.raises(aq.Unavailable):
        c.server_info()


# ----------------------------------------------------------------------------- token, cancel

@pytest.fixture(scope="module")
def token_daemon(tmp_path_factory, daemon_inputs, slow_calib):
    """A daemon that requires a token, with a calibration set slow enough to cancel a running job."""
    base, _ = daemon_inputs
    work = tmp_path_factory.mktemp("pyclient-token")
    (work / "token").write_text(TOKEN + "\n")
    d = Daemon(base, slow_calib, work / "models", "--token-file", work / "token", token=TOKEN).start()
    d.token_file = work / "token"
    yield d
    assert d.stop() == 0, d.stop_report()


def test_missing_or_wrong_token_raises_unauthenticated(aq, token_daemon, monkeypatch):
    monkeypatch.delenv(aq.ENV_TOKEN_FILE, raising=False)
    target = f"127.0.0.1:{token_daemon.port}"
    for token in (None, "wrong-token"):
        with aq.Client(target, token=token) as c, pytest.raises(aq.Unauthenticated) as e:
            c.server_info()
        assert e.value.code.name == "UNAUTHENTICATED" and e.value.message
    with aq.Client(target, token=TOKEN) as c:
        assert c.server_info().serving
    # The CLI's environment variables are the defaults.
    monkeypatch.setenv(aq.ENV_SERVER, target)
    monkeypatch.setenv(aq.ENV_TOKEN_FILE, str(token_daemon.token_file))
    with aq.Client() as c:
        assert c.target == target and c.server_info().serving


def test_cancel_a_queued_and_a_running_job(aq, token_daemon):
    with aq.Client(f"127.0.0.1:{token_daemon.port}", token=TOKEN) as c:
        running = c.submit_scheme("c-run", coverage=0.5)
        queued = c.submit_scheme("c-queued", coverage=0.5)
        assert queued.queue_position >= 1
        while c.status(running).state == aq.JobState.QUEUED:
            time.sleep(0.05)
        cancelled = c.cancel(queued)
        assert cancelled.state == aq.JobState.CANCELLED
        with pytest.raises(aq.JobFailed) as e:
            c.wait(queued, progress=False, check=True)
        assert e.value.job.state == aq.JobState.CANCELLED
        c.cancel(running.id)
        assert c.wait(running, timeout=600, progress=False).state == aq.JobState.CANCELLED
        with pytest.raises(aq.FailedPrecondition):
            c.cancel(running)
        with pytest.raises(aq.Timeout):  # the slow calibration set keeps it running well past 10 ms
            c.wait(c.submit_scheme("c-after", coverage=0.5), timeout=0.01, progress=False)


# ----------------------------------------------------------------------------- examples/

def test_eval_sweep_example_prints_a_row_per_scheme(aq, daemon, daemon_inputs):
    base, _ = daemon_inputs
    env = dict(__import__("os").environ, PYTHONPATH=str(pathlib.Path(aq.__file__).parents[1]))
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "eval_sweep.py"), "--server",
                           f"127.0.0.1:{daemon.port}", "--base", str(base), "--coverages", "top20,top100",
                           "--prefix", "ex-", "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    assert set(rows) == {"ex-top20", "ex-top100"}, proc.stdout
    assert 0 < int(rows["ex-top20"][3]) < int(rows["ex-top100"][3])  # FP8 Linears
    assert float(rows["ex-top20"][4]) > 0 and float(rows["ex-top100"][4]) > 0, proc.stdout

"""Evaluation (issue 10, docs/evaluation.md): autoquantd evaluates schemes against its resident base
model, and its numbers equal an independent computation: transformers' forward with the scheme's
FP8 Linears computed as vLLM deploys them (eval_reference.py)."""
import json
import pathlib
import subprocess
import sys

import grpc
import pytest
import torch
from safetensors.torch import load_file

import eval_reference as ref
from aq_paths import REPO

sys.path.insert(0, str(REPO / "bench" / "eval"))
import eval_bench  # noqa: E402  (the one merge of calibration-format files, shared with the GPU run)
from daemon_helpers import Daemon, stubs

GEN_TOKENS = 6


def merge_sets(parts, out: pathlib.Path):
    """Concatenates calibration-format files of one seq_len (some with images, some without)."""
    eval_bench.merge(out, parts)
    return out


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory, autoquant_bin, daemon_inputs):
    """4 samples with an image, then 2 text-only ones; seeds other than the calibration set's."""
    base, _ = daemon_inputs
    work = tmp_path_factory.mktemp("eval-set")
    parts = []
    for name, images, seed, n in (("img", 1, 11, 4), ("txt", 0, 12, 2)):
        p = work / f"{name}.safetensors"
        subprocess.run([str(autoquant_bin), "calib", "synth", "--model", str(base), "--out", str(p), "--samples",
                        str(n), "--seq-len", "96", "--images-per-sample", str(images), "--image-size", "56x56",
                        "--seed", str(seed)], check=True, capture_output=True)
        parts.append(p)
    return merge_sets(parts, work / "eval.safetensors")


@pytest.fixture(scope="module")
def eval_daemon(tmp_path_factory, daemon_inputs, eval_set):
    base, calib = daemon_inputs
    d = Daemon(base, calib, tmp_path_factory.mktemp("eval-daemon") / "models", "--eval-set", eval_set,
               "--eval-generate-tokens", GEN_TOKENS, "--eval-generate-prompts", 1).start()
    yield d
    assert d.stop() == 0, d.stop_report()


def submit_sweep(d, coverages, evaluate=True):
    pb = stubs()[0]
    req = pb.SubmitSweepRequest(points=[pb.SchemeSpec(scheme=f"top{int(c * 100)}", coverage=c, evaluate=evaluate)
                                        for c in coverages])
    resp = d.call("SubmitSweep", req)
    return [d.wait_job(j.id, timeout=600) for j in resp.jobs]


def evaluation(d, scheme) -> dict:
    return json.loads((d.root / scheme / "layer-sensitivity" / "evaluation.json").read_text())


@pytest.fixture(scope="module")
def swept(eval_daemon):
    pb = stubs()[0]
    jobs = submit_sweep(eval_daemon, [0.3, 1.0])
    for j in jobs:
        assert j.state == pb.JOB_STATE_SUCCEEDED, j.message
    return jobs


def test_numbers_equal_transformers_with_vllm_fp8(swept, eval_daemon, daemon_inputs, eval_set):
    base_dir, _ = daemon_inputs
    from transformers import Qwen2_5_VLForConditionalGeneration
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32).eval()
    skip = (base.config.image_token_id, base.config.video_token_id)
    data = load_file(eval_set)
    n = data["input_ids"].shape[0]
    base_numbers = [ref.sample_numbers(base, ref.sample_inputs(data, i), skip) for i in range(n)]
    for job in swept:
        ev = evaluation(eval_daemon, job.scheme)
        assert ev["format"] == "autoquant.evaluation.v1" and ev["scheme"] == job.scheme
        assert ev["execution"]["fp8_matmul"] == "emulated" and ev["scheme_info"]["quantized_linears"] > 0
        assert ev["eval_set"]["samples"] == n and ev["eval_set"]["samples_with_images"] == 4
        scheme = ref.deployed_fp8_model(base_dir, eval_daemon.root / job.scheme)
        nll_b = nll_q = tokens = 0.0
        mses, kls = [], []
        for i, row in enumerate(ev["per_sample"]):
            inputs = ref.sample_inputs(data, i)
            b_nll, b_tok, b_last = base_numbers[i]
            q_nll, q_tok, q_last = ref.sample_numbers(scheme, inputs, skip)
            mse, kl = ref.mse_kl(b_last, q_last)
            assert row["has_images"] == ("pixel_values" in inputs)
            assert row["tokens"] == b_tok == q_tok
            if not row["has_images"]:
                # Text only: the same computation to the last bit.
                assert (row["nll_base"], row["nll_scheme"]) == (b_nll, q_nll)
                assert (row["logit_mse_last_token"], row["logit_kl_last_token"]) == (mse, kl)
            else:
                # With an image, our vision tower and transformers' differ by float rounding (the base's
                # NLL by up to ~1e-5 relative), and FP8 rounding amplifies that: an input at an e4m3
                # rounding boundary lands on the neighbouring value. Stated tolerance: NLL 5e-5 (base) and
                # 5e-4 (scheme) relative; MSE and KL 25 % relative + 1e-6 absolute (their values here are
                # 1e-6 .. 1e-4).
                assert row["nll_base"] == pytest.approx(b_nll, rel=5e-5)
                assert row["nll_scheme"] == pytest.approx(q_nll, rel=5e-4)
                assert row["logit_mse_last_token"] == pytest.approx(mse, rel=0.25, abs=1e-6)
                assert row["logit_kl_last_token"] == pytest.approx(kl, rel=0.25, abs=1e-6)
            nll_b, nll_q, tokens = nll_b + b_nll, nll_q + q_nll, tokens + b_tok
            if row["has_images"]:
                mses.append(mse)
                kls.append(kl)
        s = ev["summary"]
        assert s["perplexity"]["base"] == pytest.approx(float(torch.tensor(nll_b / tokens).exp()), rel=5e-5)
        assert s["perplexity"]["scheme"] == pytest.approx(float(torch.tensor(nll_q / tokens).exp()), rel=5e-4)
        assert s["logit_mse_last_token"]["over"] == "samples_with_images"
        assert s["logit_mse_last_token"]["samples"] == 4
        assert s["logit_mse_last_token"]["mean"] == pytest.approx(sum(mses) / 4, rel=0.25, abs=1e-6)
        assert s["logit_kl_last_token"]["mean"] == pytest.approx(sum(kls) / 4, rel=0.25, abs=1e-6)
        # The summary is the mean of the per-sample numbers it lists, exactly.
        over = [r["logit_kl_last_token"] for r in ev["per_sample"] if r["has_images"]]
        assert s["logit_kl_last_token"]["mean"] == pytest.approx(sum(over) / len(over), rel=1e-12)
        lo, hi = s["logit_kl_last_token"]["ci95"]
        assert lo <= s["logit_kl_last_token"]["mean"] <= hi and hi > lo
        lo, hi = s["perplexity"]["delta_ci95"]
        assert lo <= s["perplexity"]["delta"] <= hi
        # The scheme really differs from the base, and more coverage costs more here.
        assert s["logit_kl_last_token"]["mean"] > 0
        # Sanity generation: the same greedy tokens as transformers' generate on each side.
        gen = ev["generation"]
        assert gen["max_new_tokens"] == GEN_TOKENS and gen["all_finite"] is True
        assert [p["has_images"] for p in gen["prompts"]] == [True, False]
        for p in gen["prompts"]:
            inputs = ref.sample_inputs(data, p["index"])
            for model, key in ((base, "base_tokens"), (scheme, "scheme_tokens")):
                out = model.generate(**inputs, do_sample=False, max_new_tokens=GEN_TOKENS, min_new_tokens=GEN_TOKENS)
                assert p[key] == out[0, inputs["input_ids"].shape[1]:].tolist(), (job.scheme, key, p["index"])
            common = 0
            while common < GEN_TOKENS and p["base_tokens"][common] == p["scheme_tokens"][common]:
                common += 1
            assert p["agreement"] == common
        assert gen["scheme_tokens_per_second"] > 0


def test_nvfp4_fp8_scheme_evaluates_as_vllm_emulates_it(eval_daemon, daemon_inputs, eval_set):
    """A NVFP4 + FP8 search evaluated in the daemon: its text-only samples' numbers equal transformers
    running the scheme's NVFP4 Linears as vLLM's emulation does (and its FP8 ones as vLLM's FP8 path), to
    the last bit; evaluation.json records the NVFP4 path."""
    pb = stubs()[0]
    req = pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme="mixed6", effective_bits=6.0, evaluate=True,
                                                    formats=[pb.QUANT_FORMAT_NVFP4, pb.QUANT_FORMAT_FP8]))
    job = eval_daemon.wait_job(eval_daemon.call("SubmitScheme", req).id, timeout=600)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.message
    ev = evaluation(eval_daemon, "mixed6")
    assert ev["execution"]["nvfp4_linears"] > 0 and ev["execution"]["nvfp4_matmul"] == "emulated"
    base_dir, _ = daemon_inputs
    from transformers import Qwen2_5_VLForConditionalGeneration
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32).eval()
    skip = (base.config.image_token_id, base.config.video_token_id)
    scheme = ref.deployed_fp8_model(base_dir, eval_daemon.root / "mixed6")
    data = load_file(eval_set)
    checked = 0
    for i, row in enumerate(ev["per_sample"]):
        if row["has_images"]:
            continue
        inputs = ref.sample_inputs(data, i)
        q_nll, q_tok, q_last = ref.sample_numbers(scheme, inputs, skip)
        b_nll, _, b_last = ref.sample_numbers(base, inputs, skip)
        assert row["tokens"] == q_tok
        assert row["nll_scheme"] == q_nll
        assert (row["logit_mse_last_token"], row["logit_kl_last_token"]) == ref.mse_kl(b_last, q_last)
        checked += 1
    assert checked == 2


def test_job_reports_eval_metrics_and_metrics_endpoint(swept, eval_daemon):
    by_scheme = {j.scheme: j for j in swept}
    for name, job in by_scheme.items():
        ev = evaluation(eval_daemon, name)
        m = job.result.metrics
        assert m["eval_logit_kl_last_token"] == pytest.approx(ev["summary"]["logit_kl_last_token"]["mean"])
        assert m["eval_perplexity_delta"] == pytest.approx(ev["summary"]["perplexity"]["delta"])
        assert job.spec.evaluate
    import urllib.request
    info = eval_daemon.call("GetServerInfo", stubs()[0].GetServerInfoRequest())
    assert info.eval_samples == 6 and info.eval_set_path and len(info.eval_set_fingerprint) == 64
    text = urllib.request.urlopen(f"http://{info.metrics_address}/metrics", timeout=10).read().decode()
    assert 'autoquant_scheme_eval{metric="logit_kl_last_token",scheme="top30"}' in text


def test_eval_of_an_existing_scheme(eval_daemon, autoquant_bin):
    pb = stubs()[0]
    [job] = submit_sweep(eval_daemon, [0.5], evaluate=False)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.message
    target = eval_daemon.root / "top50" / "layer-sensitivity" / "evaluation.json"
    assert not target.exists()
    proc = subprocess.run([str(autoquant_bin), "eval", "top50", "--wait", "--json", "--server",
                           f"127.0.0.1:{eval_daemon.port}"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    [ejob] = out["jobs"]
    assert ejob["kind"] == "JOB_KIND_EVALUATE" and ejob["state"] == "JOB_STATE_SUCCEEDED"
    assert target.exists()
    ev = json.loads(target.read_text())
    assert ejob["result"]["metrics"]["eval_logit_kl_last_token"] == pytest.approx(
        ev["summary"]["logit_kl_last_token"]["mean"])
    # The evaluation leaves the scheme intact: it still verifies.
    diff = subprocess.run([str(autoquant_bin), "diff", str(eval_daemon.root / "top50"), str(eval_daemon.root / "top100")],
                          capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout + diff.stderr


def test_eval_errors(eval_daemon, daemon):
    pb = stubs()[0]
    with pytest.raises(grpc.RpcError) as e:
        eval_daemon.call("EvaluateScheme", pb.EvaluateSchemeRequest(scheme="nope"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "submit it first" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        eval_daemon.call("EvaluateScheme", pb.EvaluateSchemeRequest(scheme="../x"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A link planted in the models root is not followed out of it.
    (eval_daemon.root / "planted").symlink_to(eval_daemon.root / "top30", target_is_directory=True)
    with pytest.raises(grpc.RpcError) as e:
        eval_daemon.call("EvaluateScheme", pb.EvaluateSchemeRequest(scheme="planted"))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "symbolic link" in e.value.details()
    # A daemon without --eval-set refuses evaluation, before queueing anything.
    for call, req in (("EvaluateScheme", pb.EvaluateSchemeRequest(scheme="top50")),
                      ("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme="e1", coverage=0.5,
                                                                                  evaluate=True)))):
        with pytest.raises(grpc.RpcError) as e:
            daemon.call(call, req)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "--eval-set" in e.value.details()


def test_eval_set_must_be_held_out(tmp_path, daemon_inputs):
    base, calib = daemon_inputs
    for eval_file in (calib, merge_sets([calib], tmp_path / "copy.safetensors")):
        d = Daemon(base, calib, tmp_path / "models", "--eval-set", eval_file)
        with pytest.raises(AssertionError):
            d.start(timeout=60)
        assert d.proc.returncode == 2, d.log()
        assert "held" in d.log() and "calibration" in d.log()


def test_report_over_jobs_rpc_cli_and_python_client(swept, eval_daemon, autoquant_bin, tmp_path, client_package):
    pb = stubs()[0]
    ids = [j.id for j in swept]
    rep = eval_daemon.call("GetReport", pb.GetReportRequest(job_ids=ids))
    data = json.loads(rep.report_json)
    assert data["format"] == "autoquant.report.v1"
    points = {p["scheme"]: p for p in data["points"]}
    assert set(points) == {"top30", "top100"}
    for name, p in points.items():
        ev = evaluation(eval_daemon, name)
        assert p["logit_kl_last_token"]["mean"] == ev["summary"]["logit_kl_last_token"]["mean"]
    assert "report.png" in rep.report_markdown and "top100" in rep.report_markdown
    # By scheme name, the same report.
    by_name = json.loads(eval_daemon.call("GetReport", pb.GetReportRequest(schemes=["top30", "top100"])).report_json)
    assert by_name["points"] == data["points"]
    # An unevaluated or unknown scheme, no input: clear errors.
    for req, code in ((pb.GetReportRequest(), grpc.StatusCode.INVALID_ARGUMENT),
                      (pb.GetReportRequest(schemes=["nope"]), grpc.StatusCode.NOT_FOUND),
                      (pb.GetReportRequest(job_ids=["j-0"]), grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(grpc.RpcError) as e:
            eval_daemon.call("GetReport", req)
        assert e.value.code() == code, e.value.details()
    # The CLI resolves job ids through the daemon and writes the same numbers.
    out = tmp_path / "report"
    proc = subprocess.run([str(autoquant_bin), "report", *ids, "--out", str(out), "--no-plot", "--server",
                           f"127.0.0.1:{eval_daemon.port}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((out / "report.json").read_text())["points"] == data["points"]
    # The Python client: evaluate() queues a job of kind evaluate; report() returns the data.
    autoquant_client, _ = client_package
    with autoquant_client.Client(f"127.0.0.1:{eval_daemon.port}") as c:
        job = c.wait(c.evaluate("top30"), timeout=300, progress=False, check=True)
        assert job.kind == autoquant_client.JobKind.EVALUATE
        assert job.result.metrics["eval_generation_agreement"] >= 0
        assert c.report(schemes=["top30", "top100"])["points"][0]["scheme"] == "top30"
        assert c.server_info().eval_samples == 6

"""The deployment files (docs/deployment.md), checked without a container engine or a cluster:
Prometheus config and alerts through promtool (with unit tests of every alert), the metric names the
dashboard and the alerts query against a real daemon's /metrics, autoquantd's flags from the
environment, `autoquant server health`, `docker-compose config`, the Kubernetes manifests against
the Kubernetes schemas, and the Dockerfile's shape."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import threading
import time
import urllib.request

import jsonschema
import kubernetes_validate
import pytest
import yaml

from aq_paths import BUILD_DIR, REPO
from daemon_helpers import TEST_DEVICE, Daemon, free_port, stubs

pb, _ = stubs()
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = REPO / "tests" / "deploy" / "prometheus" / "rules_test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "autoquant.json"
K8S = DEPLOY / "k8s"
# The oldest Kubernetes the manifests promise to fit (grpc probes are GA since 1.27) and the newest
# the validator knows.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def run(*args, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run([str(a) for a in args], **kw)


def need(tool):
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not installed: scripts/setup.sh installs it (APT_PACKAGES)", pytrace=False)
    return path


# --- Prometheus ------------------------------------------------------------------------------------

def test_prometheus_config_and_rules_pass_promtool(tmp_path):
    need("promtool")
    # promtool checks that the scrape's credentials file exists: the compose secret's path, here a stand-in.
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert "credentials_file: /run/secrets/autoquant_token" in config
    (tmp_path / "token").write_text("t\n")
    (tmp_path / "prometheus.yml").write_text(config.replace("/run/secrets/autoquant_token", str(tmp_path / "token")))
    shutil.copy(RULES, tmp_path / RULES.name)
    for args in (["check", "config", tmp_path / "prometheus.yml"], ["check", "rules", RULES],
                 ["test", "rules", RULES_TEST]):
        p = run("promtool", *args)
        assert p.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{p.stdout}{p.stderr}"


def test_every_alert_has_unit_tests_that_fire_and_stay_silent():
    """promtool passes a rule without tests, so the test file must name every alert both with an
    expected alert and with none."""
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    assert len(alerts) >= 6, alerts
    fires, silent = set(), set()
    for t in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for case in t["alert_rule_test"]:
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    assert alerts <= fires, f"alerts never expected to fire in {RULES_TEST.name}: {sorted(alerts - fires)}"
    assert alerts <= silent, f"alerts never expected to stay silent in {RULES_TEST.name}: {sorted(alerts - silent)}"


def test_a_broken_alert_fails_the_unit_tests(tmp_path):
    """The unit tests can fail: the queue alert without its progress clause fires for a daemon whose
    running job is progressing."""
    need("promtool")
    rules = RULES.read_text()
    clause = "unless on (job, instance) (sum by (job, instance) (changes(autoquant_job_progress_ratio[5m])) > 0)"
    assert clause in rules
    (tmp_path / "rules.yml").write_text(rules.replace(clause, ""))
    test = RULES_TEST.read_text().replace("../../../deploy/prometheus/rules.yml", str(tmp_path / "rules.yml"))
    (tmp_path / "rules_test.yml").write_text(test)
    p = run("promtool", "test", "rules", tmp_path / "rules_test.yml")
    assert p.returncode != 0 and 'instance="b"' in p.stdout + p.stderr, p.stdout + p.stderr


# --- A real daemon: metric names, flags from the environment, health --------------------------------

def parse_exposition(text):
    """Metric family names in a Prometheus text exposition: from # TYPE lines and from samples,
    with histogram and summary suffixes folded into their family."""
    families, types = set(), {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind
            families.add(name)
        elif line and not line.startswith("#"):
            families.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    folded = set()
    for name in families:
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[: -len(suffix)]) in ("histogram", "summary"):
                name = name[: -len(suffix)]
        folded.add(name)
    return folded, types


def queried_metrics(expr):
    """autoquant_* metric names in a PromQL expression, histogram suffixes kept (checked below)."""
    return set(re.findall(r"\bautoquant_[a-z0-9_]+", expr))


def dashboard_exprs():
    d = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in d["templating"]["list"] if v.get("definition")]
    return exprs


def rule_exprs():
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


@pytest.fixture(scope="module")
def env_daemon(tmp_path_factory, daemon_inputs, slow_calib):
    """A daemon whose --model, --batch-size come from AUTOQUANTD_* only, and whose --device and
    --listen are given both ways (the environment's values would fail to start); slow_calib so that
    a job runs long enough to be scraped mid-run."""
    base, _ = daemon_inputs
    d = Daemon(base, slow_calib, tmp_path_factory.mktemp("deploy") / "models",
               env={"AUTOQUANTD_MODEL": str(base), "AUTOQUANTD_BATCH_SIZE": "3",
                    "AUTOQUANTD_DEVICE": "cuda:7", "AUTOQUANTD_LISTEN": "0.0.0.0:1"})
    i = d.args.index("--model")
    del d.args[i:i + 2]
    d.start()
    yield d
    assert d.stop() == 0, d.stop_report()


def test_flags_come_from_the_environment_and_the_command_line_wins(env_daemon):
    info = env_daemon.call("GetServerInfo", pb.GetServerInfoRequest())
    assert pathlib.Path(info.model_path).resolve() == pathlib.Path(env_daemon.env["AUTOQUANTD_MODEL"]).resolve()
    assert info.batch_size == 3
    # The command line's --device and --listen won; the environment's cuda:7 / 0.0.0.0:1 were not used.
    assert info.device.startswith(env_daemon.args[env_daemon.args.index("--device") + 1]), info.device  # cuda -> cuda:0
    assert env_daemon.port != 1


def test_a_bad_value_from_the_environment_names_the_flag(daemon_inputs, tmp_path):
    base, calib = daemon_inputs
    p = run(BUILD_DIR / "bin" / "autoquantd", "--model", base, "--calib", calib, "--models-root", tmp_path / "m",
            env=dict(os.environ, AUTOQUANTD_BATCH_SIZE="0"), timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "--batch-size" in p.stderr and "0" in p.stderr, p.stderr
    assert not (tmp_path / "m").exists()


def test_help_names_an_environment_variable_for_every_flag():
    text = run(BUILD_DIR / "bin" / "autoquantd", "--help").stdout
    flags = re.findall(r"^\s+(?:-\w,)?--([a-z0-9-]+)", text, re.M)
    assert len(flags) > 20, text
    for flag in flags:
        if flag in ("help", "version", "config"):
            continue
        env = "AUTOQUANTD_" + flag.upper().replace("-", "_")
        assert re.search(rf"--{re.escape(flag)}\b[^\n]*\(Env:{env}\)", text), f"--{flag} has no (Env:{env}) in --help"


def test_dashboard_and_alerts_query_only_metrics_the_daemon_exports(env_daemon):
    """Scrapes during a job (the per-job progress and phase series exist only while one runs) and after
    it (the duration histograms appear with their first observation); the union must hold every
    autoquant_* name the dashboard and the rules use."""
    info = env_daemon.call("GetServerInfo", pb.GetServerInfoRequest())
    url = f"http://{info.metrics_address}/metrics"
    families, types = set(), {}

    def scrape():
        f, t = parse_exposition(urllib.request.urlopen(url, timeout=10).read().decode())
        families.update(f)
        types.update(t)

    job = env_daemon.call("SubmitScheme", pb.SubmitSchemeRequest(spec=pb.SchemeSpec(scheme="deploy-m", coverage=0.5)))
    deadline = time.time() + 300
    while time.time() < deadline:
        scrape()
        state = env_daemon.call("GetStatus", pb.GetStatusRequest(job_id=job.id)).state
        if state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED):
            break
        time.sleep(0.05)
    assert state == pb.JOB_STATE_SUCCEEDED, env_daemon.wait_job(job.id)
    scrape()
    assert "autoquant_job_progress_ratio" in families, "no scrape saw the running job's progress"
    # What the alerts rely on: the failed-jobs counter is there at 0 before any failure (else increase()
    # misses the first), and the device's total memory is known on a GPU (0 on the CPU: no alert).
    samples = dict(l.rsplit(" ", 1) for l in urllib.request.urlopen(url, timeout=10).read().decode().splitlines()
                   if l and not l.startswith("#"))
    assert float(samples['autoquant_jobs_finished_total{state="failed"}']) == 0
    total = float(samples["autoquant_device_memory_total_bytes"])
    assert total == 0 if TEST_DEVICE == "cpu" else total > 2**30, total

    used = {}
    for source, exprs in (("dashboard", dashboard_exprs()), ("rules", rule_exprs())):
        for e in exprs:
            for name in queried_metrics(e):
                used.setdefault(name, set()).add(source)
    assert len(used) >= 15, sorted(used)
    missing = []
    for name, sources in sorted(used.items()):
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
                family = name[: -len(suffix)]
        if family not in families:
            missing.append(f"{name} ({', '.join(sorted(sources))})")
    assert not missing, f"queried but not exported by autoquantd: {missing}"
    # `up` is Prometheus's own; the rules and dashboard use it only for the autoquantd job.
    for e in dashboard_exprs() + rule_exprs():
        for m in re.finditer(r"\bup\b", e):
            assert e[m.end():].startswith('{job="autoquantd"'), e


def test_server_health_command(env_daemon):
    aq = BUILD_DIR / "bin" / "autoquant"
    p = run(aq, "server", "health", "--server", f"127.0.0.1:{env_daemon.port}", timeout=30)
    assert (p.returncode, p.stdout.strip()) == (0, "SERVING"), p.stdout + p.stderr
    p = run(aq, "server", "health", "--server", f"127.0.0.1:{env_daemon.port}", "--service",
            "autoquant.v1.AutoQuant", "--json", timeout=30)
    assert p.returncode == 0 and json.loads(p.stdout)["status"] == "SERVING", p.stdout + p.stderr
    p = run(aq, "server", "health", "--server", f"127.0.0.1:{env_daemon.port}", "--service", "nope", timeout=30)
    assert p.returncode == 2 and "unknown" in p.stderr, p.stdout + p.stderr
    p = run(aq, "server", "health", "--server", f"127.0.0.1:{free_port()}", "--timeout", "2", timeout=30)
    assert p.returncode == 3, p.stdout + p.stderr


# --- Grafana ---------------------------------------------------------------------------------------

def test_dashboard_uses_the_provisioned_datasource_and_covers_the_panels():
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    d = json.loads(DASHBOARD.read_text())
    for p in d["panels"]:
        assert p["datasource"]["uid"] == uid, p["title"]
        assert all(t["datasource"]["uid"] == uid for t in p["targets"]), p["title"]
    exprs = " ".join(dashboard_exprs())
    for name in ("autoquant_queue_depth", "autoquant_job_progress_ratio", "autoquant_job_phase",
                 "autoquant_phase_duration_seconds", "autoquant_jobs{", "autoquant_export_bytes_total",
                 "autoquant_export_seconds", "autoquant_device_memory_bytes"):
        assert name in exprs, f"the dashboard has no panel on {name}"
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "autoquant.yml").read_text())
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounts


# --- docker-compose --------------------------------------------------------------------------------

def fresh_clone(dest: pathlib.Path):
    """The files a clone of this working tree has: tracked and new ones, not ignored ones (no
    deploy/secrets, no build/)."""
    names = run("git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for name in filter(None, names.split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_docker_compose_config_passes_on_a_fresh_clone(tmp_path):
    need("docker-compose")
    clone = fresh_clone(tmp_path / "clone")
    assert not (clone / "deploy" / "secrets").exists()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # none of the stack's variables set
    p = run("docker-compose", "--project-directory", clone, "-f", clone / "docker-compose.yml", "config",
            env=env, cwd=clone, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    cfg = yaml.safe_load(p.stdout)
    aq = cfg["services"]["autoquantd"]
    gpu = aq["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["count"] == 1, gpu
    assert aq["environment"]["AUTOQUANTD_TOKEN_FILE"] == "/run/secrets/autoquant_token"
    assert [s["source"] if isinstance(s, dict) else s for s in aq["secrets"]] == ["autoquant_token"]
    # Prometheus scrapes /metrics with the daemon's token, from the same secret.
    prom = cfg["services"]["prometheus"]
    assert [s["source"] if isinstance(s, dict) else s for s in prom["secrets"]] == ["autoquant_token"]
    assert any(str(v).startswith("models:/models") for v in aq["volumes"]), aq["volumes"]
    assert set(cfg["services"]) == {"autoquantd", "prometheus", "grafana"}
    # The config directories the stack mounts are in the clone.
    for v in cfg["services"]["prometheus"]["volumes"] + cfg["services"]["grafana"]["volumes"]:
        src = str(v).split(":")[0]
        if src.startswith("/"):
            assert pathlib.Path(src).exists(), src


def test_docker_compose_config_fails_on_a_broken_file(tmp_path):
    """The compose check can fail: an unknown service key is refused."""
    need("docker-compose")
    clone = fresh_clone(tmp_path / "clone")
    text = (clone / "docker-compose.yml").read_text().replace("    stop_grace_period: 2m", "    stop_grace_periood: 2m")
    (clone / "docker-compose.yml").write_text(text)
    p = run("docker-compose", "-f", clone / "docker-compose.yml", "config", cwd=clone,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)}, timeout=120)
    assert p.returncode != 0 and "stop_grace_periood" in p.stdout + p.stderr, p.stdout + p.stderr


# --- Kubernetes ------------------------------------------------------------------------------------

DURATION = r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
# The ServiceMonitor fields deploy/k8s uses, as the Prometheus Operator's monitoring.coreos.com/v1 API
# defines them (its CRD is not among the core schemas); anything else is refused so a typo shows.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                           "namespace": {"type": "string"},
                           "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {"type": "object", "additionalProperties": False, "properties": {
                    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "namespaceSelector": {"type": "object", "properties": {
                    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "properties": {
                        "port": {"type": "string"}, "path": {"type": "string"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": {"type": "string", "pattern": DURATION},
                        "scrapeTimeout": {"type": "string", "pattern": DURATION},
                        "authorization": {
                            "type": "object", "required": ["credentials"], "additionalProperties": False,
                            "properties": {
                                "type": {"type": "string"},
                                "credentials": {
                                    "type": "object", "required": ["name", "key"], "additionalProperties": False,
                                    "properties": {"name": {"type": "string"}, "key": {"type": "string"},
                                                   "optional": {"type": "boolean"}}}}}}}}}}},
}


def k8s_docs():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for name in kust["resources"]:
        docs += [(name, d) for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return kust, docs


def validate_k8s(doc):
    if doc["kind"] == "ServiceMonitor":
        jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def test_kubernetes_manifests_match_the_schemas():
    kust, docs = k8s_docs()
    listed = set(kust["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, f"kustomization.yaml's resources {sorted(listed)} vs files {sorted(on_disk)}"
    kinds = sorted(d["kind"] for _, d in docs)
    assert kinds == ["Namespace", "PersistentVolumeClaim", "Service", "Service", "ServiceMonitor", "StatefulSet"], kinds
    for name, doc in docs:
        try:
            validate_k8s(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as e:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {e}", pytrace=False)


@pytest.mark.parametrize("kind,path,bad", [
    ("StatefulSet", ["spec", "template", "spec", "containers", 0, "readinessProbe", "grpc", "prot"], 50051),
    ("Service", ["spec", "clusterIP"], 7),
    ("ServiceMonitor", ["spec", "endpoints", 0, "interval"], "15 seconds"),
])
def test_the_schema_check_refuses_a_broken_manifest(kind, path, bad):
    _, docs = k8s_docs()
    doc = next(d for _, d in docs if d["kind"] == kind)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate_k8s(doc)


def test_statefulset_runs_one_gpu_per_pod_with_grpc_probes_and_the_secrets():
    kust, docs = k8s_docs()
    sts = next(d for _, d in docs if d["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == ports["grpc"], probe
    assert c["args"] == ["--store", "$(AUTOQUANT_STORE_URL)"]
    env = {e["name"]: e for e in c["env"]}
    generated = {g["name"]: g for g in kust["secretGenerator"]}
    ref = env["AUTOQUANT_STORE_URL"]["valueFrom"]["secretKeyRef"]
    assert any(f.startswith(ref["key"] + "=") for f in generated[ref["name"]]["files"]), ref
    token_vol = next(v for v in pod["volumes"] if "secret" in v)
    mount = next(m for m in c["volumeMounts"] if m["name"] == token_vol["name"])
    token_key = generated[token_vol["secret"]["secretName"]]["files"][0].split("=")[0]
    assert env["AUTOQUANTD_TOKEN_FILE"]["value"] == f"{mount['mountPath']}/{token_key}"
    claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)["persistentVolumeClaim"]["claimName"]
    pvc = next(d for _, d in docs if d["kind"] == "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == claim and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The headless Service is the StatefulSet's, and the ServiceMonitor scrapes its metrics port.
    services = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Service"}
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    sm = next(d for _, d in docs if d["kind"] == "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= headless["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in headless["spec"]["ports"]}
    # It sends the daemon's token (/metrics needs it): the same Secret and key the pod mounts.
    cred = sm["spec"]["endpoints"][0]["authorization"]["credentials"]
    assert cred["name"] == token_vol["secret"]["secretName"] and cred["key"] == token_key, cred
    # jobLabel gives job="autoquantd", the job the rules' AutoquantDaemonDown matches.
    assert headless["metadata"]["labels"][sm["spec"]["jobLabel"]] == "autoquantd"
    # Every AUTOQUANTD_* name the manifests set is a real flag's.
    help_text = run(BUILD_DIR / "bin" / "autoquantd", "--help").stdout
    settings = [l.split("=")[0] for l in (K8S / "autoquantd.env").read_text().splitlines() if l.strip()]
    for name in settings + [n for n in env if n.startswith("AUTOQUANTD_")]:
        assert f"(Env:{name})" in help_text, name


# --- Dockerfile ------------------------------------------------------------------------------------

def dockerfile_instructions():
    """(instruction, arguments) pairs, continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def test_dockerfile_is_multi_stage_non_root_with_healthcheck_and_daemon_entrypoint():
    ins = dockerfile_instructions()
    args = dict(a.split("=", 1) for w, a in ins if w == "ARG" and "=" in a)
    froms = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], a) for w, a in ins if w == "FROM"]
    assert len(froms) >= 2, froms
    assert re.match(r"nvidia/cuda:13\.\d+\.\d+-cudnn-devel-ubuntu24\.04 AS build$", froms[0]), froms[0]
    final = froms[-1]
    assert re.match(r"nvidia/cuda:13\.\d+\.\d+-runtime-ubuntu24\.04\b", final), final
    assert final.split()[0].split(":")[1].split("-")[0] == froms[0].split()[0].split(":")[1].split("-")[0], \
        "builder and runtime must use the same CUDA version"
    last = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    runtime = ins[last:]
    users = [a for w, a in runtime if w == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:"), users
    health = [a for w, a in runtime if w == "HEALTHCHECK"]
    assert len(health) == 1 and "autoquant server health" in health[0], health
    entry = [a for w, a in runtime if w == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["autoquantd"], entry
    # Every AUTOQUANTD_* default the image sets is a flag's environment variable.
    help_text = run(BUILD_DIR / "bin" / "autoquantd", "--help").stdout
    for name in re.findall(r"\b(AUTOQUANTD_[A-Z0-9_]+)=", " ".join(a for w, a in runtime if w == "ENV")):
        assert f"(Env:{name})" in help_text, name
    # The build uses the torch pin of scripts/requirements.txt and builds for Hopper and Blackwell.
    build = " ".join(a for w, a in ins[:last])
    assert "grep -E '^torch==' /tmp/requirements.txt" in build and re.search(r"^torch==", (REPO / "scripts/requirements.txt").read_text(), re.M)
    assert 'TORCH_CUDA_ARCH_LIST="9.0;12.0"' in build and "CMAKE_CUDA_ARCHITECTURES=90;120" in build

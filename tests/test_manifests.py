"""manifests/: the kustomize base and the GKE/EKS overlays, rendered with the real `kubectl
kustomize` (from the cached npm layer), validated against the Kubernetes 1.33 schemas (strict)
and the Kueue v1beta1 schemas in tests/data/kueue/, and checked against the compiled pipelines
(GPU placement, Secret names, the teacher URL the presets use)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import importlib
import pytest
import yaml

from helpers import helm_tool
from helpers.k8s_schemas import load_docs, problems

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("base", "overlays/gke", "overlays/eks")
A100_LABELS = {
    "base": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    "overlays/gke": {"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"},
    "overlays/eks": {"node.kubernetes.io/instance-type": "p4de.24xlarge"},
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    tools = helm_tool.tools()
    env = helm_tool.helm_env(tmp_path_factory.mktemp("kube"))
    return {t: load_docs(helm_tool.run(tools.kubectl, "kustomize", str(ROOT / "manifests" / t), env=env).stdout)
            for t in TARGETS}


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ResourceFlavor", "ClusterQueue", "LocalQueue",
            "Deployment", "Service", "PersistentVolumeClaim"} <= kinds
    assert problems(docs) == []


def test_the_validators_reject_broken_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    import copy

    docs = copy.deepcopy(rendered["base"])
    find(docs, "ClusterQueue")[0]["spec"]["resourceGroups"][1]["flavors"][0]["resources"].reverse()
    find(docs, "LocalQueue")[0]["spec"]["clusterQueue"] = "missing"
    find(docs, "ResourceFlavor", "a100-80gb")[0]["spec"]["nodeTaints"][0]["effect"] = "NoPlease"
    find(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    found = "\n".join(problems(docs))
    for needle in ("same order", "clusterQueue missing is not defined", "NoPlease", "'resourcez' was unexpected"):
        assert needle in found


@pytest.mark.parametrize("target", TARGETS)
def test_a100_pool_labels_and_taints(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    flavor = find(docs, "ResourceFlavor", "a100-80gb")[0]["spec"]
    assert flavor["nodeLabels"] == A100_LABELS[target]
    teacher = find(docs, "Deployment", "teacher")[0]["spec"]["template"]["spec"]
    assert teacher["nodeSelector"] == A100_LABELS[target]
    taints = flavor["nodeTaints"]
    assert [t["key"] for t in taints] == ["nvidia.com/gpu"] and taints[0]["effect"] == "NoSchedule"
    tolerated = teacher["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" and t["effect"] == "NoSchedule"
               for t in tolerated)
    pvc = find(docs, "PersistentVolumeClaim", "guardsmith-model-cache")[0]["spec"]
    assert pvc.get("storageClassName") == {"base": None, "overlays/gke": "premium-rwo", "overlays/eks": "gp3"}[target]


def test_base_flavor_matches_the_compiled_gpu_placement(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kfp_support = importlib.import_module("guardsmith.kfp_support")
    flavor = find(rendered["base"], "ResourceFlavor", "a100-80gb")[0]["spec"]
    assert flavor["nodeLabels"] == kfp_support.DEFAULT_GPU_NODE_SELECTOR
    # the pipelines' default GPU tolerations let task pods onto every flavor's tainted nodes
    for taint in flavor["nodeTaints"]:
        assert any(t["key"] == taint["key"] and t["operator"] == "Exists" and t["effect"] == taint["effect"]
                   for t in kfp_support.DEFAULT_GPU_TOLERATIONS)


def test_kueue_quota_and_queues(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["base"]
    cq = find(docs, "ClusterQueue", "guardsmith")[0]["spec"]
    groups = {tuple(g["coveredResources"]): g["flavors"] for g in cq["resourceGroups"]}
    gpu = groups[("nvidia.com/gpu",)]
    assert [f["name"] for f in gpu] == ["a100-80gb"] and int(gpu[0]["resources"][0]["nominalQuota"]) > 0
    cpu_flavor = groups[("cpu", "memory")][0]["name"]
    assert not find(docs, "ResourceFlavor", cpu_flavor)[0].get("spec"), "CPU tasks must not get GPU node labels"
    lq = find(docs, "LocalQueue")[0]
    assert lq["metadata"]["namespace"] == "guardsmith" and lq["spec"]["clusterQueue"] == "guardsmith"
    ns = find(docs, "Namespace", "guardsmith")[0]["metadata"]["labels"]
    assert cq["namespaceSelector"]["matchLabels"].items() <= ns.items()
    for doc in docs:  # cluster-scoped Kueue objects carry no namespace
        if doc["kind"] in ("ClusterQueue", "ResourceFlavor", "Namespace"):
            assert "namespace" not in doc["metadata"]
        else:
            assert doc["metadata"]["namespace"] == "guardsmith", doc["metadata"]["name"]


def test_teacher_server(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["base"]
    dep = find(docs, "Deployment", "teacher")[0]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = c["args"]
    assert c["command"] == ["vllm", "serve"]
    tp = int(next(a.split("=", 1)[1] for a in args if a.startswith("--tensor-parallel-size=")))
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == tp == int(c["resources"]["requests"]["nvidia.com/gpu"])
    assert c["readinessProbe"]["httpGet"]["path"] == "/health" and c["startupProbe"]["failureThreshold"] >= 60
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert vols[mounts["/models"]]["persistentVolumeClaim"]["claimName"] == "guardsmith-model-cache"
    env = {e["name"]: e for e in c["env"]}
    assert env["HF_HOME"]["value"].startswith("/models/")
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "guardsmith-teacher", "key": "api_key",
                                                                "optional": True}
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    # the paper presets reach it as teacher.guardsmith.svc.cluster.local:8000
    svc = find(docs, "Service", "teacher")[0]
    assert svc["spec"]["ports"][0]["port"] == 8000 and svc["metadata"]["namespace"] == "guardsmith"
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    preset = yaml.safe_load((ROOT / "pipelines" / "guard_training" / "presets" / "paper-llama3.1-8b.yaml").read_text())
    assert preset["distill_teacher"].startswith("openai:http://teacher.guardsmith.svc.cluster.local:8000/v1")


def test_secret_names_match_the_compiled_pipelines(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kfp_support = importlib.import_module("guardsmith.kfp_support")
    c = find(rendered["base"], "Deployment", "teacher")[0]["spec"]["template"]["spec"]["containers"][0]
    refs = {e["valueFrom"]["secretKeyRef"]["name"]: e["valueFrom"]["secretKeyRef"]["key"]
            for e in c["env"] if "valueFrom" in e}
    assert refs == {kfp_support.SECRETS["teacher"].name: "api_key", kfp_support.SECRETS["hf"].name: "token"}
    assert "api_key" in kfp_support.SECRETS["teacher"].keys and "token" in kfp_support.SECRETS["hf"].keys


@pytest.mark.parametrize("target", TARGETS)
def test_pod_security(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    for dep in find(rendered[target], "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            assert sc["readOnlyRootFilesystem"] is True
            assert {"/tmp", "/cache"} <= {m["mountPath"] for m in c["volumeMounts"]}


def test_rbac_is_least_privilege(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["base"]
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    for role in find(docs, "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
            if "secrets" in rule["resources"]:
                assert rule.get("resourceNames"), "Secret access must name the Secrets"
    submitter = find(docs, "Role", "guardsmith-ci-submitter")[0]
    assert {g for r in submitter["rules"] for g in r["apiGroups"]} == {"pipelines.kubeflow.org"}
    bindings = {b["roleRef"]["name"]: b["subjects"] for b in find(docs, "RoleBinding")}
    sas = {sa["metadata"]["name"] for sa in find(docs, "ServiceAccount")}
    for role in find(docs, "Role"):
        assert all(s["name"] in sas for s in bindings[role["metadata"]["name"]])


def test_chart_serving_defaults_land_on_the_gpu_flavor(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The chart's vLLM model servers (serving.models.*) schedule onto the nodes of the base A100
    flavor: its node labels as nodeSelector, a toleration for each of its taints."""
    values = yaml.safe_load((ROOT / "helm" / "guardsmith" / "values.yaml").read_text())
    flavor = find(rendered["base"], "ResourceFlavor", "a100-80gb")[0]["spec"]
    for key, server in values["serving"]["models"].items():
        assert server["nodeSelector"] == flavor["nodeLabels"], key
        for taint in flavor["nodeTaints"]:
            assert any(t["key"] == taint["key"] and t["operator"] == "Exists" and t["effect"] == taint["effect"]
                       for t in server["tolerations"]), (key, taint)

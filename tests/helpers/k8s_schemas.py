"""Validate rendered Kubernetes documents: core kinds against the pinned Kubernetes JSON schemas
(kubernetes-validate, strict: unknown fields are errors), Kueue kinds against the schemas kept in
``tests/data/kueue/`` plus the CEL rules of Kueue's CRDs that a JSON schema cannot express.

:func:`problems` returns one line per problem (empty list: all valid), naming the document.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

K8S_VERSION = "1.33.0"
KUEUE_API = "kueue.x-k8s.io/v1beta1"
KUEUE_KINDS = {"ResourceFlavor": "resourceflavor.json", "ClusterQueue": "clusterqueue.json",
               "LocalQueue": "localqueue.json"}
KUEUE_DIR = Path(__file__).resolve().parents[1] / "data" / "kueue"


def load_docs(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of ``text``."""
    return [d for d in yaml.safe_load_all(text) if d]


def name_of(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{doc.get('kind')} {ns}{meta.get('name')}"


@lru_cache(maxsize=1)
def _kueue_validators() -> dict[str, Any]:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = {p.name: json.loads(p.read_text()) for p in KUEUE_DIR.glob("*.json")}
    registry = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas.values())
    out = {}
    for kind, file in KUEUE_KINDS.items():
        Draft202012Validator.check_schema(schemas[file])
        out[kind] = Draft202012Validator(schemas[file], registry=registry)
    return out


def _kueue_rules(doc: dict[str, Any]) -> list[str]:
    """The x-kubernetes-validations (CEL) rules of Kueue's v1beta1 CRDs that we rely on."""
    spec = doc.get("spec") or {}
    errs: list[str] = []
    if doc["kind"] == "ClusterQueue":
        seen_flavors: set[str] = set()
        seen_resources: set[str] = set()
        for i, group in enumerate(spec.get("resourceGroups") or []):
            covered = group.get("coveredResources") or []
            for res in covered:
                if res in seen_resources:
                    errs.append(f"resource {res} is in more than one resource group")
                seen_resources.add(res)
            for flavor in group.get("flavors") or []:
                names = [r.get("name") for r in flavor.get("resources") or []]
                if names != covered:
                    errs.append(f"resourceGroups[{i}] flavor {flavor.get('name')}: resources {names} must "
                                f"list the coveredResources {covered} in the same order")
                if flavor.get("name") in seen_flavors:
                    errs.append(f"flavor {flavor.get('name')} is in more than one resource group")
                seen_flavors.add(flavor.get("name"))
                if not spec.get("cohort") and any("borrowingLimit" in r or "lendingLimit" in r
                                                  for r in flavor.get("resources") or []):
                    errs.append("borrowingLimit/lendingLimit need a cohort")
    if doc["kind"] == "ResourceFlavor":
        for tol in spec.get("tolerations") or []:
            if "key" not in tol and tol.get("operator") != "Exists":
                errs.append("a toleration without key needs operator Exists")
            if tol.get("operator") == "Exists" and "value" in tol:
                errs.append("a toleration with operator Exists takes no value")
        if spec.get("topologyName") and not spec.get("nodeLabels"):
            errs.append("topologyName needs at least one nodeLabel")
    return errs


def problems(docs: Iterable[dict[str, Any]], *, version: str = K8S_VERSION) -> list[str]:
    """Validate every document; also check that Kueue references resolve within ``docs``."""
    import kubernetes_validate

    docs = list(docs)
    out: list[str] = []
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            out.append(f"not a Kubernetes object: {str(doc)[:120]}")
            continue
        label = name_of(doc)
        if doc["apiVersion"].startswith("kueue.x-k8s.io/"):
            if doc["apiVersion"] != KUEUE_API or doc["kind"] not in KUEUE_KINDS:
                out.append(f"{label}: no schema for {doc['apiVersion']} {doc['kind']} (expected {KUEUE_API})")
                continue
            for err in sorted(_kueue_validators()[doc["kind"]].iter_errors(doc), key=lambda e: list(e.path)):
                path = ".".join(str(p) for p in err.absolute_path) or "<root>"
                out.append(f"{label}: {path}: {err.message}")
            out += [f"{label}: {e}" for e in _kueue_rules(doc)]
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.absolute_path) or "<root>"
            out.append(f"{label}: {path}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError:
            out.append(f"{label}: no Kubernetes {version} schema for {doc['apiVersion']} {doc['kind']}")
    flavors = {d["metadata"]["name"] for d in docs if d.get("kind") == "ResourceFlavor"}
    queues = {d["metadata"]["name"] for d in docs if d.get("kind") == "ClusterQueue"}
    for doc in docs:
        if doc.get("kind") == "ClusterQueue":
            for group in (doc.get("spec") or {}).get("resourceGroups") or []:
                for flavor in group.get("flavors") or []:
                    if flavors and flavor.get("name") not in flavors:
                        out.append(f"{name_of(doc)}: flavor {flavor.get('name')} has no ResourceFlavor")
        if doc.get("kind") == "LocalQueue" and queues:
            if (doc.get("spec") or {}).get("clusterQueue") not in queues:
                out.append(f"{name_of(doc)}: clusterQueue {doc['spec'].get('clusterQueue')} is not defined")
    return out

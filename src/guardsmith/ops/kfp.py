"""The one KFP client: authentication, uploading a pipeline version named by content hash (reused
when unchanged), submitting a run, scheduling a recurring run and waiting for a run.

Every path to a cluster goes through here: ``guardsmith pipeline submit|schedule`` (the
installed pipelines), ``guardsmith deploy upload|submit --dir`` (the Helm chart's upload hook Job
and its CronJobs, over the ConfigMap of compiled packages) and the CI workflow. Parameters come
from :func:`guardsmith.ops.presets.submit_parameters`, which refuses local-only values and a
missing ``work_root`` before anything is uploaded.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from guardsmith.errors import GuardsmithError, redact
from guardsmith.ops import pipelines, presets

KFP_TOKEN_ENV = "GUARDSMITH_KFP_TOKEN"
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"


def kfp_client(host: str, namespace: str | None = None) -> Any:
    """A ``kfp.Client`` for ``host``, authenticated when credentials are around.

    ``$GUARDSMITH_KFP_TOKEN`` (a bearer token, e.g. from CI) wins; otherwise a projected
    service-account token at ``$KF_PIPELINES_SA_TOKEN_PATH`` (default
    ``/var/run/secrets/kubeflow/pipelines/token``: multi-user Kubeflow in-cluster) is used when
    it exists; otherwise no credentials (single-user KFP, port-forward).
    """
    import kfp

    token = os.environ.get(KFP_TOKEN_ENV, "").strip()
    token_path = os.environ.get(SA_TOKEN_ENV) or SA_TOKEN_PATH
    with reaching(host):
        if token:
            return kfp.Client(host=host, namespace=namespace, existing_token=token)
        if Path(token_path).is_file():
            from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

            return kfp.Client(host=host, namespace=namespace,
                              credentials=ServiceAccountTokenVolumeCredentials(token_path))
        return kfp.Client(host=host, namespace=namespace)


@contextlib.contextmanager
def reaching(host: str) -> Iterator[None]:
    """Turn a connection failure or an API error of the KFP client into one line naming the host."""
    import urllib3

    try:
        with warnings.catch_warnings():  # kfp.Client's notice about server versions is not the user's concern
            warnings.filterwarnings("ignore", category=FutureWarning, module="kfp")
            yield
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise GuardsmithError(f"cannot reach the KFP API at {redact(host)}: {_short(reason)}; check --host "
                              "(e.g. kubectl port-forward svc/ml-pipeline-ui 8080:80 -n kubeflow)") from None
    except Exception as exc:  # kfp_server_api.ApiException: status and reason from the server
        status = getattr(exc, "status", None)
        if status is None:
            raise
        raise GuardsmithError(f"the KFP API at {redact(host)} answered {status} {getattr(exc, 'reason', '')}: "
                              f"{_short(getattr(exc, 'body', '') or '')}") from None


def _short(value: object) -> str:
    """The first line of ``value``, at most 200 characters."""
    text = str(value).strip().splitlines()
    return (text[0] if text else "")[:200]


def pipeline_display_name(name: str) -> str:
    """KFP pipeline name of pipeline ``name``."""
    return f"guardsmith-{name.replace('_', '-')}"


def package_version_name(name: str, package: str | Path) -> str:
    """Version name of a compiled package: the pipeline name plus 12 hex of its sha256."""
    return f"{pipeline_display_name(name)}-{hashlib.sha256(Path(package).read_bytes()).hexdigest()[:12]}"


def upload_version(client: Any, name: str, package: str | Path, namespace: str | None = None) -> dict[str, Any]:
    """Upload ``package`` as a version of pipeline ``name`` unless a version with its content hash exists."""
    package = Path(package)
    display = pipeline_display_name(name)
    version_name = package_version_name(name, package)
    pipeline_id = client.get_pipeline_id(display)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(package), pipeline_name=display, namespace=namespace).pipeline_id
    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": version_name}]})
    found = client.list_pipeline_versions(pipeline_id, filter=flt).pipeline_versions or []
    created = not found
    version_id = (client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id).pipeline_version_id
                  if created else found[0].pipeline_version_id)
    return {"pipeline": display, "pipeline_id": pipeline_id, "version": version_name,
            "version_id": version_id, "created": created}


def upload_all(client: Any, root: str | Path, namespace: str | None = None,
               names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Upload every (or the named) compiled package under ``root``; returns one record per pipeline."""
    packages = pipelines.discover_packages(root)
    unknown = sorted(set(names) - set(packages))
    if unknown:
        raise GuardsmithError(f"no package for {', '.join(unknown)} under {root}; found {', '.join(packages)}")
    return [upload_version(client, n, p, namespace) for n, p in packages.items() if not names or n in names]


def _prepare(client: Any, name: str, preset: str, root: str | Path | None, overrides: Mapping[str, Any] | None,
             namespace: str | None, experiment: str, now: float | None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Checked parameters, the uploaded (or reused) version and the experiment id of a run to start."""
    params = presets.submit_parameters(name, preset, overrides, root=root, now=now)
    uploaded = upload_version(client, name, pipelines.package_path(name, root), namespace)
    return params, uploaded, client.create_experiment(experiment, namespace=namespace).experiment_id


def submit(client: Any, name: str, preset: str, *, root: str | Path | None = None,
           overrides: Mapping[str, Any] | None = None, namespace: str | None = None,
           experiment: str = "guardsmith", cache: bool = True, run_name: str | None = None,
           now: float | None = None) -> dict[str, Any]:
    """Upload (or reuse) pipeline ``name`` and start a run with ``preset``'s parameters.

    ``root`` None submits the installed pipeline and presets, a folder ``root`` the compiled
    package and presets under it (the chart's CronJob). Returns the run, pipeline and version ids,
    the version name and the run's ``work_root``.
    """
    params, uploaded, experiment_id = _prepare(client, name, preset, root, overrides, namespace, experiment, now)
    run = client.run_pipeline(experiment_id=experiment_id,
                              job_name=run_name or f"{name}-{preset}-{presets.timestamp(now)}",
                              params=params, pipeline_id=uploaded["pipeline_id"],
                              version_id=uploaded["version_id"], enable_caching=cache)
    return {"run_id": run.run_id, "pipeline_id": uploaded["pipeline_id"], "version_id": uploaded["version_id"],
            "version": uploaded["version"], "work_root": params["work_root"]}


def schedule(client: Any, name: str, preset: str, cron: str, *, root: str | Path | None = None,
             overrides: Mapping[str, Any] | None = None, namespace: str | None = None,
             experiment: str = "guardsmith", max_concurrency: int = 1, cache: bool = False) -> dict[str, Any]:
    """Create a recurring run (KFP cron: six fields, seconds first) of ``name`` with ``preset``."""
    params, uploaded, experiment_id = _prepare(client, name, preset, root, overrides, namespace, experiment, None)
    job = client.create_recurring_run(experiment_id=experiment_id, job_name=f"{name}-{preset}-schedule",
                                      cron_expression=cron, max_concurrency=max_concurrency, no_catchup=True,
                                      params=params, pipeline_id=uploaded["pipeline_id"],
                                      version_id=uploaded["version_id"], enable_caching=cache)
    return {"recurring_run_id": job.recurring_run_id, "pipeline_id": uploaded["pipeline_id"],
            "version_id": uploaded["version_id"]}


def run_url(host: str, run_id: str) -> str:
    """The KFP UI page of a run."""
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def wait_for_run(client: Any, run_id: str, timeout_s: int) -> str:
    """Block until the run ends; returns its state, raises unless it succeeded."""
    done = client.wait_for_run_completion(run_id, timeout=timeout_s)
    state = str(getattr(done, "state", done))
    if state != "SUCCEEDED":
        raise GuardsmithError(f"run {run_id} ended in state {state}")
    return state

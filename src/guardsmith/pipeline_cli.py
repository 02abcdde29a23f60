"""`guardsmith pipeline ...`: compile, run locally, submit and schedule the Kubeflow pipelines.

Mounted on the main CLI with ``app.add_typer(pipeline_app, name="pipeline")``.

- ``compile``: writes every committed YAML (``components/<stage>/component.yaml`` and
  ``pipelines/<name>/pipeline.yaml``). Images (``GUARDSMITH_IMAGE_CPU`` / ``_TRAIN`` / ``_INFER``),
  the Kueue queue (``GUARDSMITH_KUEUE_QUEUE``) and Secret names (``GUARDSMITH_SECRET_<NAME>``)
  are read from the environment at compile time.
- ``run NAME --local --preset P``: the real pipeline graph through ``kfp.local`` (subprocess
  runner, this interpreter), with objects in a throw-away SeaweedFS S3 (or ``--store DIR``).
- ``submit`` / ``schedule``: upload (or reuse) the compiled package on a KFP server and start a
  run / a recurring run with a preset's parameters.

Local-only preset values: ``tiny:causal-lm`` (a tiny random-weight model built for the run; also
inside ``name=tiny:causal-lm`` or a scorer spec such as ``guard:tiny:causal-lm``),
``tiny:reward-model`` / ``tiny:classifier`` (tiny random-weight sequence-classification models
with one / two outputs, for ``reward_model:`` and ``classifier:`` scorer specs) and
``offline:teacher`` (the offline template teacher/judge, served on 127.0.0.1 for the run).
``submit`` refuses presets that still contain them.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

import typer

from guardsmith.errors import GuardsmithError
from guardsmith.standins.local_s3 import patched_env

PIPELINES = ("guard_training", "evaluation")
COMPONENTS: dict[str, str] = {
    "data_import": "data_import", "subset": "subset", "distill": "distill", "filter": "filter_traces",
    "sft": "sft", "mine": "mine", "continual": "continual", "evaluate": "evaluate", "report": "report",
}
"""Component folder -> the component function compiled to its component.yaml."""
BOUNDARY_PIPELINES = ("boundary_guidance", "guard_then_boundary")
BOUNDARY_COMPONENTS: dict[str, str] = {"boundary": "boundary", "boundary_eval": "boundary_eval"}
"""Boundary Guidance (method B) pipelines and components, kept apart from PIPELINES / COMPONENTS
(the guard recipe's, which tests/test_kfp_*.py enumerate with its assumptions)."""
ALL_PIPELINES = PIPELINES + BOUNDARY_PIPELINES
ALL_COMPONENTS: dict[str, str] = {**COMPONENTS, **BOUNDARY_COMPONENTS}

TINY_MODEL = "tiny:causal-lm"
OFFLINE_TEACHER = "offline:teacher"
TINY_REWARD_MODEL = "tiny:reward-model"
TINY_CLASSIFIER = "tiny:classifier"
TINY_MODELS: dict[str, str] = {TINY_MODEL: "tiny-causal-lm", TINY_REWARD_MODEL: "tiny-reward-model",
                               TINY_CLASSIFIER: "tiny-classifier"}
"""Local-only model markers -> folder name of the tiny model built for a local run."""
LOCAL_MARKERS = (*TINY_MODELS, OFFLINE_TEACHER)
LOCAL_BUCKET = "guardsmith"
COMPILE_ENV_PREFIXES = ("GUARDSMITH_IMAGE_", "GUARDSMITH_SECRET_", "GUARDSMITH_KUEUE_QUEUE")

pipeline_app = typer.Typer(help="Compile, run locally, submit and schedule the Kubeflow pipelines.",
                           no_args_is_help=True)


# --------------------------------------------------------------------------- loading and compiling

def components_dir() -> Path:
    """The ``components/`` source folder (installed as ``guardsmith.components``)."""
    import guardsmith.components as pkg

    return Path(pkg.__file__).parent


def pipelines_dir() -> Path:
    """The ``pipelines/`` source folder (installed as ``guardsmith.pipelines``)."""
    import guardsmith.pipelines as pkg

    return Path(pkg.__file__).parent


def _check_name(name: str) -> None:
    if name not in ALL_PIPELINES:
        raise GuardsmithError(f"unknown pipeline {name!r}; choose one of {', '.join(ALL_PIPELINES)}")


def _forget_modules() -> None:
    """Drop imported component and pipeline modules so the next import re-reads the environment."""
    for mod in [m for m in sys.modules if m.startswith(("guardsmith.components.", "guardsmith.pipelines."))]:
        del sys.modules[mod]


def load_pipeline(name: str, fresh: bool = False) -> Any:
    """The ``@dsl.pipeline`` object of pipeline ``name`` (re-built from the environment when ``fresh``)."""
    _check_name(name)
    if fresh:
        _forget_modules()
    return importlib.import_module(f"guardsmith.pipelines.{name}.pipeline").PIPELINE


def load_component(stage: str, fresh: bool = False) -> Any:
    """The component compiled to ``components/<stage>/component.yaml``."""
    if stage not in ALL_COMPONENTS:
        raise GuardsmithError(f"unknown component {stage!r}; choose one of {', '.join(ALL_COMPONENTS)}")
    if fresh:
        _forget_modules()
    return getattr(importlib.import_module(f"guardsmith.components.{stage}.component"), ALL_COMPONENTS[stage])


def compile_all(out_root: Path | None = None, env: Mapping[str, str | None] | None = None, *,
                components: Iterable[str] | None = None, pipelines: Iterable[str] | None = None) -> list[Path]:
    """Compile components and pipelines; returns the written YAML paths.

    ``out_root`` None writes the committed files in place; otherwise the same layout
    (``components/<stage>/component.yaml``, ``pipelines/<name>/pipeline.yaml``) under it.
    ``env`` overrides compile-time settings (images, Kueue queue, Secret names) for this call.
    ``components`` / ``pipelines`` choose what is compiled (default: everything,
    :data:`ALL_COMPONENTS` and :data:`ALL_PIPELINES`).
    """
    written: list[Path] = []
    with patched_env(env or {}):
        _forget_modules()
        try:
            for stage in (ALL_COMPONENTS if components is None else components):
                folder = components_dir() / stage if out_root is None else Path(out_root) / "components" / stage
                folder.mkdir(parents=True, exist_ok=True)
                _compile(load_component(stage), folder / "component.yaml")
                written.append(folder / "component.yaml")
            for name in (ALL_PIPELINES if pipelines is None else pipelines):
                folder = pipelines_dir() / name if out_root is None else Path(out_root) / "pipelines" / name
                folder.mkdir(parents=True, exist_ok=True)
                _compile(load_pipeline(name), folder / "pipeline.yaml")
                written.append(folder / "pipeline.yaml")
        finally:
            _forget_modules()
    return written


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DEFAULT_COMMENT = re.compile(r"^(#\s+\w+: \w+ \[Default: )(.*)\]$")


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def stable_header(text: str) -> str:
    """Sort dict keys in the ``# Inputs`` header KFP writes (its order varies between processes)."""
    import ast

    lines = []
    for line in text.splitlines(keepends=True):
        match = _DEFAULT_COMMENT.match(line.rstrip("\n"))
        if match and "{" in match.group(2):
            line = f"{match.group(1)}{_sorted(ast.literal_eval(match.group(2)))!r}]\n"
        lines.append(line)
    return "".join(lines)


def _compile(obj: Any, path: Path) -> None:
    from kfp import compiler

    compiler.Compiler().compile(obj, str(path))
    path.write_text(stable_header(path.read_text()))


def package_path(name: str) -> Path:
    """The committed compiled package of pipeline ``name``."""
    _check_name(name)
    path = pipelines_dir() / name / "pipeline.yaml"
    if not path.exists():
        raise GuardsmithError(f"{path} is missing; run `guardsmith pipeline compile`")
    return path


# --------------------------------------------------------------------------- presets

def presets(name: str) -> list[str]:
    """Preset names of pipeline ``name`` (files ``pipelines/<name>/presets/<preset>.yaml``)."""
    _check_name(name)
    return sorted(p.stem for p in (pipelines_dir() / name / "presets").glob("*.yaml"))


def load_preset(name: str, preset: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A preset's pipeline parameters with ``overrides`` applied; unknown parameters are an error."""
    import yaml

    path = pipelines_dir() / name / "presets" / f"{preset}.yaml"
    if not path.exists():
        raise GuardsmithError(f"unknown preset {preset!r} for {name}; presets: {', '.join(presets(name)) or 'none'}")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise GuardsmithError(f"{path} must be a mapping of parameter: value")
    values.update(overrides or {})
    known = set(pipeline_parameters(name))
    unknown = sorted(set(values) - known)
    if unknown:
        raise GuardsmithError(f"{name}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return values


def pipeline_parameters(name: str) -> dict[str, Any]:
    """Parameter name -> default (``...`` when required) of pipeline ``name``, from its function."""
    import inspect

    fn = load_pipeline(name).pipeline_func
    return {p.name: (... if p.default is inspect.Parameter.empty else p.default)
            for p in inspect.signature(fn).parameters.values()}


def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_walk(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, fn) for k, v in value.items()}
    return value


def _uses(values: Mapping[str, Any], marker: str) -> bool:
    return marker in json.dumps(values)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML (numbers, booleans, lists, mappings)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise GuardsmithError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(raw) if raw else ""
    return out


# --------------------------------------------------------------------------- local runs

def run_local(name: str, preset: str, store: str | Path | None = None,
              overrides: Mapping[str, Any] | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """Run pipeline ``name`` with ``preset`` through ``kfp.local`` and return where the report is.

    Objects go to a SeaweedFS S3 started and stopped for the run, or under ``store`` (a local
    folder) when given. ``out`` (default: ``store``, else ``demo-out``) receives the KFP local
    pipeline root, the tiny models and a copy of the report. Returns ``report_md`` /
    ``report_html`` (local copies), ``report_uri``, ``work_root``, ``pipeline_root`` and ``seconds``.
    """
    params = load_preset(name, preset, overrides)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out or store or "demo-out").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        if store is None:
            from guardsmith.standins.local_s3 import LocalS3

            s3 = stack.enter_context(LocalS3(bucket=LOCAL_BUCKET))
            stack.enter_context(patched_env(s3.env()))
            root = f"s3://{LOCAL_BUCKET}"
        else:
            root = str(Path(store).resolve())
            Path(root).mkdir(parents=True, exist_ok=True)
        stack.enter_context(patched_env({"GUARDSMITH_CACHE": os.environ.get("GUARDSMITH_CACHE") or str(out_dir / "cache")}))
        params.setdefault("work_root", f"{root}/runs/{name}-{stamp}")
        params = _resolve_local_markers(params, root, out_dir, stack)
        result = _run_graph(name, params, out_dir / "kfp-root")
        report = _mirror_report(result, out_dir / "report" / f"{name}-{stamp}")
    report.update(work_root=params["work_root"], pipeline_root=str(out_dir / "kfp-root"),
                  seconds=round(time.monotonic() - start, 1))
    return report


def _build_tiny(marker: str, local: Path) -> None:
    from guardsmith.standins.tiny import build_tiny_causal_lm, build_tiny_classifier

    if marker == TINY_MODEL:
        build_tiny_causal_lm(local)
    else:
        build_tiny_classifier(local, num_labels=1 if marker == TINY_REWARD_MODEL else 2)


def _resolve_local_markers(params: dict[str, Any], root: str, out_dir: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Replace the ``tiny:*`` markers and ``offline:teacher`` by built model URIs and a served endpoint."""
    repl: dict[str, str] = {}
    for marker, folder in TINY_MODELS.items():
        if not _uses(params, marker):
            continue
        from guardsmith import storage

        local = out_dir / "models" / folder
        if not (local / "config.json").exists():
            _build_tiny(marker, local)
        uri = str(local)
        if root.startswith("s3://"):
            uri = f"{root}/models/{folder}"
            storage.upload_dir(str(local), uri)
        repl[marker] = uri
    if _uses(params, OFFLINE_TEACHER):
        from guardsmith.standins.offline import offline_spec, serve_offline

        server = serve_offline(seed=0)
        stack.callback(server.stop)
        repl[OFFLINE_TEACHER] = offline_spec(server)

    def sub(text: str) -> str:
        for marker, value in repl.items():
            text = text.replace(marker, value)
        return text

    return _walk(params, sub)


def _run_graph(name: str, params: dict[str, Any], pipeline_root: Path) -> Any:
    """Execute the compiled-from-source pipeline graph locally; a failed task is a GuardsmithError."""
    import warnings

    from kfp import local

    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               raise_on_error=True)
    pipeline = load_pipeline(name)
    with warnings.catch_warnings():
        # expected locally: pod settings are no-ops and the task images are not used
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
        try:
            return pipeline(**params)
        except RuntimeError as exc:
            first = _ANSI.sub("", str(exc).splitlines()[0])
            raise GuardsmithError(f"local {name} run failed: {first}") from None


def _mirror_report(run: Any, target: Path) -> dict[str, Any]:
    """Copy the report folder (pipeline output: report.md URI) next to the local outputs."""
    from guardsmith import storage

    report_uri = str(run.output)
    folder = report_uri.rsplit("/", 1)[0]
    target.mkdir(parents=True, exist_ok=True)
    for entry in storage.list_dir(folder):
        base = str(entry).rstrip("/").rsplit("/", 1)[-1]
        if base.endswith((".md", ".html", ".png", ".json")):
            (target / base).write_bytes(storage.read_bytes(storage.join(folder, base)))
    return {"report_md": str(target / "report.md"), "report_html": str(target / "report.html"),
            "report_uri": report_uri}


# --------------------------------------------------------------------------- cluster runs

def _client(host: str, namespace: str | None) -> Any:
    from guardsmith.deploy import kfp_client

    return kfp_client(host, namespace)  # token from GUARDSMITH_KFP_TOKEN or the projected SA token


def _check_remote_params(params: Mapping[str, Any]) -> None:
    for marker in LOCAL_MARKERS:
        if _uses(params, marker):
            raise GuardsmithError(f"{marker!r} exists only in local runs; set a model/endpoint URI with --set")
    if "work_root" not in params:
        raise GuardsmithError("work_root is not set: pass --set work_root=s3://bucket/prefix")


def upload_package(client: Any, name: str, namespace: str | None = None) -> tuple[str, str]:
    """Upload the compiled package (or reuse the same content); returns (pipeline_id, version_id)."""
    path = package_path(name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    display = f"guardsmith-{name.replace('_', '-')}"
    version_name = f"{display}-{digest}"
    pipeline_id = client.get_pipeline_id(display)
    if pipeline_id is None:
        created = client.upload_pipeline(str(path), pipeline_name=display, namespace=namespace)
        pipeline_id = created.pipeline_id
    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": version_name}]})
    found = client.list_pipeline_versions(pipeline_id, filter=flt).pipeline_versions or []
    if found:
        return pipeline_id, found[0].pipeline_version_id
    version = client.upload_pipeline_version(str(path), version_name, pipeline_id=pipeline_id)
    return pipeline_id, version.pipeline_version_id


def submit(name: str, host: str, preset: str, *, namespace: str | None = None, experiment: str = "guardsmith",
           overrides: Mapping[str, Any] | None = None, wait: bool = False, timeout_s: int = 86400,
           cache: bool = True) -> dict[str, Any]:
    """Start a run of ``name`` with ``preset`` on the KFP server at ``host``; returns ids (and the state when waiting)."""
    params = load_preset(name, preset, overrides)
    _check_remote_params(params)
    client = _client(host, namespace)
    pipeline_id, version_id = upload_package(client, name, namespace)
    exp = client.create_experiment(experiment, namespace=namespace)
    run = client.run_pipeline(experiment_id=exp.experiment_id, job_name=f"{name}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}",
                              params=params, pipeline_id=pipeline_id, version_id=version_id, enable_caching=cache)
    result = {"run_id": run.run_id, "pipeline_id": pipeline_id, "version_id": version_id,
              "url": f"{host.rstrip('/')}/#/runs/details/{run.run_id}"}
    if wait:
        done = client.wait_for_run_completion(run.run_id, timeout=timeout_s)
        result["state"] = str(done.state)
        if result["state"] != "SUCCEEDED":
            raise GuardsmithError(f"run {run.run_id} ended in state {result['state']}")
    return result


def schedule(name: str, host: str, preset: str, cron: str, *, namespace: str | None = None,
             experiment: str = "guardsmith", overrides: Mapping[str, Any] | None = None,
             max_concurrency: int = 1, cache: bool = False) -> dict[str, Any]:
    """Create a recurring run (KFP cron: six fields, seconds first) of ``name`` with ``preset``."""
    params = load_preset(name, preset, overrides)
    _check_remote_params(params)
    client = _client(host, namespace)
    pipeline_id, version_id = upload_package(client, name, namespace)
    exp = client.create_experiment(experiment, namespace=namespace)
    job = client.create_recurring_run(experiment_id=exp.experiment_id, job_name=f"{name}-{preset}-schedule",
                                      cron_expression=cron, max_concurrency=max_concurrency, no_catchup=True,
                                      params=params, pipeline_id=pipeline_id, version_id=version_id,
                                      enable_caching=cache)
    return {"recurring_run_id": job.recurring_run_id, "pipeline_id": pipeline_id, "version_id": version_id}


# --------------------------------------------------------------------------- commands

def _echo_dict(values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        typer.echo(f"{key}: {value}")


@pipeline_app.command("compile")
def compile_cmd(
    out: Optional[Path] = typer.Option(None, "--out", help="Write the YAML under this folder instead of in place."),
    kueue_queue: Optional[str] = typer.Option(None, "--kueue-queue", help="Kueue LocalQueue for every task pod (default: $GUARDSMITH_KUEUE_QUEUE; empty = no label)."),
) -> None:
    """Compile every component and pipeline to YAML (images and Kueue queue from the environment)."""
    env = {} if kueue_queue is None else {"GUARDSMITH_KUEUE_QUEUE": kueue_queue}
    for path in compile_all(out, env):
        typer.echo(f"wrote {path}")


@pipeline_app.command("run")
def run_cmd(
    name: str = typer.Argument(..., help=f"Pipeline: {', '.join(ALL_PIPELINES)}."),
    preset: str = typer.Option(..., "--preset", help="Parameter set (pipelines/<name>/presets/<preset>.yaml)."),
    local_run: bool = typer.Option(False, "--local", help="Run with kfp.local in this environment (required; cluster runs use `submit`)."),
    store: Optional[Path] = typer.Option(None, "--store", help="Keep objects in this folder instead of a throw-away local S3."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the KFP local root and report copy (default: --store, else demo-out)."),
    set_: list[str] = typer.Option([], "--set", help="Override a parameter: key=value (YAML value); repeatable."),
) -> None:
    """Run a pipeline locally (real graph, tiny models, bundled sample) and print where the report is."""
    if not local_run:
        raise GuardsmithError("only --local runs are supported here; use `guardsmith pipeline submit` for a cluster")
    _echo_dict(run_local(name, preset, store, parse_overrides(set_), out))


@pipeline_app.command("submit")
def submit_cmd(
    name: str = typer.Argument(..., help=f"Pipeline: {', '.join(ALL_PIPELINES)}."),
    host: str = typer.Option(..., "--host", help="KFP API endpoint, e.g. http://localhost:8080."),
    preset: str = typer.Option(..., "--preset", help="Parameter set (pipelines/<name>/presets/<preset>.yaml)."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Kubeflow profile namespace (multi-user installs)."),
    experiment: str = typer.Option("guardsmith", "--experiment", help="Experiment name (created when missing)."),
    set_: list[str] = typer.Option([], "--set", help="Override a parameter: key=value (YAML value); repeatable."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the run to finish; exit 1 unless it succeeded."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Let KFP reuse cached results of deterministic tasks."),
    gate: list[str] = typer.Option([], "--gate", help='Quality gate on the run\'s metrics, "METRIC OP VALUE" (e.g. "harmful_f1_avg>=baseline-0.005"); needs --wait; repeatable.'),
    gate_model: Optional[str] = typer.Option(None, "--gate-model", help="Model of the metrics table to gate (default: continual for guard_training)."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Baseline metrics (table URI or JSON/YAML file) for 'baseline' gate values."),
    baseline_model: Optional[str] = typer.Option(None, "--baseline-model", help="Model of the baseline table."),
) -> None:
    """Upload (or reuse) the compiled pipeline and start a run with a preset's parameters."""
    from guardsmith import deploy

    gates = deploy.parse_gates(gate) if gate else []
    if gates and not wait:
        raise GuardsmithError("--gate needs --wait")
    overrides = parse_overrides(set_)
    _echo_dict(submit(name, host, preset, namespace=namespace, experiment=experiment,
                      overrides=overrides, wait=wait, cache=cache))
    if gates:
        deploy.enforce_gates(name, load_preset(name, preset, overrides)["work_root"], gates,
                           baseline=baseline, model=gate_model, baseline_model=baseline_model)


@pipeline_app.command("schedule")
def schedule_cmd(
    name: str = typer.Argument(..., help=f"Pipeline: {', '.join(ALL_PIPELINES)}."),
    cron: str = typer.Option(..., "--cron", help="KFP cron expression, six fields with seconds first, e.g. '0 0 3 * * 1'."),
    host: str = typer.Option(..., "--host", help="KFP API endpoint."),
    preset: str = typer.Option(..., "--preset", help="Parameter set."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Kubeflow profile namespace."),
    experiment: str = typer.Option("guardsmith", "--experiment", help="Experiment name (created when missing)."),
    set_: list[str] = typer.Option([], "--set", help="Override a parameter: key=value; repeatable."),
    max_concurrency: int = typer.Option(1, "--max-concurrency", help="Runs of this schedule allowed at once."),
    cache: bool = typer.Option(False, "--cache/--no-cache", help="Reuse cached task results across scheduled runs."),
) -> None:
    """Create a recurring run of a pipeline with a preset's parameters."""
    _echo_dict(schedule(name, host, preset, cron, namespace=namespace, experiment=experiment,
                        overrides=parse_overrides(set_), max_concurrency=max_concurrency, cache=cache))

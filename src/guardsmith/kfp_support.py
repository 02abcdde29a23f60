"""Shared Kubeflow Pipelines machinery for ``components/`` and ``pipelines/``.

- :func:`component` - the ``dsl.component`` wrapper every guardsmith component uses: no run-time
  ``pip install`` (``install_kfp_package=False``; the images carry guardsmith and kfp) and the
  base image of the component's kind (``cpu``, ``train``, ``infer``), read from
  ``GUARDSMITH_IMAGE_CPU`` / ``_TRAIN`` / ``_INFER`` when a component module is imported, i.e.
  at compile time.
- :func:`run_stage` / :func:`outputs` - what a component body calls: build the stage config from
  the component's parameters, run the stage, hand back the named outputs.
- :func:`configure` with :data:`PROFILES` - pod settings per task: CPU/memory requests, GPUs
  (accelerator type + limit, node selector, tolerations, memory-backed ``/dev/shm``), Kubernetes
  Secrets as environment variables (never parameters), retries for network-bound tasks, caching,
  and a Kueue queue label (``GUARDSMITH_KUEUE_QUEUE`` at compile time; omitted when empty).
- helpers used by the thin shells: data import (public sources or the bundled sample), table
  split/merge for the distillation fan-out, a preflight check, and KFP metrics/report artifacts.

Parameter conventions (KFP has no null parameter values in local runs): for an optional stage
field, an empty string (text fields) or ``0`` (integer fields) passed by a component means
"unset" (``None``); see :func:`stage_values`.
"""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.ops.images import component_image
from guardsmith.stages import stage_module
from guardsmith.vocabulary import HARM_LABELS, HARM_TASKS

# --------------------------------------------------------------------------- images

def image(kind: str) -> str:
    """Base image of a component kind (see :func:`guardsmith.ops.images.component_image`)."""
    return component_image(kind)


def component(kind: str) -> Callable[[Callable[..., Any]], Any]:
    """Decorator: a lightweight Python component on the image of ``kind``, installing nothing."""
    from kfp import dsl

    return dsl.component(base_image=image(kind), install_kfp_package=False)


# --------------------------------------------------------------------------- running stages

def _optional_inner(tp: Any) -> Any | None:
    """``X`` for ``X | None`` / ``Optional[X]``, else None."""
    args = typing.get_args(tp)
    if type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return None


def stage_values(config_cls: type, params: Mapping[str, Any]) -> dict[str, Any]:
    """Config values from component parameters: unset markers ("" / 0 on optional fields) -> None.

    Parameters that are not config fields (KFP artifacts, for example) are dropped.
    """
    hints = typing.get_type_hints(config_cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config_cls):
        if f.name not in params:
            continue
        value = params[f.name]
        inner = _optional_inner(hints[f.name])
        if inner is not None and ((inner is str and value == "")
                                  or (inner is int and value == 0 and not isinstance(value, bool))):
            value = None
        values[f.name] = value
    return values


def run_stage(stage: str, params: Mapping[str, Any]) -> Any:
    """Build ``stage``'s config from a component's parameters, run the stage, print and return its result."""
    from guardsmith.config import build_config

    module = stage_module(stage)
    cfg = build_config(module.CONFIG, stage_values(module.CONFIG, params), source=f"component {stage}")
    result = module.run(cfg)
    print(result, flush=True)
    return result


def outputs(result: Any, *names: str) -> tuple[Any, ...]:
    """The named attributes of a stage result, in order: a component's NamedTuple return value."""
    values = []
    for name in names:
        value = getattr(result, name)
        values.append("" if value is None else value)
    return tuple(values)


# --------------------------------------------------------------------------- distillation fan-out

REASONING_ROWS = ("difficult", "pool")
"""What the guard pipelines distill for continual training: the mined difficult set or the whole pool."""


def pick_reasoning_rows(which: str, difficult: str, pool: str) -> str:
    """The URI of the rows to distill for continual training (``which``: difficult or pool)."""
    if which not in REASONING_ROWS:
        raise GuardsmithError(f"--continual-reasoning-rows: expected one of {', '.join(REASONING_ROWS)}, got {which!r}")
    return difficult if which == "difficult" else pool


def split_table(input_uri: str, output_prefix: str, parts: int, schema_name: str = "interactions") -> list[str]:
    """Cut a table into ``parts`` contiguous tables ``<prefix>/part-00000``...; returns their URIs.

    Streams twice (count, then write); parts differ in size by at most one row and an empty part
    is never written (fewer rows than parts gives fewer parts).
    """
    from guardsmith import storage

    if parts < 1:
        raise GuardsmithError(f"parts must be at least 1, got {parts}")
    total = sum(b.num_rows for b in storage.iter_batches(input_uri, schema_name=schema_name))
    if total == 0:
        raise GuardsmithError(f"{input_uri} has no rows to split")
    parts = min(parts, total)
    sizes = [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
    uris = [storage.join(output_prefix, f"part-{i:05d}") for i in range(parts)]
    batches = storage.iter_batches(input_uri, schema_name=schema_name)
    pending = None
    for uri, size in zip(uris, sizes):
        with storage.TableWriter(uri, schema_name) as writer:
            while size > 0:
                if pending is None or pending.num_rows == 0:
                    pending = next(batches)
                take = min(size, pending.num_rows)
                writer.write(pending.slice(0, take))
                pending = pending.slice(take)
                size -= take
    return uris


def merge_tables(input_uris: Sequence[str], output_uri: str, schema_name: str, *,
                 failed_suffix: str | None = None) -> int:
    """Stream the tables ``input_uris`` (in URI order) into one committed table; returns its row count.

    The merged table records its work identity (the parts by content), so a retried merge of the
    same parts is a no-op and a merge of other parts into a finished output is refused. With
    ``failed_suffix`` (distill: ``.failed``) each part's failed-rows table ``<part><suffix>`` is
    merged the same way into ``<output><suffix>``.
    """
    from guardsmith import storage
    from guardsmith.identity import WorkIdentity, decide, input_id

    parts = sorted(input_uris)
    identity = WorkIdentity("merge", {"schema": schema_name},
                            {f"part-{i:05d}": input_id(uri) for i, uri in enumerate(parts)})
    if decide(output_uri, identity) == "skip":
        return sum(b.num_rows for b in storage.iter_batches(output_uri))
    rows = 0
    with storage.TableWriter(output_uri, schema_name, identity=identity) as writer:
        for uri in parts:
            for batch in storage.iter_batches(uri, schema_name=schema_name):
                writer.write(batch)
                rows += batch.num_rows
    failed = [uri + failed_suffix for uri in parts if failed_suffix and storage.is_committed(uri + failed_suffix)]
    if failed:
        merge_tables(failed, output_uri + failed_suffix, "failed")
    return rows


_NAMED = re.compile(r"^[\w.\-]+(\[[^\]]*\])?=(.+)$")


def preflight(work_root: str, inputs: Sequence[str] = ()) -> str:
    """Fail fast before any expensive task: the work root is writable and every input URI exists.

    ``inputs`` may hold 'hf', 'sample', backend specs and 'name=URI' pairs; only object-storage
    and local URIs are checked. Returns a one-line summary.
    """
    from guardsmith import storage

    probe = storage.join(work_root, "_preflight.json")
    storage.write_json_atomic(probe, {"ok": True})
    storage.remove(probe)
    checked = 0
    for item in inputs:
        for raw in str(item).split(","):
            named = _NAMED.match(raw.strip())
            uri = (named.group(2) if named else raw).strip()
            if uri:
                from guardsmith.specs import split_format

                uri = split_format(uri)[1]  # a guard model given as FORMAT:URI
            if not uri or uri in ("hf", "sample") or uri.startswith(("hf://", "openai:", "http")):
                continue
            uri = uri.split(":", 1)[1] if uri.startswith(("vllm:", "transformers:")) else uri
            if not storage.exists(uri):
                raise GuardsmithError(f"preflight: input {uri} does not exist")
            checked += 1
    return f"preflight ok: {work_root} writable, {checked} input(s) found"


# --------------------------------------------------------------------------- KFP artifacts

def log_evaluation(result: Any, metrics: Any, confusion: Any, markdown: Any | None = None) -> None:
    """Fill KFP artifacts from an ``evaluate`` result.

    ``metrics`` (Metrics): ``f1/<model>/<mode>/<benchmark>/<task>`` means; ``confusion``
    (ClassificationMetrics): labels against predictions pooled over the harm tasks of the last
    model listed (the one a pipeline ships: guard_training lists sft, then continual; an unusable
    output counts as ``no answer``); ``markdown``: the evaluation report.
    """
    from guardsmith import storage

    for row in getattr(result, "summary", []) or []:
        key = "/".join(str(row.get(k)) for k in ("model", "mode", "benchmark", "task") if row.get(k) is not None)
        if row.get("f1_mean") is not None:
            metrics.log_metric(f"f1/{key}", float(row["f1_mean"]))
    categories = [*HARM_LABELS, "no answer"]
    matrices: dict[str, list[list[int]]] = {}  # per model, in the order evaluate wrote them (the listed order)
    for batch in storage.iter_batches(result.predictions):
        cols = batch.to_pydict()
        for i in range(batch.num_rows):
            if cols["task"][i] not in HARM_TASKS or cols["label"][i] not in categories[:2]:
                continue
            matrix = matrices.setdefault(cols["model"][i], [[0] * 3 for _ in categories])
            pred = cols["prediction"][i]
            matrix[categories.index(cols["label"][i])][categories.index(pred if pred in categories[:2] else "no answer")] += 1
    shipped = list(matrices)[-1] if matrices else ""
    confusion.log_confusion_matrix(categories, matrices.get(shipped, [[0] * 3 for _ in categories]))
    confusion.metadata["model"] = shipped
    if markdown is not None:
        copy_to_artifact(result.report_md, markdown)


def log_training(result: Any, metrics: Any) -> None:
    """Fill a Metrics artifact from an ``sft``, ``continual`` or ``boundary`` result: ``global_step``,
    ``examples``, ``train_loss`` (mean over the run), and from the model's training summary
    ``final_loss`` (last logged loss), ``train_tokens`` (when counted) and ``final_reward`` (GRPO);
    for ``boundary`` also the first and last reward-log entries (``first/reward_mean``,
    ``last/safety_mean``, ``last/filter_rate``, ...)."""
    from guardsmith.training import TrainingSummary

    metrics.log_metric("global_step", float(result.global_step))
    metrics.log_metric("examples", float(result.examples))
    if result.train_loss is not None:
        metrics.log_metric("train_loss", float(result.train_loss))
    summary = TrainingSummary.find(result.output)
    if summary is not None:
        if summary.loss_history:
            metrics.log_metric("final_loss", float(summary.loss_history[-1][1]))
        if summary.reward_history:
            metrics.log_metric("final_reward", float(summary.reward_history[-1][1]))
        if summary.train_tokens:
            metrics.log_metric("train_tokens", float(summary.train_tokens))
    for name in ("first", "last"):
        entry = getattr(result, name, None)
        for key in ("reward_mean", "utility_mean", "safety_mean", "margin_mean", "filter_rate"):
            if entry and entry.get(key) is not None:
                metrics.log_metric(f"{name}/{key}", float(entry[key]))


def log_boundary_evaluation(result: Any, scores: Any, markdown: Any | None = None, html: Any | None = None) -> None:
    """Fill KFP artifacts from a ``boundary_eval`` result.

    ``scores`` (Metrics): ``<metric>/<system>`` over all prompt sets pooled (helpfulness and
    harmfulness means, harmful, filter, false-positive, false-negative and near-boundary rates);
    ``markdown`` / ``html``: the report (the HTML embeds the Pareto plot).
    """
    keys = ("helpfulness_mean", "harmfulness_mean", "harmful_rate", "filter_rate", "fp_rate", "fn_rate",
            "near_boundary_rate")
    for row in getattr(result, "summary", []) or []:
        for key in keys:
            if row.get(key) is not None:
                scores.log_metric(f"{key}/{row['system']}", float(row[key]))
    if markdown is not None:
        copy_to_artifact(result.report_md, markdown)
    if html is not None:
        copy_to_artifact(result.report_html, html)


def scorer_locations(specs: Sequence[str]) -> list[str]:
    """Model URIs inside scorer specs (``guard:URI``, ``classifier:URI?...``, ``reward_model:URI``), for
    :func:`preflight`; rules, endpoints and empty specs give nothing, any other text is kept as is."""
    out = []
    for spec in specs:
        kind, sep, rest = str(spec).strip().partition(":")
        if not kind or kind == "rule" or (sep and kind == "openai"):
            continue
        out.append(rest.split("?", 1)[0] if sep and kind in ("guard", "classifier", "reward_model") else str(spec).strip())
    return out


def check_rewards(rewards: Sequence[str]) -> None:
    """Fail fast on a reward-variant list a Boundary Guidance pipeline cannot train: empty, an unknown
    name (see ``guardsmith.rewards.REWARDS``) or a repeated one (each variant names its generator)."""
    from guardsmith.rewards import REWARDS

    if not rewards:
        raise GuardsmithError("rewards is empty: name at least one reward variant")
    unknown = [r for r in rewards if r not in REWARDS]
    if unknown:
        raise GuardsmithError(f"unknown reward(s) {', '.join(unknown)}; choose from {', '.join(REWARDS)}")
    repeated = sorted({r for r in rewards if list(rewards).count(r) > 1})
    if repeated:
        raise GuardsmithError(f"reward(s) {', '.join(repeated)} given twice")


def copy_to_artifact(uri: str, artifact: Any) -> None:
    """Copy a small object (a report) to a KFP artifact's local path, for the KFP UI."""
    from pathlib import Path

    from guardsmith import storage

    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(storage.read_bytes(uri))


# --------------------------------------------------------------------------- pod settings

SHM_VOLUME = "dshm"
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPU_NODE_SELECTOR = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
DEFAULT_GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
KUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_ENV = "GUARDSMITH_KUEUE_QUEUE"


@dataclass(frozen=True)
class SecretRef:
    """A Kubernetes Secret whose keys become environment variables of a task."""

    name: str
    keys: dict[str, str]
    optional: bool = False


SECRETS: dict[str, SecretRef] = {
    "s3": SecretRef("guardsmith-s3", {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                                      "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}),
    "s3_endpoint": SecretRef("guardsmith-s3", {"GUARDSMITH_S3_ENDPOINT": "GUARDSMITH_S3_ENDPOINT"}, optional=True),
    "teacher": SecretRef("guardsmith-teacher", {"api_key": "GUARDSMITH_TEACHER_API_KEY"}, optional=True),
    "judge": SecretRef("guardsmith-judge", {"api_key": "GUARDSMITH_JUDGE_API_KEY"}, optional=True),
    "hf": SecretRef("guardsmith-hf", {"token": "HF_TOKEN"}, optional=True),
}
"""Secret names and key -> variable maps; override a name with ``GUARDSMITH_SECRET_<NAME>``
(e.g. ``GUARDSMITH_SECRET_S3=my-s3-creds``) at compile time."""

TEACHER_KEY_ENV = SECRETS["teacher"].keys["api_key"]
JUDGE_KEY_ENV = SECRETS["judge"].keys["api_key"]


@dataclass(frozen=True)
class Profile:
    """Pod settings of one kind of task."""

    cpu: str
    memory: str
    gpu: bool = False
    shm: str | None = None
    network: bool = False
    cache: bool = True
    secrets: tuple[str, ...] = ("s3", "s3_endpoint")


_S3 = ("s3", "s3_endpoint")
PROFILES: dict[str, Profile] = {
    "preflight": Profile("500m", "1Gi", cache=False, network=True),
    "plan": Profile("500m", "1Gi"),
    "data_import": Profile("2", "8Gi", network=True, secrets=(*_S3, "hf")),
    "subset": Profile("1", "4Gi"),
    "distill_split": Profile("1", "4Gi"),
    "distill": Profile("2", "8Gi", network=True, cache=False, secrets=(*_S3, "teacher")),
    "distill_merge": Profile("1", "4Gi", cache=False),
    "filter": Profile("2", "8Gi", network=True, cache=False, secrets=(*_S3, "teacher", "judge")),
    "sft": Profile("8", "96Gi", gpu=True, shm="32Gi", cache=False, secrets=(*_S3, "hf")),
    "continual": Profile("8", "96Gi", gpu=True, shm="32Gi", cache=False, secrets=(*_S3, "hf")),
    "mine": Profile("8", "64Gi", gpu=True, shm="16Gi", cache=False),
    "evaluate": Profile("8", "64Gi", gpu=True, shm="16Gi", cache=False),
    "report": Profile("1", "2Gi", cache=False),
    "boundary": Profile("8", "96Gi", gpu=True, shm="32Gi", cache=False, secrets=(*_S3, "hf")),
    "boundary_eval": Profile("8", "64Gi", gpu=True, shm="16Gi", cache=False, secrets=(*_S3, "judge", "hf")),
}
"""Task kind -> pod settings. Caching is on only where a task is deterministic *and* every input
is a parameter or the output of a cached task: outputs are addressed by URI, not by content, so a
cached task downstream of a re-run one could otherwise reuse results of stale inputs."""


@dataclass
class GpuPool:
    """Where GPU tasks run; pipeline parameters (or constants) for accelerator type and placement."""

    accelerator: Any = GPU_RESOURCE
    node_selector: Any = field(default_factory=lambda: dict(DEFAULT_GPU_NODE_SELECTOR))
    tolerations: Any = field(default_factory=lambda: list(DEFAULT_GPU_TOLERATIONS))


def secret_name(key: str) -> str:
    """The Kubernetes Secret name for ``key`` in :data:`SECRETS` (compile-time override honoured)."""
    return os.environ.get(f"GUARDSMITH_SECRET_{key.split('_')[0].upper()}") or SECRETS[key].name


def configure(task: Any, kind: str, *, gpus: Any = None, pool: GpuPool | None = None,
              display_name: str | None = None) -> Any:
    """Apply the pod settings of ``kind`` (:data:`PROFILES`) to a pipeline task and return it.

    GPU kinds need ``gpus`` (count, int or pipeline parameter) and get ``pool``'s accelerator
    type, node selector and tolerations plus a memory-backed ``/dev/shm``.
    """
    from kfp import kubernetes
    from kfp.dsl.pipeline_channel import PipelineChannel

    profile = PROFILES[kind]
    task.set_cpu_request(profile.cpu).set_memory_request(profile.memory)
    if display_name:
        task.set_display_name(display_name)
    if profile.gpu:
        pool = pool or GpuPool()
        task.set_accelerator_type(pool.accelerator).set_accelerator_limit(1 if gpus is None else gpus)
        # KFP tracks a channel used only as the accelerator type nowhere; inside a ParallelFor the
        # loop would then not receive it. Register it like kfp-kubernetes does for its settings.
        task.register_pipeline_channels([v for v in (pool.accelerator,) if isinstance(v, PipelineChannel)])
        kubernetes.add_node_selector_json(task, pool.node_selector)
        kubernetes.add_toleration_json(task, pool.tolerations)
    if profile.shm:
        kubernetes.empty_dir_mount(task, volume_name=SHM_VOLUME, mount_path="/dev/shm",
                                   medium="Memory", size_limit=profile.shm)
    for key in profile.secrets:
        ref = SECRETS[key]
        kubernetes.use_secret_as_env(task, secret_name(key), dict(ref.keys), optional=ref.optional)
    if profile.network:
        task.set_retry(num_retries=3, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="600s")
    task.set_caching_options(profile.cache)
    queue = os.environ.get(KUEUE_ENV, "").strip()
    if queue:
        kubernetes.add_pod_label(task, KUEUE_LABEL, queue)
    return task


# --------------------------------------------------------------------------- pipeline parameter descriptions

_PARAMETER_ROW = re.compile(r"^\|\s*`([A-Za-z_][A-Za-z0-9_]*)`\s*\|[^|\n]*\|\s*(.+?)\s*\|\s*$", re.MULTILINE)


def readme_parameters(readme: str | os.PathLike) -> dict[str, str]:
    """Parameter name -> meaning, from the rows ``| `name` | default | meaning |`` of a pipeline
    README (the parameter tables users read); backticks dropped, ``\\|`` read as ``|``."""
    from pathlib import Path

    text = Path(readme).read_text(encoding="utf-8").replace("\\|", "\x00")
    return {m.group(1): m.group(2).replace("`", "").replace("\x00", "|") for m in _PARAMETER_ROW.finditer(text)}


def parameter_docs(*readmes: str | os.PathLike) -> Callable[[Callable], Callable]:
    """Decorator (under ``@dsl.pipeline``): give the pipeline function an ``Args:`` docstring that
    describes every parameter from the README parameter tables (the first README listing a name
    wins); the KFP compiler turns it into the parameter descriptions the KFP UI shows. A parameter
    no README describes is an error."""
    import inspect

    def decorate(func: Callable) -> Callable:
        rows: dict[str, str] = {}
        for readme in readmes:
            rows = {**readme_parameters(readme), **rows}
        names = list(inspect.signature(func).parameters)
        missing = [n for n in names if n not in rows]
        if missing:
            raise GuardsmithError(f"{func.__name__}: parameter(s) {', '.join(missing)} missing from the README "
                                  f"parameter table ({', '.join(str(r) for r in readmes)})")
        summary = (func.__doc__ or func.__name__).strip().splitlines()[0]
        func.__doc__ = "\n".join([summary, "", "Args:", *(f"    {n}: {' '.join(rows[n].split())}" for n in names)]) + "\n"
        return func

    return decorate

"""Presets: a pipeline's named parameter sets, ``--set key=value`` overrides, ``{timestamp}`` /
``{date}`` expansion, and the one check that a parameter set may go to a cluster.

A preset is ``<folder>/<pipeline>/presets/<preset>.yaml`` or the path of a user's own YAML file
(``--preset ./my-preset.yaml``); ``--config FILE`` (:func:`load_config`) lays a YAML file of
parameters over the preset, before ``--set``; the folder is the installed
``guardsmith.pipelines`` (``guardsmith pipeline ...``) or a ``--dir`` of compiled packages such as
the Helm chart's ConfigMap (``guardsmith deploy submit --dir``). Both are read by
:func:`load_preset`.

Local-only values (:data:`LOCAL_MARKERS`): ``tiny:causal-lm`` (a tiny random-weight model built
for the run; also inside ``name=tiny:causal-lm`` or a scorer spec such as
``guard:tiny:causal-lm``), ``tiny:reward-model`` / ``tiny:classifier`` (tiny random-weight
sequence-classification models with one / two outputs, for ``reward_model:`` and ``classifier:``
scorer specs) and ``offline:teacher`` (the offline template teacher/judge, served on 127.0.0.1
for the run). :func:`check_submittable` refuses a parameter set holding any of them, or one
without ``work_root``, before anything is uploaded or submitted.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.ops import pipelines

TINY_MODEL = "tiny:causal-lm"
TINY_REWARD_MODEL = "tiny:reward-model"
TINY_CLASSIFIER = "tiny:classifier"
OFFLINE_TEACHER = "offline:teacher"
TINY_MODELS: dict[str, str] = {TINY_MODEL: "tiny-causal-lm", TINY_REWARD_MODEL: "tiny-reward-model",
                               TINY_CLASSIFIER: "tiny-classifier"}
"""Local-only model markers -> folder name of the tiny model built for a local run."""
LOCAL_MARKERS = (*TINY_MODELS, OFFLINE_TEACHER)
"""Every value that exists only in local runs (``guardsmith pipeline run --local``)."""


def walk(value: Any, fn: Callable[[str], str]) -> Any:
    """Apply ``fn`` to every string inside ``value`` (lists and mappings recursively)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [walk(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: walk(v, fn) for k, v in value.items()}
    return value


def uses(values: Any, marker: str) -> bool:
    """Does ``marker`` occur anywhere in ``values`` (also inside a longer string)?"""
    return marker in json.dumps(values)


def timestamp(now: float | None = None) -> str:
    """``YYYYmmdd-HHMMSS`` (UTC) of ``now`` (default: the current time)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))


def expand_placeholders(value: Any, now: float | None = None) -> Any:
    """Replace ``{timestamp}`` (YYYYmmdd-HHMMSS, UTC) and ``{date}`` (YYYYmmdd) in strings, recursively."""
    stamp = timestamp(now)
    return walk(value, lambda text: text.replace("{timestamp}", stamp).replace("{date}", stamp[:8]))


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``--set key=value`` pairs; values are read as YAML (numbers, booleans, lists, mappings)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise GuardsmithError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(raw) if raw else ""
    return out


def _folder(name: str, root: str | Path | None) -> Path:
    return pipelines.pipelines_dir() / pipelines.check_pipeline(name) if root is None else Path(root) / name


def preset_names(name: str, root: str | Path | None = None) -> list[str]:
    """Preset names of pipeline ``name`` (files ``<folder>/<name>/presets/<preset>.yaml``)."""
    return sorted(p.stem for p in (_folder(name, root) / "presets").glob("*.yaml"))


def is_preset_file(preset: str) -> bool:
    """Is ``preset`` a path to a YAML file of parameters (rather than a bundled preset name)?"""
    return preset.endswith((".yaml", ".yml")) or "/" in preset or "\\" in preset


def _yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise GuardsmithError(f"{what} {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise GuardsmithError(f"{what} {path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise GuardsmithError(f"{what} {path}: must be a mapping of parameter: value")
    return values


def load_config(path: str | Path | None) -> dict[str, Any]:
    """``--config FILE``: a YAML mapping of parameters, applied after the preset and before ``--set``
    (callers merge ``{**load_config(f), **parse_sets(s)}`` into the overrides)."""
    return {} if not path else _yaml_mapping(Path(path), "--config")


def load_preset(name: str, preset: str, overrides: Mapping[str, Any] | None = None, *,
                root: str | Path | None = None, now: float | None = None) -> dict[str, Any]:
    """A preset's parameters with ``overrides`` applied and placeholders expanded.

    ``preset`` is a bundled preset name or (a name ending in ``.yaml``/``.yml`` or holding a path
    separator) the path of the user's own YAML file of parameters. ``root`` None reads the
    installed pipelines and checks the names against the pipeline function; a folder ``root``
    reads ``<root>/<name>/presets/`` and checks them against the compiled package
    ``<root>/<name>/pipeline.yaml``. An unknown preset or parameter is an error.
    """
    known = (pipelines.pipeline_parameters(name) if root is None
             else pipelines.package_parameters(pipelines.package_path(name, root)))
    if is_preset_file(preset):
        values = _yaml_mapping(Path(preset), "--preset")
    else:
        path = _folder(name, root) / "presets" / f"{preset}.yaml"
        if not path.exists():
            raise GuardsmithError(f"unknown preset {preset!r} for {name}; "
                                  f"presets: {', '.join(preset_names(name, root)) or 'none'} "
                                  "(or the path of your own YAML file, e.g. ./my-preset.yaml)")
        values = _yaml_mapping(path, "preset")
    values.update(overrides or {})
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise GuardsmithError(f"{name}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return expand_placeholders(values, now)


def check_submittable(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """Refuse parameters that cannot run on a cluster: a local-only value anywhere, or no ``work_root``."""
    for marker in LOCAL_MARKERS:
        if uses(params, marker):
            raise GuardsmithError(f"{marker!r} exists only in local runs; set a model/endpoint URI with --set")
    if "work_root" not in params:
        raise GuardsmithError("work_root is not set: pass --set work_root=s3://bucket/prefix")
    for name, value in params.items():
        local = _relative_path(value)
        if local is not None:
            raise GuardsmithError(f"{name}: {local!r} is a path on this machine, which a cluster's pods cannot read; "
                                  "put the file in object storage and give its s3:// URI")
    return params


def _relative_path(value: Any) -> str | None:
    """The first string in ``value`` (recursively) that is a relative or home-relative local path
    (``./``, ``../``, ``~/``), else None."""
    if isinstance(value, str):
        return value if value.startswith(("./", "../", "~/")) else None
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else ()
    for item in items:
        found = _relative_path(item)
        if found is not None:
            return found
    return None


def sweep_points(items: Sequence[str]) -> list[dict[str, Any]]:
    """``--sweep key=v1,v2`` items (values read as YAML, or a YAML list ``key=[v1, v2]``) -> one
    parameter dict per combination (the cartesian product, in the order given); ``[{}]`` for none."""
    import itertools

    import yaml

    axes: list[tuple[str, list[Any]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise GuardsmithError(f"--sweep expects key=v1,v2,..., got {item!r}")
        values = yaml.safe_load(raw) if raw.strip().startswith("[") else [yaml.safe_load(v) for v in raw.split(",")]
        if not isinstance(values, list) or not values:
            raise GuardsmithError(f"--sweep {key.strip()}: expected one or more values, got {raw!r}")
        axes.append((key.strip(), values))
    keys = [k for k, _ in axes]
    if len(set(keys)) != len(keys):
        raise GuardsmithError(f"--sweep names a parameter twice: {', '.join(keys)}")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


def sweep_root(work_root: str, point: Mapping[str, Any]) -> str:
    """The work root of one sweep point: ``<work_root>/sweep/<key>-<value>_...`` (one writer per run)."""
    if not point:
        return work_root
    name = "_".join(f"{k}-{v}" for k, v in point.items())
    return f"{work_root.rstrip('/')}/sweep/{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}"


def submit_parameters(name: str, preset: str, overrides: Mapping[str, Any] | None = None, *,
                      root: str | Path | None = None, now: float | None = None) -> dict[str, Any]:
    """:func:`load_preset` then :func:`check_submittable`: what every submit path sends to KFP."""
    params = load_preset(name, preset, overrides, root=root, now=now)
    check_submittable(params)
    return params

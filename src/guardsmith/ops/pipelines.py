"""The Kubeflow pipelines and components: which exist, loading them from source, their parameters,
and compiling them to the committed YAML.

Components are derived from the one stage registry, :data:`guardsmith.stages.STAGES`: the folder
``components/<stage>/`` holds the component function :attr:`Stage.component_function` of each
stage. Pipelines are :data:`PIPELINES` (name -> recipe, as :attr:`Stage.recipe`).

Compile-time settings are read from the environment when a component or pipeline module is
imported: images (``GUARDSMITH_IMAGE_CPU`` / ``_TRAIN`` / ``_INFER``), the Kueue queue
(``GUARDSMITH_KUEUE_QUEUE``) and Secret names (``GUARDSMITH_SECRET_<NAME>``).
"""
from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.stages import STAGES

PIPELINES: dict[str, str] = {
    "guard_training": "guard",
    "evaluation": "guard",
    "boundary_guidance": "boundary",
    "guard_then_boundary": "boundary",
}
"""Pipeline name (folder under ``pipelines/``) -> recipe: ``guard`` or ``boundary``."""
COMPONENTS: dict[str, str] = {s.name: s.component_function for s in STAGES.values()}
"""Component folder (the stage name) -> the component function compiled to its component.yaml."""


def components_dir() -> Path:
    """The ``components/`` source folder (installed as ``guardsmith.components``)."""
    import guardsmith.components as pkg

    return Path(pkg.__file__).parent


def pipelines_dir() -> Path:
    """The ``pipelines/`` source folder (installed as ``guardsmith.pipelines``)."""
    import guardsmith.pipelines as pkg

    return Path(pkg.__file__).parent


def check_pipeline(name: str) -> str:
    """``name`` when it is a known pipeline, else a one-line error listing them."""
    if name not in PIPELINES:
        raise GuardsmithError(f"unknown pipeline {name!r}; choose one of {', '.join(PIPELINES)}")
    return name


def _forget_modules() -> None:
    """Drop imported component and pipeline modules so the next import re-reads the environment."""
    for mod in [m for m in sys.modules if m.startswith(("guardsmith.components.", "guardsmith.pipelines."))]:
        del sys.modules[mod]


def load_pipeline(name: str, fresh: bool = False) -> Any:
    """The ``@dsl.pipeline`` object of pipeline ``name`` (re-built from the environment when ``fresh``)."""
    check_pipeline(name)
    if fresh:
        _forget_modules()
    return importlib.import_module(f"guardsmith.pipelines.{name}.pipeline").PIPELINE


def load_component(stage: str, fresh: bool = False) -> Any:
    """The component compiled to ``components/<stage>/component.yaml``."""
    if stage not in COMPONENTS:
        raise GuardsmithError(f"unknown component {stage!r}; choose one of {', '.join(COMPONENTS)}")
    if fresh:
        _forget_modules()
    return getattr(importlib.import_module(f"guardsmith.components.{stage}.component"), COMPONENTS[stage])


def pipeline_parameters(name: str) -> dict[str, Any]:
    """Parameter name -> default (``...`` when required) of pipeline ``name``, from its function."""
    import inspect

    fn = load_pipeline(name).pipeline_func
    return {p.name: (... if p.default is inspect.Parameter.empty else p.default)
            for p in inspect.signature(fn).parameters.values()}


def package_parameters(package: str | Path) -> dict[str, Any]:
    """Root input parameters of a compiled package: name -> default (``...`` when required)."""
    import yaml

    docs = [d for d in yaml.safe_load_all(Path(package).read_text(encoding="utf-8")) if d]
    spec = docs[0] if docs else {}
    params = (((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {})
    return {k: (v or {}).get("defaultValue", ...) for k, v in params.items()}


def discover_packages(root: str | Path) -> dict[str, Path]:
    """``name -> <root>/<name>/pipeline.yaml`` for every compiled package under ``root``."""
    root = Path(root)
    found = {p.parent.name: p for p in sorted(root.glob("*/pipeline.yaml"))}
    if not found:
        raise GuardsmithError(f"no compiled pipelines (<name>/pipeline.yaml) under {root}")
    return found


def package_path(name: str, root: str | Path | None = None) -> Path:
    """The compiled package of pipeline ``name``: the committed one (``root`` None) or ``<root>/<name>/pipeline.yaml``."""
    if root is None:
        path = pipelines_dir() / check_pipeline(name) / "pipeline.yaml"
        if not path.exists():
            raise GuardsmithError(f"{path} is missing; run `guardsmith pipeline compile`")
        return path
    package = discover_packages(root).get(name)
    if package is None:
        raise GuardsmithError(f"no compiled package {Path(root)}/{name}/pipeline.yaml")
    return package


def compile_all(out_root: Path | None = None, env: Mapping[str, str | None] | None = None, *,
                components: Iterable[str] | None = None, pipelines: Iterable[str] | None = None) -> list[Path]:
    """Compile components and pipelines; returns the written YAML paths.

    ``out_root`` None writes the committed files in place; otherwise the same layout
    (``components/<stage>/component.yaml``, ``pipelines/<name>/pipeline.yaml``) under it.
    ``env`` overrides compile-time settings (images, Kueue queue, Secret names) for this call.
    ``components`` / ``pipelines`` choose what is compiled (default: everything,
    :data:`COMPONENTS` and :data:`PIPELINES`).
    """
    from guardsmith.standins.local_s3 import patched_env

    written: list[Path] = []
    jobs = [(components_dir(), "components", stage, "component.yaml", load_component)
            for stage in (COMPONENTS if components is None else components)]
    jobs += [(pipelines_dir(), "pipelines", name, "pipeline.yaml", load_pipeline)
             for name in (PIPELINES if pipelines is None else pipelines)]
    with patched_env(env or {}):
        _forget_modules()
        try:
            for source, kind, name, filename, load in jobs:
                folder = source / name if out_root is None else Path(out_root) / kind / name
                folder.mkdir(parents=True, exist_ok=True)
                _compile(load(name), folder / filename)
                written.append(folder / filename)
        finally:
            _forget_modules()
    return written


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

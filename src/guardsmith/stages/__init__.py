"""Pipeline stages and the one registry of them.

Each stage is a module ``guardsmith.stages.<name>`` exposing ``CONFIG`` (its config dataclass),
``HELP`` (one paragraph) and ``run(cfg) -> result``. Stage modules never import each other: what
two stages share lives in a library module (``guard``, ``inference``, ``training``, ...).

:data:`STAGES` is read by the CLI (one generated command per stage), by ``kfp_support`` (the
components run stages by name), by ``guardsmith.ops`` (what is compiled) and by the tests.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    """One stage: its name, whether the CLI generates a command for it, and its KFP component."""

    name: str
    command: bool = True
    """``guardsmith <name>`` is generated from the config (data_import has its own ``data import``)."""
    component: str | None = None
    """Function name of the KFP component in ``components/<name>/component.py`` (default: the name)."""
    recipe: str = "guard"
    """Which method the stage belongs to: ``guard`` (reasoning guards) or ``boundary`` (Boundary Guidance)."""

    @property
    def module_name(self) -> str:
        return f"guardsmith.stages.{self.name}"

    @property
    def component_function(self) -> str:
        return self.component or self.name

    def module(self) -> Any:
        """The imported stage module."""
        return importlib.import_module(self.module_name)


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("data_import", command=False),
    Stage("subset"),
    Stage("distill"),
    Stage("filter", component="filter_traces"),
    Stage("sft"),
    Stage("mine"),
    Stage("continual"),
    Stage("evaluate"),
    Stage("report"),
    Stage("boundary", recipe="boundary"),
    Stage("boundary_eval", recipe="boundary"),
)}
"""Every stage, in pipeline order."""


def stage(name: str) -> Stage:
    """The registered stage ``name``; an unknown name is a one-line error listing the known ones."""
    from guardsmith.errors import GuardsmithError

    try:
        return STAGES[name]
    except KeyError:
        raise GuardsmithError(f"unknown stage {name!r}; known: {', '.join(STAGES)}") from None


def stage_module(name: str) -> Any:
    """The module of stage ``name``."""
    return stage(name).module()

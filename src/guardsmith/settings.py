"""Settings groups that several stage configs share, declared once.

A stage config that samples from a model, opens an inference backend or calls an HTTP endpoint
inherits the matching group instead of declaring the fields again, so one concept has one name
in every stage, config file, CLI flag and pipeline parameter:

============================  =================================================================
group                         fields
============================  =================================================================
:func:`sampling`              ``samples_per_row``, ``temperature``, ``top_p``, ``max_tokens``, ``seed``
:func:`backend`               ``backend``, ``concurrency``, ``chunk_rows``, ``backend_options``
:func:`endpoint`              ``api_key_env``, ``timeout_s``, ``max_retries``, ``retry_after_max_s``
============================  =================================================================

Each function returns a keyword-only dataclass mixin. ``prefix`` names a second copy of a group in
one config (``endpoint(prefix="judge_")`` gives ``judge_api_key_env``, ``judge_timeout_s``, ...);
keyword arguments change a field's default for that stage (the help text stays the same), and
``omit`` leaves fields out (a training stage keeps its own ``seed``). A prefixed copy may default
a field to ``None``: it then falls back to the unprefixed setting (``filter``'s judge uses the
teacher's endpoint settings unless told otherwise). :func:`group_values` reads a group back from a
config, without its prefix, as the plain dataclasses :class:`Sampling`, :class:`BackendChoice` and
:class:`Endpoint` that ``guardsmith.inference.open_backend`` takes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Optional

from guardsmith.config import option
from guardsmith.errors import GuardsmithError


def _check(group: Any, prefix: str, *rules: tuple[str, Any, str]) -> Any:
    """``group`` when every ``(field, test, wanted)`` rule holds; else a one-line error naming the field."""
    for name, test, wanted in rules:
        value = getattr(group, name)
        if not test(value):
            raise GuardsmithError(f"{prefix}{name} must be {wanted}, got {value!r}")
    return group


@dataclass
class Sampling:
    """How many samples to draw per row and how."""

    samples_per_row: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int = 0

    def check(self, prefix: str = "") -> "Sampling":
        return _check(self, prefix, ("samples_per_row", lambda v: v >= 1, "at least 1"),
                      ("max_tokens", lambda v: v >= 1, "at least 1"), ("temperature", lambda v: v >= 0, ">= 0"),
                      ("top_p", lambda v: 0 < v <= 1, "in (0, 1]"))


@dataclass
class BackendChoice:
    """Which local backend runs a model folder, and how much work it is given at a time."""

    backend: str = "transformers"
    concurrency: int = 8
    chunk_rows: int = 256
    backend_options: Optional[dict[str, Any]] = None

    def check(self, prefix: str = "") -> "BackendChoice":
        return _check(self, prefix, ("backend", lambda v: v in ("transformers", "vllm"), "transformers or vllm"),
                      ("concurrency", lambda v: v >= 1, "at least 1"), ("chunk_rows", lambda v: v >= 1, "at least 1"))


@dataclass
class Endpoint:
    """How an OpenAI-compatible HTTP endpoint is called."""

    api_key_env: Optional[str] = "OPENAI_API_KEY"
    timeout_s: float = 600.0
    max_retries: int = 6
    retry_after_max_s: float = 300.0

    def check(self, prefix: str = "") -> "Endpoint":
        return _check(self, prefix, ("max_retries", lambda v: v >= 0, ">= 0"), ("timeout_s", lambda v: v > 0, "> 0"),
                      ("retry_after_max_s", lambda v: v >= 0, ">= 0"))


_HELP: dict[type, dict[str, str]] = {
    Sampling: {
        "samples_per_row": "Samples drawn per row (N), all from one prompt pass.",
        "temperature": "Sampling temperature.",
        "top_p": "Nucleus-sampling top-p (1 = off).",
        "max_tokens": "Most new tokens per sample.",
        "seed": "Sampling seed.",
    },
    BackendChoice: {
        "backend": "Inference backend for model folders: transformers or vllm (endpoint specs use openai).",
        "concurrency": "Requests handed to the backend at once: the batch of a local model, the requests "
                       "in flight to an endpoint.",
        "chunk_rows": "Rows read and sent to the backend at a time (the streaming unit).",
        "backend_options": "Extra backend keywords (YAML only).",
    },
    Endpoint: {
        "api_key_env": "Name of the environment variable holding the endpoint's API key (unset variable = no key).",
        "timeout_s": "Deadline of one HTTP attempt, seconds.",
        "max_retries": "Retries per request on 429, 5xx, timeouts and dropped connections.",
        "retry_after_max_s": "Longest wait a server's Retry-After header may ask for, seconds.",
    },
}

_TYPES: dict[type, dict[str, Any]] = {
    Sampling: {"samples_per_row": int, "temperature": float, "top_p": float, "max_tokens": int, "seed": int},
    BackendChoice: {"backend": Literal["transformers", "vllm"], "concurrency": int, "chunk_rows": int,
                    "backend_options": Optional[dict[str, Any]]},
    Endpoint: {"api_key_env": Optional[str], "timeout_s": float, "max_retries": int, "retry_after_max_s": float},
}


@lru_cache(maxsize=None)
def _cached_mixin(group: type, prefix: str, omit: tuple[str, ...], defaults: tuple[tuple[str, Any], ...]) -> type:
    wanted = dict(defaults)
    names = {f.name for f in dataclasses.fields(group)}
    unknown = sorted((set(wanted) | set(omit)) - names)
    if unknown:
        raise TypeError(f"{group.__name__} has no field(s) {', '.join(unknown)}")
    fields = []
    for f in dataclasses.fields(group):
        if f.name in omit:
            continue
        default = wanted.get(f.name, f.default)
        help_text = _HELP[group][f.name]
        if prefix:  # "Judge: sampling temperature."
            help_text = f"{prefix.strip('_').replace('_', ' ').capitalize()}: {help_text[0].lower()}{help_text[1:]}"
        tp = _TYPES[group][f.name]
        if default is None and f.default is not None:
            if not prefix:
                raise TypeError(f"only a prefixed copy may leave {f.name} unset")
            tp = Optional[tp]
            help_text += f" Unset: the {f.name} setting."
        fields.append((prefix + f.name, tp, option(default, help_text)))
    label = "".join(p.capitalize() for p in prefix.strip("_").split("_")) + group.__name__ + "Settings"
    cls = dataclasses.make_dataclass(label, fields, kw_only=True)
    cls.__doc__ = f"{group.__doc__} (fields {', '.join(n for n, _, _ in fields)})"
    cls._group = (group, prefix)  # type: ignore[attr-defined]
    return cls


def _make(group: type, prefix: str, omit: tuple[str, ...], defaults: dict[str, Any]) -> type:
    """One mixin class per (group, prefix, omitted fields, defaults): the same variant is the same class."""
    return _cached_mixin(group, prefix, tuple(omit), tuple(sorted(defaults.items())))


def sampling(prefix: str = "", omit: tuple[str, ...] = (), **defaults: Any) -> type:
    """Mixin with the :class:`Sampling` fields (``prefix`` + name), defaults changed by keyword."""
    return _make(Sampling, prefix, omit, defaults)


def backend(prefix: str = "", omit: tuple[str, ...] = (), **defaults: Any) -> type:
    """Mixin with the :class:`BackendChoice` fields (``prefix`` + name), defaults changed by keyword."""
    return _make(BackendChoice, prefix, omit, defaults)


def endpoint(prefix: str = "", omit: tuple[str, ...] = (), **defaults: Any) -> type:
    """Mixin with the :class:`Endpoint` fields (``prefix`` + name), defaults changed by keyword."""
    return _make(Endpoint, prefix, omit, defaults)


def group_values(cfg: Any, group: type, prefix: str = "", **fill: Any) -> Any:
    """The ``group`` (:class:`Sampling`, :class:`BackendChoice` or :class:`Endpoint`) held by ``cfg``
    under ``prefix``, checked. Fields the config omits come from ``fill``, then the group's defaults;
    a prefixed field left unset (``None`` where the group has a value) takes the unprefixed one."""
    values = {}
    for f in dataclasses.fields(group):
        name = prefix + f.name
        if hasattr(cfg, name):
            values[f.name] = getattr(cfg, name)
            if values[f.name] is None and f.default is not None and prefix and hasattr(cfg, f.name):
                values[f.name] = getattr(cfg, f.name)
        elif f.name in fill:
            values[f.name] = fill[f.name]
    return group(**values).check(prefix)

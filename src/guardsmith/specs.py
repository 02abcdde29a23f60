"""Named URI specs on stage command lines: ``URI``, ``name=URI`` and ``name[key=value;...]=URI``.

``evaluate`` names its guard models and benchmarks this way, ``boundary_eval`` its generators and
prompt sets. Without a name, a spec is named after the last path component of its URI.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guardsmith.errors import GuardsmithError


@dataclass
class ModelSpec:
    """A model to evaluate: display name, URI and known attributes."""

    name: str
    uri: str
    options: dict[str, str] = field(default_factory=dict)
    train_size: int | None = None
    budget: int | None = None


_SPEC = re.compile(r"^(?P<name>[^=\[\]/:]+?)\s*(?:\[(?P<opts>[^\]]*)\])?\s*=(?P<uri>.+)$")


def _default_name(uri: str) -> str:
    return Path(str(uri).rstrip("/")).name or str(uri)


def parse_model_spec(spec: str) -> ModelSpec:
    """``uri`` | ``name=uri`` | ``name[k=v;k=v]=uri`` -> :class:`ModelSpec` (attributes from options)."""
    from guardsmith.reporting import parse_count

    text = str(spec).strip()
    m = _SPEC.match(text)
    if not m:
        if not text:
            raise GuardsmithError("empty model spec")
        return ModelSpec(name=_default_name(text), uri=text)
    options: dict[str, str] = {}
    for item in (m.group("opts") or "").split(";"):
        if not item.strip():
            continue
        if "=" not in item:
            raise GuardsmithError(f"model spec {spec!r}: option {item.strip()!r} is not key=value")
        key, value = (p.strip() for p in item.split("=", 1))
        options[key] = value
    out = ModelSpec(name=m.group("name").strip(), uri=m.group("uri").strip(), options=options)
    for key in ("size", "train_size"):
        if key in options:
            out.train_size = _count(options[key], spec, key, parse_count)
    if "budget" in options:
        out.budget = _count(options["budget"], spec, "budget", parse_count)
    return out


def _count(value: str, spec: str, key: str, parse: Any) -> int:
    count = parse(value)
    if count is None:
        raise GuardsmithError(f"model spec {spec!r}: {key}={value!r} is not a number")
    return count


def parse_benchmark_spec(spec: str) -> tuple[str, str]:
    """``name=uri`` or ``uri`` -> (name, uri)."""
    m = _SPEC.match(str(spec).strip())
    if m and not m.group("opts"):
        return m.group("name").strip(), m.group("uri").strip()
    if m:
        raise GuardsmithError(f"benchmark spec {spec!r}: options are not supported")
    return _default_name(str(spec).strip()), str(spec).strip()

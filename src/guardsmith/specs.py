"""Named URI specs on stage command lines: ``URI``, ``name=URI`` and ``name[key=value;...]=URI``.

``evaluate`` names its guard models and benchmarks this way, ``boundary_eval`` its generators and
prompt sets. Without a name, a spec is named after the last path component of its URI.

A model's URI may start with a guard format (``name=FORMAT:SPEC``, FORMAT a name in
:data:`guardsmith.guard.formats.FORMATS`, e.g. ``wg=wildguard:s3://b/wildguard`` or
``lg=llama-guard:openai:http://host/v1?model=M``): :attr:`ModelSpec.format` holds it and
:attr:`ModelSpec.uri` the rest (:func:`split_format`).
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
    trained_by: str | None = None  # the stage that trained it (sft, continual), from its training summary
    format: str | None = None
    """Guard format named in the spec (``FORMAT:SPEC``); None: decided from the model (evaluate)."""


_SPEC = re.compile(r"^(?P<name>[^=\[\]/:]+?)\s*(?:\[(?P<opts>[^\]]*)\])?\s*=(?P<uri>.+)$")


def _default_name(uri: str) -> str:
    return Path(str(uri).rstrip("/")).name or str(uri)


_PREFIX = re.compile(r"^(?P<word>[A-Za-z][\w.-]+):(?P<rest>.*)$", re.S)
URI_SCHEMES = ("s3", "file", "openai", "vllm", "transformers", "tiny", "offline", "http", "https", "hf")
"""Prefixes a model URI may start with that are not guard formats (storage schemes, backend kinds,
the local stand-in markers)."""


def split_format(uri: str, *, strict: bool = False, spec: str | None = None) -> tuple[str | None, str]:
    """``FORMAT:REST`` -> (format name, REST) when FORMAT is registered in
    :data:`guardsmith.guard.formats.FORMATS` (any case); otherwise (None, uri).

    ``strict``: a ``word:`` prefix that is neither a format nor one of :data:`URI_SCHEMES` (and not
    ``scheme://``) is an error naming ``spec`` and the known formats (a misspelt format).
    """
    from guardsmith.guard.formats import FORMATS

    text = str(uri).strip()
    m = _PREFIX.match(text)
    if not m:
        return None, text
    word, rest = m.group("word").lower(), m.group("rest").strip()
    if word in FORMATS:
        if not rest:
            raise GuardsmithError(f"model spec {spec or uri!r}: format {word!r} names no model (FORMAT:SPEC)")
        return word, rest
    if strict and word not in URI_SCHEMES and not rest.startswith("//"):
        raise GuardsmithError(f"model spec {spec or uri!r}: {m.group('word')!r} is not a guard format "
                              f"({', '.join(sorted(FORMATS))}) nor a URI scheme ({', '.join(URI_SCHEMES)})")
    return None, text


def parse_model_spec(spec: str, *, strict_format: bool = False) -> ModelSpec:
    """``uri`` | ``name=uri`` | ``name[k=v;k=v]=uri`` -> :class:`ModelSpec` (attributes from options);
    ``uri`` may be ``FORMAT:uri`` (:func:`split_format`, ``strict_format`` passed on as ``strict``)."""
    from guardsmith.reporting import parse_count

    text = str(spec).strip()
    m = _SPEC.match(text)
    if not m:
        if not text:
            raise GuardsmithError("empty model spec")
        fmt, uri = split_format(text, strict=strict_format, spec=text)
        return ModelSpec(name=_default_name(uri), uri=uri, format=fmt)
    options: dict[str, str] = {}
    for item in (m.group("opts") or "").split(";"):
        if not item.strip():
            continue
        if "=" not in item:
            raise GuardsmithError(f"model spec {spec!r}: option {item.strip()!r} is not key=value")
        key, value = (p.strip() for p in item.split("=", 1))
        options[key] = value
    fmt, uri = split_format(m.group("uri"), strict=strict_format, spec=text)
    out = ModelSpec(name=m.group("name").strip(), uri=uri, options=options, format=fmt)
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

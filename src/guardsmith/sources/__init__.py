"""Public data set adapters and the import stage: one module per source, a registry, and
:func:`import_source`, which writes a source's split as an ``interactions`` table (method A.1).

    >>> report = import_source("aegis2", "test", "test.json", "s3://bucket/aegis2-test")
    >>> print(report)

``from_uri`` is a local path, ``file://`` URI or ``s3://`` URI, or several of them as a list or
a comma-separated string (e.g. Aegis 2.0's ``train.json,refusals_train.json``), or ``hf`` /
``hf://owner/name`` to load the
split from the Hugging Face hub through ``datasets`` (optional; needs network and, for gated
sets, ``HF_TOKEN``).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from guardsmith.errors import DataError, GuardsmithError
from guardsmith.sources import (
    aegis2,
    cosapien,
    dynabench,
    jbb,
    openai_moderation,
    simplesafetytests,
    table,
    topic_following,
    toxicchat,
    wildguardmix,
    xstest,
)
from guardsmith.sources.base import SourceAdapter, Tally, check_encoding
from guardsmith.vocabulary import TASKS

__all__ = [
    "SOURCES", "ImportReport", "SourceAdapter", "Tally", "get_source", "import_source", "read_source", "sources_help",
]

SOURCES: dict[str, SourceAdapter] = {
    m.ADAPTER.name: m.ADAPTER
    for m in (
        wildguardmix,
        aegis2,
        topic_following,
        dynabench,
        cosapien,
        xstest,
        jbb,
        openai_moderation,
        toxicchat,
        simplesafetytests,
        table,
    )
}
"""Source name -> adapter (name, splits, file_format, description, read/read_hf)."""

BATCH_ROWS = 4096


@dataclass
class ImportReport:
    """What an import did: rows written, label counts per task, dropped rows, adjusted fields,
    notes and warnings."""

    source: str
    split: str
    inputs: list[str]
    out_uri: str
    rows: int = 0
    labels: dict[str, dict[str, int]] = field(default_factory=dict)  # task -> label word -> count
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows dropped
    adjusted: dict[str, int] = field(default_factory=dict)  # reason -> rows changed but kept
    taxonomies: dict[str, int] = field(default_factory=dict)  # taxonomy -> rows
    notes: dict[str, int] = field(default_factory=dict)  # reason -> rows (facts, not changes)
    warnings: dict[str, int] = field(default_factory=dict)  # reason -> rows (worth a look)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "split": self.split,
            "inputs": list(self.inputs),
            "out_uri": self.out_uri,
            "rows": self.rows,
            "labels": {k: dict(v) for k, v in self.labels.items()},
            "dropped": dict(self.dropped),
            "adjusted": dict(self.adjusted),
            "taxonomies": dict(self.taxonomies),
            "notes": dict(self.notes),
            "warnings": dict(self.warnings),
        }

    def __str__(self) -> str:
        lines = [f"imported {self.source}/{self.split}: {self.rows} rows -> {self.out_uri}"]
        lines.append(f"  from: {', '.join(self.inputs)}")
        for task, counts in self.labels.items():
            shown = ", ".join(f"{word} {n}" for word, n in sorted(counts.items()))
            lines.append(f"  {task}: {shown}")
        if len(self.taxonomies) <= 12:
            lines.append("  taxonomy: " + ", ".join(f"{t} {n}" for t, n in sorted(self.taxonomies.items())))
        else:
            lines.append(f"  taxonomy: {len(self.taxonomies)} distinct")
        total_dropped = sum(self.dropped.values())
        lines.append(f"  dropped: {total_dropped} rows")
        lines += [f"    {n:>7}  {reason}" for reason, n in sorted(self.dropped.items())]
        if self.adjusted:
            lines.append("  adjusted (kept):")
            lines += [f"    {n:>7}  {reason}" for reason, n in sorted(self.adjusted.items())]
        if self.notes:
            lines.append("  notes:")
            lines += [f"    {n:>7}  {reason}" for reason, n in sorted(self.notes.items())]
        if self.warnings:
            lines.append("  warnings:")
            lines += [f"    {n:>7}  {reason}" for reason, n in sorted(self.warnings.items())]
        return "\n".join(lines)


def get_source(name: str | SourceAdapter) -> SourceAdapter:
    """The adapter for ``name`` (an adapter, e.g. a configured ``table``, is returned as is); an
    unknown name is a GuardsmithError listing the known ones."""
    if isinstance(name, SourceAdapter):
        return name
    try:
        return SOURCES[name]
    except KeyError:
        raise GuardsmithError(f"unknown source {name!r}; choose one of: {', '.join(SOURCES)}") from None


def _inputs(from_uri: str | Sequence[str]) -> list[str]:
    """One or more input URIs: a list, or a string with comma-separated URIs."""
    items = [p.strip() for p in from_uri.split(",")] if isinstance(from_uri, str) else [str(p) for p in from_uri]
    items = [p for p in items if p]
    if not items:
        raise GuardsmithError("no input file given (--from)")
    return items


def _is_hub(from_uri: str | Sequence[str]) -> bool:
    return isinstance(from_uri, str) and (from_uri == "hf" or from_uri.startswith("hf://"))


def sources_help() -> str:
    """One line per source with its split names and the hub's ``config/split`` names (for ``--help``)."""
    return "\n".join(adapter.help_line() for adapter in SOURCES.values())


def read_source(
    source: str | SourceAdapter,
    split: str,
    from_uri: str | Sequence[str],
    tally: Tally | None = None,
    *,
    encoding: str = "utf-8",
) -> Iterator[dict[str, Any]]:
    """Stream A.1 records of ``source``/``split`` from files or (``hf``, ``hf://repo``) the hub.

    ``split`` is the source's name or the hub's ``config/split``; ``encoding`` is that of text files."""
    adapter = get_source(source)
    if _is_hub(from_uri):
        repo = from_uri[len("hf://") :] if from_uri != "hf" else None  # type: ignore[index]
        return adapter.read_hf(split, tally, repo=repo or None)
    return adapter.read(_inputs(from_uri), split, tally, encoding=encoding)


def _chunks(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(records)
    while chunk := list(islice(it, size)):
        yield chunk


def import_source(
    source: str | SourceAdapter,
    split: str,
    from_uri: str | Sequence[str],
    out_uri: str,
    encoding: str = "utf-8",
    *,
    batch_rows: int = BATCH_ROWS,
    identity: Any = None,
) -> ImportReport:
    """Read ``source``/``split`` from ``from_uri`` and write an ``interactions`` table at ``out_uri``.

    Input is streamed in chunks of ``batch_rows`` records; each chunk is written (and validated
    against the interactions schema) through :class:`guardsmith.storage.TableWriter`, which
    commits only when everything succeeded: on any error (bad input, no rows left) nothing
    appears at ``out_uri``. ``split`` may be the hub's ``config/split`` name; ``encoding`` (the
    CLI's ``--encoding``) is that of text files; ``identity`` (a
    :class:`guardsmith.identity.WorkIdentity`, e.g. the ``data_import`` stage's, or a function
    returning one, called once the split, encoding and input list are checked, before any input is
    read) is recorded in the table's commit manifest. Returns the :class:`ImportReport`.
    """
    import pyarrow as pa

    from guardsmith.progress import track
    from guardsmith.storage import TableWriter
    from guardsmith.tables import SCHEMAS

    adapter = get_source(source)
    split = adapter.check_split(split)
    check_encoding(encoding)
    inputs = [from_uri] if _is_hub(from_uri) else _inputs(from_uri)  # type: ignore[list-item]
    if callable(identity):
        identity = identity()
    tally = Tally()
    schema = SCHEMAS["interactions"]
    labels: dict[str, Counter] = {task: Counter() for task in TASKS}
    taxonomies: Counter = Counter()
    rows = 0
    records = track(read_source(source, split, from_uri, tally, encoding=encoding), f"import {adapter.name}/{split}")
    with TableWriter(out_uri, schema, schema_name="interactions", identity=identity) as writer:
        for chunk in _chunks(records, batch_rows):
            writer.write(pa.Table.from_pylist(chunk, schema=schema))  # validated by the writer
            rows += len(chunk)
            for rec in chunk:
                taxonomies[rec["taxonomy"]] += 1
                for task in TASKS:
                    if rec[task] is not None:
                        labels[task][rec[task]] += 1
        if rows == 0:
            reasons = "; ".join(f"{n} {r}" for r, n in tally.dropped.items()) or "no records"
            raise DataError(f"no rows left to import ({reasons})", file=", ".join(inputs))
    return ImportReport(
        source=adapter.name,
        split=split,
        inputs=inputs,
        out_uri=out_uri,
        rows=rows,
        labels={task: dict(c) for task, c in labels.items() if c},
        dropped=dict(tally.dropped),
        adjusted=dict(tally.adjusted),
        taxonomies=dict(taxonomies),
        notes=dict(tally.notes),
        warnings=dict(tally.warnings),
    )


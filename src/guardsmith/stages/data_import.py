"""The data_import stage: a public data set split, or the bundled sample, into an interactions table.

`guardsmith data import` / `guardsmith data sample` and the `data_import` KFP component run it.

Re-runs: the import is cheap and deterministic, so a re-run always recomputes and replaces the
output atomically. The output records its work identity (:func:`import_identity`: source, split,
the input files by content (the hub by name), the effective mapping and encoding, the guardsmith
version); the bundled sample's records source and split.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from guardsmith.config import option
from guardsmith.errors import GuardsmithError

if TYPE_CHECKING:
    from guardsmith.identity import WorkIdentity


@dataclass(kw_only=True)
class DataImportConfig:
    """Settings of the ``data_import`` component."""

    source: str = option(help="Public data set name (see guardsmith.sources.SOURCES), or 'sample' "
                              "for the bundled synthetic corpus.")
    split: str = option(help="The source's split (e.g. train, test); for 'sample': train, pool, "
                             "test or all; for 'table': all (or a name used in derived ids).")
    from_uri: str = option("hf", "Source file URI(s) as shipped (comma-separated when a split has "
                                 "several files), or 'hf' / 'hf://owner/name' for the Hugging Face "
                                 "hub; ignored for 'sample'.")
    output: str = option(help="Output interactions table URI.")
    mapping: str = option("", "For source 'table' (your own CSV/JSON/JSONL/Parquet file or table): the URI "
                              "of a YAML mapping file, or the mapping itself as YAML text (keys map, labels, "
                              "categories, policy_file, taxonomy, encoding; see guardsmith.sources.table).")
    encoding: str = option("", "Text encoding of CSV/JSON input (empty: UTF-8), e.g. cp1252, mac_roman.")


@dataclass
class DataImportResult:
    """Where the import wrote and how many rows."""

    output: str
    rows: int
    summary: str

    def __str__(self) -> str:
        return self.summary


CONFIG = DataImportConfig
HELP = ("Normalise a public data set split, your own table (source 'table' with a mapping), or the bundled "
        "sample into an interactions table.")


def import_identity(cfg: DataImportConfig, files: list[str], mapping: Any = None,
                    encoding: str | None = None) -> WorkIdentity:
    """The work identity of importing ``files`` (``cfg.from_uri`` split at commas) for ``cfg``: source
    and split, each input file by content (input ``from``, or ``from 1``, ``from 2``, ... for several;
    ``hf`` / ``hf://owner/name`` by name), the effective ``mapping`` (a ``TableMapping``; the policy
    by its text, not its file's path) and ``encoding``, the file names when several files give
    derived ids their tags, and the guardsmith version."""
    from guardsmith.identity import work_identity

    if len(files) == 1:
        inputs: dict[str, str | None] = {"from": files[0]}  # hf / hf://owner/name: a spec, its own identity
    else:
        inputs = {f"from {i}": uri for i, uri in enumerate(files, 1)}
    if dataclasses.is_dataclass(mapping) and not isinstance(mapping, type) and hasattr(mapping, "policy_file"):
        mapping = dataclasses.replace(mapping, policy_file=None)
    names = [uri.rstrip("/").rsplit("/", 1)[-1] for uri in files] if len(files) > 1 else None
    return work_identity("data_import", cfg, inputs, exclude=("output", "from_uri", "mapping", "encoding"),
                         extra={"mapping": mapping, "encoding": encoding or None, "file_names": names})


def run(cfg: DataImportConfig) -> DataImportResult:
    """Import ``cfg.source``/``cfg.split`` into an interactions table at ``cfg.output``."""
    from guardsmith import storage, tables

    if cfg.source == "sample":
        from guardsmith.standins.sample import load_sample

        from guardsmith.identity import work_identity

        rows = load_sample(None if cfg.split in ("", "all") else cfg.split)
        identity = work_identity("data_import", cfg, {}, exclude=("output", "from_uri", "mapping", "encoding"))
        storage.write_table(cfg.output, tables.from_records(rows, "interactions"), schema_name="interactions",
                            identity=identity)
        return DataImportResult(cfg.output, len(rows), f"bundled sample/{cfg.split}: {len(rows)} rows -> {cfg.output}")
    source: object = cfg.source
    if cfg.source == "table":
        from guardsmith.sources.table import configured

        source = configured(cfg.mapping or None, encoding=cfg.encoding or None)
    elif cfg.mapping:
        raise GuardsmithError(f"mapping is only for source 'table', not {cfg.source!r}")
    report = import_files(cfg, source)
    return DataImportResult(cfg.output, report.rows, str(report))


def import_files(cfg: DataImportConfig, source: object) -> Any:
    """Import ``cfg.from_uri`` (comma-separated files) with ``source`` (a source name, or a configured
    ``table`` adapter whose mapping may give the encoding) into ``cfg.output``, recording the work
    identity; the `ImportReport`. Also what ``guardsmith data import`` runs."""
    from guardsmith.sources import import_source

    files = [p.strip() for p in cfg.from_uri.split(",") if p.strip()]
    mapping = getattr(source, "mapping", None)
    encoding = cfg.encoding or getattr(mapping, "encoding", None) or None
    extra = {"encoding": encoding} if encoding else {}
    return import_source(source, cfg.split or "all", files[0] if len(files) == 1 else files, cfg.output,
                         identity=lambda: import_identity(cfg, files, mapping, encoding), **extra)


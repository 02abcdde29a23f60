"""Seeded random subset of an ``interactions`` table (method A.3: 500 / 5,000-row training sets).

Two streaming passes over the input: the first validates every batch and counts the rows, the
second writes the chosen rows in their input order. Only the chosen row indices are held in
memory, so the input may be far larger than RAM. The choice is ``random.Random(seed).sample``
over the row indices: the same table, ``n`` and ``seed`` always give the same subset, and the
subset for a smaller ``n`` is not a prefix of a larger one (each draw is independent).

The output is written through :class:`guardsmith.storage.TableWriter`, so it appears only when
complete. ``n`` at or above the row count copies the whole table (and says so).

``exclude`` (tables of any schema with ``id`` and optionally ``prompt``) holds rows apart: an
input row whose id, or whose prompt text (case and white space ignored), appears in one of them is
never chosen; how many were held apart is reported. The guard_then_boundary pipeline uses it so
that the generator's RL prompts are not the guard's own training rows.

Re-runs: the output records its work identity (input and exclude tables by content, ``n``,
``seed``, the guardsmith version). The stage is cheap and deterministic, so a re-run always
recomputes and replaces the output atomically (same work: the same rows again).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import pyarrow as pa

from guardsmith.config import option
from guardsmith.errors import GuardsmithError
from guardsmith.identity import work_identity

HELP = (
    "Write a seeded random sample of N rows of an interactions table (rows keep their input "
    "order). Streams the input twice (count, then select), holding only the chosen row numbers "
    "in memory; the output is committed atomically."
)

SCHEMA = "interactions"


@dataclass
class SubsetConfig:
    """Settings of the ``subset`` stage."""

    input: str = option(help="Input interactions table URI (path, file:// or s3://).")
    output: str = option(help="Output interactions table URI.")
    n: int = option(help="Rows to keep; 0 or at least the row count keeps every row.")
    seed: int = option(0, "Seed of the random choice of rows.")
    exclude: list[str] = option(help="Tables whose rows are held apart (same id or same prompt text): never chosen.",
                                factory=list)


CONFIG = SubsetConfig


@dataclass
class SubsetResult:
    """Output URI and row counts of a ``subset`` run."""

    output: str
    rows_in: int
    rows_out: int
    seed: int
    held_apart: int = 0
    def __str__(self) -> str:
        eligible = self.rows_in - self.held_apart
        kept = "all rows" if self.rows_out == eligible else f"seed {self.seed}"
        apart = f"; {self.held_apart} held apart (in an excluded table)" if self.exclude_used else ""
        return f"kept {self.rows_out} of {self.rows_in} rows ({kept}){apart} -> {self.output}"

    exclude_used: bool = False


def choose(total: int, n: int, seed: int) -> list[int]:
    """Sorted row indices of a seeded sample of ``n`` of ``total`` rows (all when n is 0 or >= total)."""
    if n <= 0 or n >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), n))


def _prompt_key(text: object) -> str:
    """A prompt compared for holding apart: case and white space ignored."""
    return " ".join(str(text).split()).casefold()


def held_apart(uris: list[str]) -> tuple[set[str], set[str]]:
    """(ids, prompt keys) of the rows of the tables ``uris``."""
    from guardsmith import storage
    from guardsmith.errors import DataError

    ids: set[str] = set()
    prompts: set[str] = set()
    for uri in uris:
        for batch in storage.iter_batches(uri):
            names = batch.schema.names
            if "id" not in names:
                raise DataError(f"missing column (columns present: {', '.join(names)})", file=uri, column="id")
            ids.update(str(v) for v in batch.column("id").to_pylist() if v is not None)
            if "prompt" in names:
                prompts.update(_prompt_key(v) for v in batch.column("prompt").to_pylist() if v is not None)
    return ids, prompts


def _eligible(batch: pa.RecordBatch, apart: tuple[set[str], set[str]]) -> list[int]:
    """Indices of the rows of ``batch`` that are not held apart."""
    ids, prompts = apart
    if not ids and not prompts:
        return list(range(batch.num_rows))
    return [i for i, (rid, prompt) in enumerate(zip(batch.column("id").to_pylist(), batch.column("prompt").to_pylist()))
            if str(rid) not in ids and _prompt_key(prompt) not in prompts]


def run(cfg: SubsetConfig) -> SubsetResult:
    """Sample ``cfg.n`` rows of ``cfg.input`` with ``cfg.seed`` and commit them at ``cfg.output``."""
    from guardsmith import storage
    from guardsmith.progress import track

    if cfg.n < 0:
        raise GuardsmithError(f"n must be 0 (all rows) or positive, got {cfg.n}")
    apart = held_apart(list(cfg.exclude or []))
    total = eligible = 0
    for batch in storage.iter_batches(cfg.input, schema_name=SCHEMA):
        total += batch.num_rows
        eligible += len(_eligible(batch, apart))
    if total == 0:
        raise GuardsmithError(f"{cfg.input} has no rows to sample from")
    if eligible == 0:
        raise GuardsmithError(f"{cfg.input}: all {total} rows are held apart by --exclude {', '.join(cfg.exclude)}")
    chosen = set(choose(eligible, cfg.n, cfg.seed))
    ordinal = 0
    inputs = {"input": cfg.input, **{f"exclude {i}": uri for i, uri in enumerate(cfg.exclude or [])}}
    identity = work_identity("subset", cfg, inputs, exclude=("input", "output", "exclude"))
    with storage.TableWriter(cfg.output, SCHEMA, identity=identity) as writer:
        for batch in track(storage.iter_batches(cfg.input, schema_name=SCHEMA), "subset"):
            picked = []
            for i in _eligible(batch, apart):
                if ordinal in chosen:
                    picked.append(i)
                ordinal += 1
            if picked:
                writer.write(batch.take(pa.array(picked, type=pa.int64())))
    return SubsetResult(output=cfg.output, rows_in=total, rows_out=len(chosen), seed=cfg.seed,
                        held_apart=total - eligible, exclude_used=bool(cfg.exclude))

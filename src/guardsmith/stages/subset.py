"""Seeded random subset of an ``interactions`` table (method A.3: 500 / 5,000-row training sets).

Two streaming passes over the input: the first validates every batch and counts the rows, the
second writes the chosen rows in their input order. Only the chosen row indices are held in
memory, so the input may be far larger than RAM. The choice is ``random.Random(seed).sample``
over the row indices: the same table, ``n`` and ``seed`` always give the same subset, and the
subset for a smaller ``n`` is not a prefix of a larger one (each draw is independent).

The output is written through :class:`guardsmith.storage.TableWriter`, so it appears only when
complete. ``n`` at or above the row count copies the whole table (and says so).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import pyarrow as pa

from guardsmith.config import option
from guardsmith.errors import GuardsmithError

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


CONFIG = SubsetConfig


@dataclass
class SubsetResult:
    """Output URI and row counts of a ``subset`` run."""

    output: str
    rows_in: int
    rows_out: int
    seed: int

    def __str__(self) -> str:
        kept = "all rows" if self.rows_out == self.rows_in else f"seed {self.seed}"
        return f"kept {self.rows_out} of {self.rows_in} rows ({kept}) -> {self.output}"


def choose(total: int, n: int, seed: int) -> list[int]:
    """Sorted row indices of a seeded sample of ``n`` of ``total`` rows (all when n is 0 or >= total)."""
    if n <= 0 or n >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), n))


def _take(batch: pa.RecordBatch, offset: int, chosen: list[int], pos: int) -> tuple[pa.RecordBatch | None, int]:
    """The rows of ``batch`` (global offset ``offset``) listed in ``chosen[pos:]``; new ``pos``."""
    end = offset + batch.num_rows
    local = []
    while pos < len(chosen) and chosen[pos] < end:
        local.append(chosen[pos] - offset)
        pos += 1
    if not local:
        return None, pos
    return batch.take(pa.array(local, type=pa.int64())), pos


def run(cfg: SubsetConfig) -> SubsetResult:
    """Sample ``cfg.n`` rows of ``cfg.input`` with ``cfg.seed`` and commit them at ``cfg.output``."""
    from guardsmith import storage
    from guardsmith.progress import track

    if cfg.n < 0:
        raise GuardsmithError(f"n must be 0 (all rows) or positive, got {cfg.n}")
    total = sum(b.num_rows for b in storage.iter_batches(cfg.input, schema_name=SCHEMA))
    if total == 0:
        raise GuardsmithError(f"{cfg.input} has no rows to sample from")
    chosen = choose(total, cfg.n, cfg.seed)
    offset = pos = 0
    with storage.TableWriter(cfg.output, SCHEMA) as writer:
        for batch in track(storage.iter_batches(cfg.input, schema_name=SCHEMA), "subset"):
            picked, pos = _take(batch, offset, chosen, pos)
            offset += batch.num_rows
            if picked is not None:
                writer.write(picked)
            if pos >= len(chosen):
                break
    return SubsetResult(output=cfg.output, rows_in=total, rows_out=len(chosen), seed=cfg.seed)

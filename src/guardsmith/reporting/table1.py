"""Table-1 data: metrics records arranged into benchmark x task columns and model rows.

Optional metrics columns written by ``evaluate`` are used when present: ``mode``, ``kind``
(``safety`` / ``custom``), ``f1_runs`` (per-run F1, for the std of the averages),
``positives``, ``train_size`` and ``budget``. Without them every benchmark counts as safety,
the averages have no std, and ``size=N`` / ``budget=N`` in a model name are used.
Averages are unweighted means over a model's harm-task cells (prompt_harm, response_harm);
refusal cells are shown but not averaged. When the same (model, mode, benchmark, task)
appears in several tables, the last one wins.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.vocabulary import HARM_TASKS, TASK_SHORT, TASKS

_TASK_ORDER = {task: i for i, task in enumerate(TASKS)}
AVERAGES = {"safety": "safety avg", "custom": "custom-policy avg"}
"""Benchmark kinds with an average column, and that column's header."""


@dataclass(frozen=True)
class Column:
    """One Table-1 column: a benchmark and a task."""

    benchmark: str
    task: str
    kind: str  # safety | custom

    @property
    def label(self) -> str:
        """Header text, e.g. ``WildGuardTest (prompt)``."""
        return f"{self.benchmark} ({TASK_SHORT.get(self.task, self.task)})"


@dataclass
class ModelRow:
    """One Table-1 row: a model in one mode, its cells and attributes."""

    label: str
    model: str
    mode: str
    cells: dict[Column, dict[str, Any]] = field(default_factory=dict)
    train_size: int | None = None
    budget: int | None = None

    def average(self, kind: str) -> tuple[float | None, float | None]:
        """Mean F1 over this row's harm-task cells of ``kind``, and its std over runs if known."""
        cells = [c for col, c in self.cells.items() if col.kind == kind and col.task in HARM_TASKS]
        if not cells:
            return None, None
        mean = sum(c["f1_mean"] for c in cells) / len(cells)
        runs = [c.get("f1_runs") for c in cells]
        if all(runs) and len({len(r) for r in runs}) == 1:
            import numpy as np

            per_run = np.mean(np.asarray(runs, dtype=float), axis=0)
            return mean, float(per_run.std(ddof=0))
        return mean, None

    def latency(self) -> float | None:
        """Mean latency per sample over all cells, weighted by support."""
        pairs = [(c["latency_s_mean"], c["support"]) for c in self.cells.values()
                 if c.get("latency_s_mean") is not None]
        total = sum(w for _, w in pairs)
        return sum(v * w for v, w in pairs) / total if total else None


@dataclass
class ReportData:
    """Everything a report needs: ordered columns and model rows, and the tables they came from."""

    title: str
    columns: list[Column]
    rows: list[ModelRow]
    sources: list[str]


_NAME_ATTR = re.compile(r"\b(size|train_size|budget)\s*=\s*([0-9.]+[kK]?)")


def parse_count(text: Any) -> int | None:
    """``500``, ``"2.5k"``, ``"5K"`` -> int; None when it is not a count."""
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return int(text)
    s = str(text).strip().lower().replace("_", "")
    scale = 1000 if s.endswith("k") else 1
    try:
        return int(round(float(s[:-1] if scale > 1 else s) * scale))
    except ValueError:
        return None


def _name_attrs(model: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in _NAME_ATTR.findall(model):
        count = parse_count(value)
        if count is not None:
            out["budget" if key == "budget" else "train_size"] = count
    return out


def load_metrics(metrics_uris: Sequence[str]) -> list[dict[str, Any]]:
    """Records of all metrics tables, validated; later duplicates replace earlier ones."""
    from guardsmith import storage

    if not metrics_uris:
        raise GuardsmithError("no metrics tables given")
    merged: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for uri in metrics_uris:
        for rec in storage.read_table(uri, "metrics").to_pylist():
            key = (rec["model"], rec.get("mode") or "", rec["benchmark"], rec["task"])
            merged[key] = rec
    return list(merged.values())


def _column(rec: Mapping[str, Any]) -> Column:
    return Column(rec["benchmark"], rec["task"], rec.get("kind") or "safety")


def assemble(records: Sequence[Mapping[str, Any]], title: str, sources: Sequence[str] = ()) -> ReportData:
    """Arrange metrics records into Table-1 columns and model rows."""
    col_order: dict[Column, int] = {}
    for rec in records:
        col_order.setdefault(_column(rec), len(col_order))
    columns = sorted(col_order, key=lambda c: (c.kind == "custom", _TASK_ORDER.get(c.task, 9), col_order[c]))
    modes_of: dict[str, set[str]] = {}
    for rec in records:
        modes_of.setdefault(rec["model"], set()).add(rec.get("mode") or "")
    rows: dict[tuple[str, str], ModelRow] = {}
    for rec in records:
        model, mode = rec["model"], rec.get("mode") or ""
        key = (model, mode)
        if key not in rows:
            label = f"{model} ({mode})" if len(modes_of[model]) > 1 and mode else model
            attrs = _name_attrs(model)
            rows[key] = ModelRow(label=label, model=model, mode=mode,
                                 train_size=parse_count(rec.get("train_size")) or attrs.get("train_size"),
                                 budget=parse_count(rec.get("budget")) or attrs.get("budget"))
        rows[key].cells[_column(rec)] = dict(rec)
    return ReportData(title=title, columns=columns, rows=list(rows.values()), sources=list(sources))


def _fmt(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def table1(data: ReportData) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Header, body cells (text) and a best-in-column flag per cell of Table 1."""
    avgs = [k for k in AVERAGES if any(c.kind == k for c in data.columns)]
    header = ["model"] + [c.label for c in data.columns] + [AVERAGES[k] for k in avgs]
    values: list[list[float | None]] = []
    body: list[list[str]] = []
    for row in data.rows:
        vals: list[float | None] = []
        cells = [row.label]
        for col in data.columns:
            c = row.cells.get(col)
            vals.append(None if c is None else c["f1_mean"])
            cells.append("-" if c is None else _fmt(c["f1_mean"], c["f1_std"]))
        for kind in avgs:
            mean, std = row.average(kind)
            vals.append(mean)
            partial = mean is not None and any(
                c.kind == kind and c.task in HARM_TASKS and c not in row.cells for c in data.columns)
            cells.append(_fmt(mean, std) + (" †" if partial else ""))
        values.append(vals)
        body.append(cells)
    best: list[list[bool]] = [[False] * len(header) for _ in body]
    if len(body) > 1:
        for j in range(len(header) - 1):
            column = [v[j] for v in values if v[j] is not None]
            if column and max(column) - min(column) > 1e-12:
                top = max(column)
                for i, v in enumerate(values):
                    best[i][j + 1] = v[j] is not None and abs(v[j] - top) < 1e-12
    return header, body, best


def latency_table(data: ReportData) -> tuple[list[str], list[list[str]]]:
    """Latency per sample and parse-error rate per model and mode."""
    header = ["model", "mode", "latency per sample (s)", "parse-error rate"]
    body = []
    for row in data.rows:
        lat = row.latency()
        supports = [c["support"] for c in row.cells.values()]
        errors = sum(c["parse_error_rate"] * c["support"] for c in row.cells.values())
        rate = errors / sum(supports) if sum(supports) else 0.0
        body.append([row.label, row.mode or "-", "-" if lat is None else f"{lat:.4f}", f"{rate:.3f}"])
    return header, body


def details_table(data: ReportData) -> tuple[list[str], list[list[str]]]:
    """One line per model, benchmark and task with every metric."""
    header = ["model", "benchmark", "task", "kind", "k", "support", "positives", "F1",
              "precision", "recall", "parse-error rate", "latency (s)"]
    body = []
    for row in data.rows:
        for col in data.columns:
            c = row.cells.get(col)
            if c is None:
                continue
            lat = c.get("latency_s_mean")
            body.append([row.label, col.benchmark, col.task, col.kind, str(c["k"]), str(c["support"]),
                         "-" if c.get("positives") is None else str(c["positives"]),
                         _fmt(c["f1_mean"], c["f1_std"]), f"{c['precision_mean']:.3f}",
                         f"{c['recall_mean']:.3f}", f"{c['parse_error_rate']:.3f}",
                         "-" if lat is None else f"{lat:.4f}"])
    return header, body

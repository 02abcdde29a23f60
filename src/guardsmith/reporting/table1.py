"""Table-1 data: metrics records arranged as the reasoning-guard paper lays out its results (seed 002).

Every metrics record is one **cell**: a row (model, mode) and a column (benchmark, task). Optional
metrics columns written by ``evaluate`` are used when present: ``mode``, ``kind`` (``safety`` /
``custom``), ``f1_runs`` (per-run F1, for the std of the averages), ``positives``,
``train_size``, ``budget``, ``model_uri`` and ``format`` (a row of a guard in another format than
``guardsmith`` is labelled ``name [format]``). Without ``kind`` every benchmark counts as safety;
without ``f1_runs`` the averages have no std; ``size=N`` / ``budget=N`` in a model name are used
when the columns are missing. When the same (model, mode, benchmark, task) appears in several
tables, the last one wins.

Report layout (cell -> column):

- **Per-benchmark table** (the paper's Tables 5-7): one column per benchmark x task, safety
  columns first (prompt harm, response harm, refusal), then custom-policy columns by suite.
- **Table 1** (the paper's Tables 1 and 9), two groups of columns:

  - *Safety benchmarks*: ``prompt`` = mean of the row's ``prompt_harm`` cells over the safety
    benchmarks (Table 5's Avg: WildGuardTest, Aegis 2.0, OpenAI Moderation, SimpleSafetyTests,
    ToxicChat); ``response`` = mean of its ``response_harm`` cells (Table 6's Avg: XSTest,
    JailbreakBench, WildGuardTest, Aegis 2.0); ``safety avg`` = mean over all those cells at
    once (nine in the paper's suite), **not** the mean of ``prompt`` and ``response``: the paper's
    figures follow the pooled form (R 5k: prompt 0.852, response 0.830, Avg 0.842 = 7.580 / 9,
    where (0.852 + 0.830) / 2 would give 0.841).
  - *Custom policy*: each custom benchmark belongs to a **suite** (:func:`suite_of`): a name that
    starts with ``dyna`` (DynaGuard, DynaBench) -> ``DynaGuard``, with ``cosa`` (CoSA,
    CoSApien-game, ...) -> ``CoSA``, any other name is a suite of its own. A suite's column is the
    mean of its harm-task cells (the five CoSApien scenarios -> one CoSA figure; DynaGuard
    evaluated as one table is one cell, as in the paper, whose DynaGuard figure is F1 over the
    whole test set). ``custom-policy avg`` = mean of the suite figures, so DynaGuard and CoSA
    count once each (Table 1: R 5k, DynaGuard 0.879, CoSA 0.862 -> 0.871).

- ``response_refusal`` cells appear in the per-benchmark table only; no average uses them.
- Std of a figure: the population std over runs of the per-run figures (each run's F1 averaged
  the same way), when every cell it uses has ``f1_runs`` of the same length; else none.
- A figure is *partial* (``†``) when the row lacks a cell that the figure covers for some
  other row (or, for the custom average, a whole suite).

Latency relative to NR (:func:`latency_lines`): for each row with latency, the overhead
``latency / reference latency - 1``. The reference is the NR-mode row of the same model (same
``model_uri``, or, without one, the same name once the `` (R)`` / `` (NR)`` suffix is dropped);
a row without one (an R-only guard) is compared with the NR row of a named baseline model, when
one is given. Both latencies are support-weighted means over the benchmark x task cells the two
rows share, so that both are measured on the same samples.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.reporting.render import Table
from guardsmith.vocabulary import HARM_TASKS, TASK_SHORT, TASKS

_TASK_ORDER = {task: i for i, task in enumerate(TASKS)}
AVERAGES = {"safety": "safety avg", "custom": "custom-policy avg"}
"""Benchmark kinds with an average column, and that column's header."""
SUITES = (("DynaGuard", "dyna"), ("CoSA", "cosa"))
"""Custom-policy suites known by name: (suite, prefix of its benchmark names, case-insensitive)."""
GROUPS = {"safety": "Safety benchmarks", "custom": "Custom policy"}
"""Header of each group of Table-1 columns."""


def suite_of(benchmark: str) -> str:
    """The custom-policy suite of a benchmark: DynaGuard, CoSA, or the benchmark itself."""
    low = benchmark.lower()
    return next((suite for suite, prefix in SUITES if low.startswith(prefix)), benchmark)


@dataclass(frozen=True)
class Column:
    """One per-benchmark column: a benchmark and a task (``suite`` only for custom benchmarks)."""

    benchmark: str
    task: str
    kind: str  # safety | custom
    suite: str = ""

    @property
    def label(self) -> str:
        """Header text, e.g. ``WildGuardTest (prompt)``."""
        return f"{self.benchmark} ({TASK_SHORT.get(self.task, self.task)})"


@dataclass(frozen=True)
class Figure:
    """A Table-1 number: mean F1, per-run values when known, partial when cells are missing."""

    mean: float
    runs: tuple[float, ...] | None = None
    partial: bool = False

    @property
    def std(self) -> float | None:
        """Population std over runs, or None without per-run values."""
        if not self.runs:
            return None
        from guardsmith.metrics import mean_std

        return mean_std(self.runs)[1]


def mean_figure(parts: Sequence[Figure], partial: bool = False) -> Figure | None:
    """Unweighted mean of ``parts`` (per run too, when all parts have runs of one length)."""
    if not parts:
        return None
    mean = sum(p.mean for p in parts) / len(parts)
    runs = None
    if all(p.runs for p in parts) and len({len(p.runs or ()) for p in parts}) == 1:
        runs = tuple(sum(vals) / len(vals) for vals in zip(*(p.runs or () for p in parts)))
    return Figure(mean, runs, partial or any(p.partial for p in parts))


@dataclass
class ModelRow:
    """One row: a model in one mode, its cells and attributes."""

    label: str
    model: str
    mode: str
    model_uri: str = ""
    cells: dict[Column, dict[str, Any]] = field(default_factory=dict)
    train_size: int | None = None
    budget: int | None = None
    trained_by: str | None = None
    """The stage that trained the model (sft, continual); size and budget curves never join stages."""

    @property
    def base_name(self) -> str:
        """The model name without the `` (R)`` / `` (NR)`` suffix evaluate adds when it runs two modes."""
        suffix = f" ({self.mode})"
        return self.model[: -len(suffix)] if self.mode and self.model.endswith(suffix) else self.model

    @property
    def identity(self) -> str:
        """What makes two rows the same model: its URI, else its name without the mode suffix."""
        return self.model_uri or self.base_name

    def cell(self, col: Column) -> Figure | None:
        """The F1 of one cell as a :class:`Figure`."""
        c = self.cells.get(col)
        if c is None:
            return None
        return Figure(c["f1_mean"], tuple(c["f1_runs"]) if c.get("f1_runs") else None)

    def latency(self, columns: Sequence[Column] | None = None) -> float | None:
        """Mean latency per sample over ``columns`` (default: all cells), weighted by support."""
        cols = self.cells if columns is None else columns
        pairs = [(self.cells[c]["latency_s_mean"], self.cells[c]["support"]) for c in cols
                 if c in self.cells and self.cells[c].get("latency_s_mean") is not None]
        total = sum(w for _, w in pairs)
        return sum(v * w for v, w in pairs) / total if total else None


@dataclass(frozen=True)
class SummaryColumn:
    """One Table-1 column: ``key`` (``prompt``, ``response``, ``safety``, ``suite:<name>``,
    ``custom``), its header and group (``safety`` / ``custom``)."""

    key: str
    label: str
    group: str


@dataclass
class ReportData:
    """Everything a report needs: ordered columns and model rows, and the tables they came from."""

    title: str
    columns: list[Column]
    rows: list[ModelRow]
    sources: list[str]
    latency_baseline: str | None = None

    def suites(self) -> list[str]:
        """Custom-policy suites with a harm-task column: DynaGuard, CoSA, then others as they appear."""
        return list(dict.fromkeys(c.suite for c in self.columns if c.kind == "custom" and c.task in HARM_TASKS))

    def summary_columns(self) -> list[SummaryColumn]:
        """The Table-1 columns these metrics can fill, in the paper's order."""
        out = []
        safety = {c.task for c in self.columns if c.kind == "safety" and c.task in HARM_TASKS}
        if safety:
            out += [SummaryColumn(key, TASK_SHORT[task], "safety") for key, task in
                    (("prompt", "prompt_harm"), ("response", "response_harm")) if task in safety]
            out.append(SummaryColumn("safety", AVERAGES["safety"], "safety"))
        suites = self.suites()
        if suites:
            out += [SummaryColumn(f"suite:{s}", s, "custom") for s in suites]
            out.append(SummaryColumn("custom", AVERAGES["custom"], "custom"))
        return out

    def _mean_over(self, row: ModelRow, cols: Sequence[Column]) -> Figure | None:
        parts = [f for f in (row.cell(c) for c in cols) if f is not None]
        return mean_figure(parts, partial=len(parts) < len(cols))

    def figures(self, row: ModelRow) -> dict[str, Figure | None]:
        """Every Table-1 figure of ``row`` by :class:`SummaryColumn` key (see the module doc)."""
        harm = [c for c in self.columns if c.task in HARM_TASKS]
        safety = [c for c in harm if c.kind == "safety"]
        out: dict[str, Figure | None] = {
            "prompt": self._mean_over(row, [c for c in safety if c.task == "prompt_harm"]),
            "response": self._mean_over(row, [c for c in safety if c.task == "response_harm"]),
            "safety": self._mean_over(row, safety),
        }
        suites = self.suites()
        for suite in suites:
            out[f"suite:{suite}"] = self._mean_over(row, [c for c in harm if c.kind == "custom" and c.suite == suite])
        parts = [f for f in (out[f"suite:{s}"] for s in suites) if f is not None]
        out["custom"] = mean_figure(parts, partial=len(parts) < len(suites))
        return out


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
    kind = rec.get("kind") or "safety"
    return Column(rec["benchmark"], rec["task"], kind, suite_of(rec["benchmark"]) if kind == "custom" else "")


def assemble(records: Sequence[Mapping[str, Any]], title: str, sources: Sequence[str] = (),
             latency_baseline: str | None = None) -> ReportData:
    """Arrange metrics records into columns and model rows; check the named latency baseline."""
    col_order: dict[Column, int] = {}
    for rec in records:
        col_order.setdefault(_column(rec), len(col_order))
    suite_rank = {suite: i for i, (suite, _) in enumerate(SUITES)}
    suite_first: dict[str, int] = {}
    for col, i in col_order.items():
        suite_first.setdefault(col.suite, i)

    def order(c: Column) -> tuple:
        if c.kind != "custom":
            return (0, 0, 0, _TASK_ORDER.get(c.task, 9), col_order[c])
        return (1, suite_rank.get(c.suite, len(SUITES)), suite_first[c.suite], _TASK_ORDER.get(c.task, 9),
                col_order[c])

    columns = sorted(col_order, key=order)
    modes_of: dict[str, set[str]] = {}
    for rec in records:
        modes_of.setdefault(rec["model"], set()).add(rec.get("mode") or "")
    rows: dict[tuple[str, str], ModelRow] = {}
    for rec in records:
        model, mode = rec["model"], rec.get("mode") or ""
        key = (model, mode)
        if key not in rows:
            fmt = rec.get("format")
            shown = model if fmt in (None, "", "guardsmith") else f"{model} [{fmt}]"  # a baseline's format
            label = f"{shown} ({mode})" if len(modes_of[model]) > 1 and mode else shown
            attrs = _name_attrs(model)
            rows[key] = ModelRow(label=label, model=model, mode=mode, model_uri=rec.get("model_uri") or "",
                                 train_size=parse_count(rec.get("train_size")) or attrs.get("train_size"),
                                 budget=parse_count(rec.get("budget")) or attrs.get("budget"),
                                 trained_by=rec.get("trained_by") or None)
        rows[key].cells[_column(rec)] = dict(rec)
    data = ReportData(title=title, columns=columns, rows=list(rows.values()), sources=list(sources),
                      latency_baseline=latency_baseline or None)
    _baseline_row(data)  # a wrong name fails before anything is written
    return data


def _fmt(fig: Figure | None) -> str:
    if fig is None:
        return "-"
    std = fig.std
    text = f"{fig.mean:.3f}" if std is None else f"{fig.mean:.3f} ± {std:.3f}"
    return text + (" †" if fig.partial else "")


def _cell_text(c: Mapping[str, Any] | None) -> str:
    return "-" if c is None else f"{c['f1_mean']:.3f} ± {c['f1_std']:.3f}"


def _best(values: list[list[float | None]]) -> list[list[bool]]:
    """Flags (model column included, never best) of the highest value per column, when values differ."""
    best = [[False] * (len(v) + 1) for v in values]
    if len(values) > 1:
        for j in range(len(values[0]) if values else 0):
            column = [v[j] for v in values if v[j] is not None]
            if column and max(column) - min(column) > 1e-12:
                top = max(column)
                for i, v in enumerate(values):
                    best[i][j + 1] = v[j] is not None and abs(v[j] - top) < 1e-12
    return best


def table1(data: ReportData) -> Table:
    """Table 1: safety prompt / response / avg, one column per custom-policy suite, custom avg."""
    cols = data.summary_columns()
    body, values = [], []
    for row in data.rows:
        figs = data.figures(row)
        shown = [figs[c.key] for c in cols]
        body.append([row.label] + [_fmt(f) for f in shown])
        values.append([None if f is None else f.mean for f in shown])
    spans = {g: sum(c.group == g for c in cols) for g in GROUPS}
    groups = [("", 1)] + [(GROUPS[g], n) for g, n in spans.items() if n]
    return Table(["model"] + [c.label for c in cols], body, _best(values), groups=groups)


def benchmark_table(data: ReportData) -> Table:
    """Harmful F1 per benchmark and task (cells mean ± std over the k runs)."""
    body, values = [], []
    for row in data.rows:
        body.append([row.label] + [_cell_text(row.cells.get(c)) for c in data.columns])
        values.append([row.cells[c]["f1_mean"] if c in row.cells else None for c in data.columns])
    return Table(["model"] + [c.label for c in data.columns], body, _best(values))


def _baseline_row(data: ReportData) -> ModelRow | None:
    name = data.latency_baseline
    if not name:
        return None
    nr = [r for r in data.rows if r.mode == "NR"]
    for row in nr:
        if name in (row.model, row.label, row.base_name):
            return row
    known = ", ".join(sorted({r.model for r in nr})) or "none"
    raise GuardsmithError(f"latency_baseline {name!r}: no NR-mode metrics of that model "
                          f"(models with NR rows: {known})")


@dataclass
class LatencyLine:
    """Latency of one row and its overhead relative to its NR reference row (None when unknown)."""

    row: ModelRow
    latency: float | None
    reference: ModelRow | None
    overhead: float | None


def latency_lines(data: ReportData) -> list[LatencyLine]:
    """Per row: latency per sample, its NR reference and the overhead ``latency / reference - 1``."""
    own_nr: dict[str, ModelRow] = {}
    for row in data.rows:
        if row.mode == "NR":
            own_nr.setdefault(row.identity, row)
    baseline = _baseline_row(data)
    lines = []
    for row in data.rows:
        ref = own_nr.get(row.identity)
        if ref is None or ref is row:
            ref = baseline if baseline is not row else None
        overhead = None
        if ref is not None:
            shared = [c for c in row.cells if c in ref.cells
                      and row.cells[c].get("latency_s_mean") is not None
                      and ref.cells[c].get("latency_s_mean") is not None]
            mine, theirs = row.latency(shared), ref.latency(shared)
            if mine is not None and theirs:
                overhead = mine / theirs - 1
        lines.append(LatencyLine(row, row.latency(), ref, overhead))
    return lines


def latency_table(data: ReportData) -> Table:
    """Latency per sample, overhead relative to NR and parse-error rate per model and mode."""
    header = ["model", "mode", "NR reference", "latency per sample (s)", "overhead vs NR", "parse-error rate"]
    body = []
    for line in latency_lines(data):
        row = line.row
        supports = sum(c["support"] for c in row.cells.values())
        errors = sum(c["parse_error_rate"] * c["support"] for c in row.cells.values())
        rate = errors / supports if supports else 0.0
        body.append([row.label, row.mode or "-", "-" if line.reference is None else line.reference.label,
                     "-" if line.latency is None else f"{line.latency:.4f}",
                     "-" if line.overhead is None else f"{100 * line.overhead:+.1f}%", f"{rate:.3f}"])
    return Table(header, body, left=3)


def details_table(data: ReportData) -> Table:
    """One line per model, benchmark and task with every metric."""
    header = ["model", "benchmark", "task", "kind", "suite", "k", "support", "positives", "F1",
              "precision", "recall", "parse-error rate", "latency (s)"]
    body = []
    for row in data.rows:
        for col in data.columns:
            c = row.cells.get(col)
            if c is None:
                continue
            lat = c.get("latency_s_mean")
            body.append([row.label, col.benchmark, col.task, col.kind, col.suite or "-", str(c["k"]),
                         str(c["support"]), "-" if c.get("positives") is None else str(c["positives"]),
                         _cell_text(c), f"{c['precision_mean']:.3f}",
                         f"{c['recall_mean']:.3f}", f"{c['parse_error_rate']:.3f}",
                         "-" if lat is None else f"{lat:.4f}"])
    return Table(header, body, left=5)

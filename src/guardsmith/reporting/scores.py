"""Report sections for guards of any format: the formats used with their parse rules, and the
scores of guards that expose P(unsafe) (AUROC, AUPRC, threshold sweep).

They read the optional metrics columns ``evaluate`` writes: ``format`` (the guard format a row's
model was prompted and parsed in, :mod:`guardsmith.guard.formats`), ``scored``, ``auroc``,
``auprc`` and ``sweep`` (F1 / precision / recall when P(unsafe) >= threshold). Metrics tables
without them (older runs, ``guardsmith score`` tables) simply give no such section.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guardsmith.reporting.render import Section, Table
from guardsmith.reporting.table1 import ReportData

PARSE_NOTE = (
    "Each guard is prompted and read in its format. An output the format's rule cannot read (a parse "
    "failure) counts as wrong: a false negative on a positive row, a false positive on a negative one. "
    "Parse-error rates: per model in \"Latency and parse errors\", per cell in \"Details\"."
)
SCORES_NOTE = (
    "P(unsafe): the probability of the format's unsafe verdict word right after its answer prefix "
    "(normalised over the two verdict words), on the rows whose verdict answers the task. AUROC and "
    "AUPRC (average precision) over the scored rows; '-' where those rows hold one class only. "
    "Best threshold: highest F1 of the sweep (0.05 .. 0.95, positive when P(unsafe) >= threshold)."
)
SWEEP_NOTE = "Cells: F1 / precision / recall of the positive class when P(unsafe) >= threshold."


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def formats_section(data: ReportData) -> Section | None:
    """The guard formats of the rows (format, models, source document, parse rule), with the rule
    that a parse failure counts as wrong; None when no metrics record names a format."""
    from guardsmith.guard.formats import FORMATS

    used: dict[str, list[str]] = {}
    for row in data.rows:
        for name in dict.fromkeys(c.get("format") for c in row.cells.values()):
            if name:
                used.setdefault(name, []).append(row.label)
    if not used:
        return None
    body = []
    for name, labels in used.items():
        fmt = FORMATS.get(name)
        body.append([name, ", ".join(labels), fmt.source if fmt else "-", fmt.parse_rule if fmt else "-"])
    return Section("Guard formats", Table(["format", "models", "source", "parse rule"], body, left=4),
                   notes=[PARSE_NOTE])


def best_threshold(sweep: list[Mapping[str, float]]) -> Mapping[str, float]:
    """The sweep entry with the highest F1 (the lowest threshold among ties)."""
    return max(sweep, key=lambda e: (e["f1"], -e["threshold"]))


def _at(sweep: list[Mapping[str, float]], threshold: float) -> Mapping[str, float] | None:
    return next((e for e in sweep if abs(e["threshold"] - threshold) < 1e-9), None)


def scores_sections(data: ReportData) -> list[Section]:
    """AUROC / AUPRC per model, benchmark and task, then one threshold-sweep table per model row
    with scores; empty when no cell has scores."""
    summary, sweeps = [], []
    for row in data.rows:
        columns = [c for c in data.columns if c in row.cells and row.cells[c].get("sweep")]
        for col in columns:
            cell = row.cells[col]
            best = best_threshold(cell["sweep"])
            half = _at(cell["sweep"], 0.5)
            summary.append([row.label, col.benchmark, col.task, str(cell.get("scored") or 0), _num(cell.get("auroc")),
                            _num(cell.get("auprc")), f"{best['threshold']:.2f}", _num(best["f1"]),
                            "-" if half is None else _num(half["f1"])])
        if columns:
            thresholds = [e["threshold"] for e in row.cells[columns[0]]["sweep"]]
            body = []
            for t in thresholds:
                line = [f"{t:.2f}"]
                for col in columns:
                    e = _at(row.cells[col]["sweep"], t)
                    line.append("-" if e is None else f"{e['f1']:.3f} / {e['precision']:.3f} / {e['recall']:.3f}")
                body.append(line)
            sweeps.append(Section(f"Threshold sweep: {row.label}",
                                  Table(["threshold"] + [c.label for c in columns], body), notes=[SWEEP_NOTE]))
    if not summary:
        return []
    header = ["model", "benchmark", "task", "scored", "AUROC", "AUPRC", "best threshold", "F1 at best", "F1 at 0.50"]
    return [Section("Scores: P(unsafe)", Table(header, summary, left=3), notes=[SCORES_NOTE])] + sweeps

"""Plots of Table-1 data as PNG bytes (matplotlib ``Figure`` objects, no pyplot state)."""
from __future__ import annotations

from guardsmith.reporting.render import figure_png
from guardsmith.reporting.table1 import AVERAGES, ReportData

ATTRIBUTES = {"train_size": ("training examples", "training-set size"),
              "budget": ("sentence budget", "sentence budget")}
"""Model attributes F1 is plotted against: axis label and title words."""


def compact(value: int) -> str:
    """``5000`` -> ``5k``, ``2500`` -> ``2.5k``, ``500`` -> ``500``: tick labels of sizes."""
    if value >= 1000 and value % 100 == 0:
        return f"{value / 1000:g}k"
    return str(value)


def plot_benchmarks(data: ReportData) -> bytes:
    """Grouped bar chart: F1 per benchmark column, one bar per model, std as error bars."""
    import numpy as np
    from matplotlib.figure import Figure

    cols, rows = data.columns, data.rows
    width = 0.8 / max(len(rows), 1)
    fig = Figure(figsize=(max(6.0, 0.9 * len(cols) + 2), 4.2))
    ax = fig.add_subplot()
    x = np.arange(len(cols))
    for i, row in enumerate(rows):
        means = [row.cells[c]["f1_mean"] if c in row.cells else np.nan for c in cols]
        stds = [row.cells[c]["f1_std"] if c in row.cells else 0.0 for c in cols]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=row.label)
    ax.set_xticks(x)
    ax.set_xticklabels([c.label for c in cols], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("harmful F1")
    ax.set_ylim(0, 1.05)
    ax.set_title("F1 per benchmark")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return figure_png(fig)


def attribute_points(data: ReportData, attribute: str, mode: str, kind: str,
                     trained_by: str | None = None) -> list[tuple[int, float, float]]:
    """(value, mean, error) of the ``kind`` average (``safety`` / ``custom``) per attribute value
    among rows of ``mode`` trained by ``trained_by`` (the stage; None: rows that record none). Rows
    sharing a value (a seed sweep) are averaged and the error is their std across rows (population,
    as the paper's Table 4); a single row's error is its std over runs."""
    from guardsmith.metrics import mean_std

    by_value: dict[int, list] = {}
    for row in data.rows:
        fig = data.figures(row)[kind]
        if (row.mode == mode and row.trained_by == trained_by and fig is not None
                and getattr(row, attribute) is not None):
            by_value.setdefault(getattr(row, attribute), []).append(fig)
    points = []
    for value, figs in sorted(by_value.items()):
        if len(figs) == 1:
            points.append((value, figs[0].mean, figs[0].std or 0.0))
        else:
            points.append((value, *mean_std([f.mean for f in figs])))
    return points


def plot_attribute(data: ReportData, attribute: str) -> bytes | None:
    """Average F1 against ``train_size`` or ``budget``; None unless two or more distinct values are known."""
    from matplotlib.figure import Figure

    rows = [r for r in data.rows if getattr(r, attribute) is not None]
    if len({getattr(r, attribute) for r in rows}) < 2:
        return None
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    modes = sorted({r.mode for r in rows})
    stages = sorted({r.trained_by for r in rows}, key=lambda s: (s is None, s or ""))
    plotted: set[int] = set()
    for stage in stages:  # one curve per training stage: an sft and a continual guard are not two sizes
        for mode in modes:
            for kind, name in AVERAGES.items():
                points = attribute_points(data, attribute, mode, kind, stage)
                if len(points) < 2:
                    continue
                words = [name, *([stage] if len(stages) > 1 and stage else []), *([mode] if len(modes) > 1 and mode else [])]
                ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                            marker="o", capsize=3, label=f"{words[0]} ({', '.join(words[1:])})" if words[1:] else name)
                plotted.update(p[0] for p in points)
    if not plotted:
        return None
    values = sorted(plotted)
    if attribute == "train_size" and max(values) > 20 * max(1, min(values)):
        ax.set_xscale("log")
    ax.set_xticks(values)  # ticks at the sizes or budgets trained, not matplotlib's in-between values
    ax.set_xticklabels([compact(v) for v in values], fontsize=8)
    ax.minorticks_off()
    axis, words = ATTRIBUTES[attribute]
    ax.set_xlabel(axis)
    ax.set_ylabel("harmful F1")
    ax.set_title(f"F1 vs {words}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)


def training_curves(data: ReportData) -> dict[str, list[list[float]]]:
    """Model name -> its training loss curve ([[step, loss], ...]) from the training summary beside
    each row's model (``model_uri``); models without one (not trained here, or unreachable) are
    left out."""
    from guardsmith.training import TrainingSummary

    curves: dict[str, list[list[float]]] = {}
    for row in data.rows:
        if not row.model_uri or row.base_name in curves:
            continue
        try:
            summary = TrainingSummary.find(row.model_uri)
        except Exception:  # noqa: BLE001 - a report never fails on a model it cannot read
            summary = None
        if summary is not None and summary.loss_history:
            curves[row.base_name] = summary.loss_history
    return curves


def plot_training_curves(curves: dict[str, list[list[float]]]) -> bytes | None:
    """Training loss per step, one line per model; None without any curve."""
    if not curves:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.add_subplot()
    for name, points in curves.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)

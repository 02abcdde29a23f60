"""Plots of Table-1 data as PNG bytes (matplotlib ``Figure`` objects, no pyplot state)."""
from __future__ import annotations

from guardsmith.reporting.render import figure_png
from guardsmith.reporting.table1 import AVERAGES, ReportData

ATTRIBUTES = {"train_size": ("training examples", "training-set size"),
              "budget": ("sentence budget", "sentence budget")}
"""Model attributes F1 is plotted against: axis label and title words."""


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


def attribute_points(data: ReportData, attribute: str, mode: str, kind: str) -> list[tuple[int, float, float]]:
    """(value, mean, error) of the ``kind`` average (``safety`` / ``custom``) per attribute value
    among rows of ``mode``. Rows sharing a value (a seed sweep) are averaged and the error is their
    std across rows (population, as the paper's Table 4); a single row's error is its std over runs."""
    from guardsmith.metrics import mean_std

    by_value: dict[int, list] = {}
    for row in data.rows:
        fig = data.figures(row)[kind]
        if row.mode == mode and fig is not None and getattr(row, attribute) is not None:
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
    for mode in modes:
        for kind, name in AVERAGES.items():
            points = attribute_points(data, attribute, mode, kind)
            if not points:
                continue
            label = f"{name} ({mode})" if len(modes) > 1 and mode else name
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                        marker="o", capsize=3, label=label)
    values = [getattr(r, attribute) for r in rows]
    if attribute == "train_size" and max(values) > 20 * max(1, min(values)):
        ax.set_xscale("log")
    axis, words = ATTRIBUTES[attribute]
    ax.set_xlabel(axis)
    ax.set_ylabel("harmful F1")
    ax.set_title(f"F1 vs {words}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)

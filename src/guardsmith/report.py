"""Evaluation reports from ``metrics`` tables: a Table-1-style summary in Markdown and HTML, plots.

`build_report(metrics_uris, out_uri, title)` reads one or more metrics tables (e.g. the outputs
of several ``evaluate`` runs) and writes, atomically through :mod:`guardsmith.storage`:

- ``report.md``: Table 1 (rows = models, columns = benchmark x task, cells = harmful F1
  mean ± std over the k runs, plus the *safety avg* and *custom-policy avg* columns), latency
  per sample and mode, a details table (precision, recall, support, parse-error rate), and
  links to the PNG plots;
- ``report.html``: the same, with the plots embedded (base64 PNG);
- ``f1_per_benchmark.png`` and, when at least two models carry the attribute,
  ``f1_vs_train_size.png`` / ``f1_vs_budget.png``.

Optional metrics columns written by ``evaluate`` are used when present: ``mode``, ``kind``
(``safety`` / ``custom``), ``f1_runs`` (per-run F1, for the std of the averages),
``positives``, ``train_size`` and ``budget``. Without them every benchmark counts as safety,
the averages have no std, and ``size=N`` / ``budget=N`` in a model name are used.
Averages are unweighted means over a model's harm-task cells (prompt_harm, response_harm);
refusal cells are shown but not averaged. When the same (model, mode, benchmark, task)
appears in several tables, the last one wins.
"""
from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guardsmith.config import option
from guardsmith.errors import GuardsmithError

HELP = (
    "Rebuild the evaluation report (Markdown, HTML, PNG plots) from one or more metrics tables, "
    "e.g. the outputs of several evaluate runs."
)

TASK_SHORT = {"prompt_harm": "prompt", "response_harm": "response", "response_refusal": "refusal"}
HARM_TASKS = ("prompt_harm", "response_harm")
_TASK_ORDER = {"prompt_harm": 0, "response_harm": 1, "response_refusal": 2}
PLOTS = {"benchmark": "f1_per_benchmark.png", "train_size": "f1_vs_train_size.png",
         "budget": "f1_vs_budget.png"}


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
    """Everything the renderers need: ordered columns and model rows."""

    title: str
    columns: list[Column]
    rows: list[ModelRow]
    sources: list[str]


@dataclass
class ReportResult:
    """URIs of the written report files."""

    markdown: str
    html: str
    plots: list[str]
    models: int
    columns: int

    def __str__(self) -> str:
        return "\n".join([f"report: {self.markdown}", f"html: {self.html}",
                          f"{self.models} model rows x {self.columns} benchmark columns, "
                          f"{len(self.plots)} plots"])


@dataclass
class ReportConfig:
    """Settings of the ``report`` step."""

    metrics: list[str] = option(help="Metrics table URIs (one or more evaluate outputs).")
    output: str = option(help="Output folder URI for report.md, report.html and the PNG plots.")
    title: str = option("Guard evaluation", "Report title.")


CONFIG = ReportConfig


def run(cfg: ReportConfig) -> ReportResult:
    """Build the report described by ``cfg``."""
    return build_report(cfg.metrics, cfg.output, cfg.title)


# --------------------------------------------------------------------------- data

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


def assemble(records: Sequence[Mapping[str, Any]], title: str, sources: Sequence[str] = ()) -> ReportData:
    """Arrange metrics records into Table-1 columns and model rows."""
    col_order: dict[Column, int] = {}
    for rec in records:
        col = Column(rec["benchmark"], rec["task"], rec.get("kind") or "safety")
        col_order.setdefault(col, len(col_order))
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
        col = Column(rec["benchmark"], rec["task"], rec.get("kind") or "safety")
        rows[key].cells[col] = dict(rec)
    return ReportData(title=title, columns=columns, rows=list(rows.values()), sources=list(sources))


# --------------------------------------------------------------------------- text

def _fmt(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def _has_kind(data: ReportData, kind: str) -> bool:
    return any(c.kind == kind for c in data.columns)


def table1(data: ReportData) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Header, body cells (text) and a best-in-column flag per cell of Table 1."""
    header = ["model"] + [c.label for c in data.columns]
    avgs = [k for k in ("safety", "custom") if _has_kind(data, k)]
    header += [{"safety": "safety avg", "custom": "custom-policy avg"}[k] for k in avgs]
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
    """Latency per sample per model and mode."""
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


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]],
              best: Sequence[Sequence[bool]] | None = None, left: int = 1) -> list[str]:
    lines = ["| " + " | ".join(map(_md_escape, header)) + " |",
             "|" + "|".join(["---"] * left + ["---:"] * (len(header) - left)) + "|"]
    for i, cells in enumerate(body):
        shown = [f"**{c}**" if best and best[i][j] else c for j, c in enumerate(cells)]
        lines.append("| " + " | ".join(map(_md_escape, shown)) + " |")
    return lines


_LEGEND = (
    "Cells: F1 of the harmful class, mean ± std (population) over the k generations per sample. "
    "A sample whose output gives no usable label counts as wrong. Averages: unweighted mean over "
    "the model's harm-task cells (safety or custom-policy benchmarks); their std is over runs; "
    "† = the model lacks some of those columns. Best value per column in bold."
)


def render_markdown(data: ReportData, plots: Mapping[str, str]) -> str:
    """The Markdown report; ``plots`` maps plot kind -> file name next to the report."""
    header, body, best = table1(data)
    lines = [f"# {data.title}", ""]
    if data.sources:
        lines += ["Metrics tables: " + ", ".join(f"`{s}`" for s in data.sources), ""]
    lines += ["## Harmful F1 (Table 1)", "", *_md_table(header, body, best), "", _LEGEND, ""]
    lines += ["## Latency and parse errors", "", *_md_table(*latency_table(data), left=2), "",
              "Latency: wall time per generated sample (the k samples of a request come from one "
              "prompt pass; a request's time is shared equally among them).", ""]
    if plots:
        lines += ["## Plots", ""]
        titles = {"benchmark": "F1 per benchmark", "train_size": "F1 vs training-set size",
                  "budget": "F1 vs sentence budget"}
        for kind, name in plots.items():
            lines += [f"![{titles[kind]}]({name})", ""]
    lines += ["## Details", "", *_md_table(*details_table(data), left=4), ""]
    return "\n".join(lines)


def _html_table(header: Sequence[str], body: Sequence[Sequence[str]],
                best: Sequence[Sequence[bool]] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = []
    for i, cells in enumerate(body):
        tds = "".join(
            ('<td class="best">' if best and best[i][j] else "<td>") + f"{html.escape(c)}</td>"
            for j, c in enumerate(cells))
        rows.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}"
    "td.best{font-weight:bold}img{max-width:100%;margin:1em 0}p.note{color:#555}"
)


def render_html(data: ReportData, images: Mapping[str, bytes]) -> str:
    """A self-contained HTML report; ``images`` maps plot kind -> PNG bytes (embedded)."""
    header, body, best = table1(data)
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(data.title)}"
             f"</title><style>{_CSS}</style></head><body>", f"<h1>{html.escape(data.title)}</h1>"]
    if data.sources:
        parts.append("<p class=\"note\">Metrics tables: "
                     + ", ".join(f"<code>{html.escape(s)}</code>" for s in data.sources) + "</p>")
    parts += ["<h2>Harmful F1 (Table 1)</h2>", _html_table(header, body, best),
              f"<p class=\"note\">{html.escape(_LEGEND)}</p>",
              "<h2>Latency and parse errors</h2>", _html_table(*latency_table(data))]
    if images:
        parts.append("<h2>Plots</h2>")
        for kind, png in images.items():
            b64 = base64.b64encode(png).decode("ascii")
            parts.append(f"<img alt=\"{html.escape(kind)}\" src=\"data:image/png;base64,{b64}\">")
    parts += ["<h2>Details</h2>", _html_table(*details_table(data)), "</body></html>"]
    return "\n".join(parts)


# --------------------------------------------------------------------------- plots

def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


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
    return _png(fig)


def plot_attribute(data: ReportData, attribute: str) -> bytes | None:
    """Average F1 against ``train_size`` or ``budget``; None unless two or more rows have it."""
    from matplotlib.figure import Figure

    rows = [r for r in data.rows if getattr(r, attribute) is not None]
    if len({getattr(r, attribute) for r in rows}) < 2:
        return None
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    modes = sorted({r.mode for r in rows})
    for mode in modes:
        for kind, name in (("safety", "safety avg"), ("custom", "custom-policy avg")):
            points = sorted((getattr(r, attribute), *r.average(kind)) for r in rows
                            if r.mode == mode and r.average(kind)[0] is not None)
            if not points:
                continue
            label = f"{name} ({mode})" if len(modes) > 1 and mode else name
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] or 0.0 for p in points],
                        marker="o", capsize=3, label=label)
    if attribute == "train_size" and max(getattr(r, attribute) for r in rows) > 20 * max(
            1, min(getattr(r, attribute) for r in rows)):
        ax.set_xscale("log")
    ax.set_xlabel("training examples" if attribute == "train_size" else "sentence budget")
    ax.set_ylabel("harmful F1")
    ax.set_title("F1 vs " + ("training-set size" if attribute == "train_size" else "sentence budget"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# --------------------------------------------------------------------------- shared helpers
# Public wrappers for other report writers (e.g. guardsmith.stages.boundary_eval).

def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]],
                   best: Sequence[Sequence[bool]] | None = None, left: int = 1) -> list[str]:
    """Lines of a Markdown table: ``left`` left-aligned columns, the rest right-aligned, best cells bold."""
    return _md_table(header, body, best, left)


def html_table(header: Sequence[str], body: Sequence[Sequence[str]],
               best: Sequence[Sequence[bool]] | None = None) -> str:
    """An HTML table (escaped cells; best cells get class ``best``)."""
    return _html_table(header, body, best)


def figure_png(fig: Any) -> bytes:
    """PNG bytes of a matplotlib ``Figure`` (Agg canvas, no pyplot state)."""
    return _png(fig)


def html_image(alt: str, png: bytes) -> str:
    """An ``<img>`` tag with ``png`` embedded as base64."""
    b64 = base64.b64encode(png).decode("ascii")
    return f"<img alt=\"{html.escape(alt)}\" src=\"data:image/png;base64,{b64}\">"


def html_page(title: str, parts: Sequence[str]) -> str:
    """A self-contained HTML page in the report style: the title as heading, then ``parts`` (HTML)."""
    head = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body>")
    return "\n".join([head, f"<h1>{html.escape(title)}</h1>", *parts, "</body></html>"])


# --------------------------------------------------------------------------- entry point

def render_report(data: ReportData, out_uri: str) -> ReportResult:
    """Write the report files for ``data`` under ``out_uri`` (each file atomically)."""
    from guardsmith import storage

    images: dict[str, bytes] = {}
    if data.rows and data.columns:
        images["benchmark"] = plot_benchmarks(data)
        for attribute in ("train_size", "budget"):
            png = plot_attribute(data, attribute)
            if png is not None:
                images[attribute] = png
    plot_uris = []
    for kind, png in images.items():
        uri = storage.join(out_uri, PLOTS[kind])
        storage.write_bytes_atomic(uri, png)
        plot_uris.append(uri)
    md_uri, html_uri = storage.join(out_uri, "report.md"), storage.join(out_uri, "report.html")
    storage.write_bytes_atomic(md_uri, render_markdown(data, {k: PLOTS[k] for k in images}).encode())
    storage.write_bytes_atomic(html_uri, render_html(data, images).encode())
    return ReportResult(markdown=md_uri, html=html_uri, plots=plot_uris, models=len(data.rows),
                        columns=len(data.columns))


def build_report(metrics_uris: Sequence[str] | str, out_uri: str, title: str = "Guard evaluation") -> ReportResult:
    """Read metrics tables and write ``report.md``, ``report.html`` and PNG plots under ``out_uri``."""
    uris = [metrics_uris] if isinstance(metrics_uris, str) else list(metrics_uris)
    records = load_metrics(uris)
    if not records:
        raise GuardsmithError(f"the metrics tables {', '.join(uris)} hold no rows")
    return render_report(assemble(records, title, uris), out_uri)

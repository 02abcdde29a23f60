"""The evaluation report: Table 1, latency and details tables and plots, as Markdown, HTML and PNG.

`build_report(metrics_uris, out_uri, title)` reads one or more metrics tables (e.g. the outputs
of several ``evaluate`` runs) and writes, each file atomically through :mod:`guardsmith.storage`:

- ``report.md``: Table 1 (rows = models, columns = benchmark x task, cells = harmful F1
  mean ± std over the k runs, plus the *safety avg* and *custom-policy avg* columns), latency
  per sample and mode, a details table (precision, recall, support, parse-error rate), and
  links to the PNG plots;
- ``report.html``: the same, with the plots embedded (base64 PNG);
- ``f1_per_benchmark.png`` and, when at least two models carry the attribute,
  ``f1_vs_train_size.png`` / ``f1_vs_budget.png``.

How records become Table 1 is described in :mod:`guardsmith.reporting.table1`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from guardsmith.errors import GuardsmithError
from guardsmith.reporting.plots import ATTRIBUTES, plot_attribute, plot_benchmarks
from guardsmith.reporting.render import Document, Image, Section, Table, render_html, render_markdown
from guardsmith.reporting.table1 import (
    ReportData, assemble, details_table, latency_table, load_metrics, table1,
)

PLOTS = {"benchmark": "f1_per_benchmark.png", "train_size": "f1_vs_train_size.png",
         "budget": "f1_vs_budget.png"}
PLOT_TITLES = {"benchmark": "F1 per benchmark", "train_size": "F1 vs training-set size",
               "budget": "F1 vs sentence budget"}

LEGEND = (
    "Cells: F1 of the harmful class, mean ± std (population) over the k generations per sample. "
    "A sample whose output gives no usable label counts as wrong. Averages: unweighted mean over "
    "the model's harm-task cells (safety or custom-policy benchmarks); their std is over runs; "
    "† = the model lacks some of those columns. Best value per column in bold."
)
LATENCY_NOTE = (
    "Latency: wall time per generated sample (the k samples of a request come from one "
    "prompt pass; a request's time is shared equally among them)."
)


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


def plots(data: ReportData) -> dict[str, bytes]:
    """PNG bytes per plot kind: F1 per benchmark, and F1 vs each attribute two or more rows have."""
    images: dict[str, bytes] = {}
    if data.rows and data.columns:
        images["benchmark"] = plot_benchmarks(data)
        for attribute in ATTRIBUTES:
            png = plot_attribute(data, attribute)
            if png is not None:
                images[attribute] = png
    return images


def document(data: ReportData, images: Mapping[str, bytes]) -> Document:
    """The report as a :class:`~guardsmith.reporting.render.Document`; ``images``: plot kind -> PNG."""
    sections = [Section("Harmful F1 (Table 1)", Table(*table1(data)), notes=[LEGEND]),
                Section("Latency and parse errors", Table(*latency_table(data), left=2), notes=[LATENCY_NOTE])]
    if images:
        sections.append(Section("Plots", images=[Image(PLOT_TITLES[k], PLOTS[k], png) for k, png in images.items()]))
    sections.append(Section("Details", Table(*details_table(data), left=4)))
    notes = ["Metrics tables: " + ", ".join(f"`{s}`" for s in data.sources)] if data.sources else []
    return Document(data.title, sections, notes)


def render_report(data: ReportData, out_uri: str) -> ReportResult:
    """Write the report files for ``data`` under ``out_uri`` (each file atomically)."""
    from guardsmith import storage

    images = plots(data)
    plot_uris = []
    for kind, png in images.items():
        uri = storage.join(out_uri, PLOTS[kind])
        storage.write_bytes_atomic(uri, png)
        plot_uris.append(uri)
    doc = document(data, images)
    md_uri, html_uri = storage.join(out_uri, "report.md"), storage.join(out_uri, "report.html")
    storage.write_bytes_atomic(md_uri, render_markdown(doc).encode())
    storage.write_bytes_atomic(html_uri, render_html(doc).encode())
    return ReportResult(markdown=md_uri, html=html_uri, plots=plot_uris, models=len(data.rows),
                        columns=len(data.columns))


def build_report(metrics_uris: Sequence[str] | str, out_uri: str, title: str = "Guard evaluation") -> ReportResult:
    """Read metrics tables and write ``report.md``, ``report.html`` and PNG plots under ``out_uri``."""
    uris = [metrics_uris] if isinstance(metrics_uris, str) else list(metrics_uris)
    records = load_metrics(uris)
    if not records:
        raise GuardsmithError(f"the metrics tables {', '.join(uris)} hold no rows")
    return render_report(assemble(records, title, uris), out_uri)

"""The evaluation report: Table 1, per-benchmark, latency and details tables and plots, as Markdown, HTML and PNG.

`build_report(metrics_uris, out_uri, title, latency_baseline)` reads one or more metrics tables
(e.g. the outputs of several ``evaluate`` runs) and writes, each file atomically through
:mod:`guardsmith.storage`:

- ``report.md``: Table 1 in the paper's layout (safety benchmarks: *prompt*, *response*, *safety
  avg*; custom policy: one column per suite, e.g. *DynaGuard* and *CoSA*, and *custom-policy
  avg*), harmful F1 per benchmark and task (mean ± std over the k runs), latency per sample with
  the overhead relative to NR per mode, a details table (precision, recall, support, parse-error
  rate), the guard formats used with their parse rules, AUROC / AUPRC and a threshold sweep per
  guard with P(unsafe) scores (:mod:`guardsmith.reporting.scores`), and links to the PNG plots;
- ``report.html``: the same, with Table 1's column groups as a header row and the plots embedded
  (base64 PNG);
- ``f1_per_benchmark.png`` and, when at least two distinct values are known,
  ``f1_vs_train_size.png`` / ``f1_vs_budget.png`` (models sharing a value, e.g. a seed sweep,
  are averaged; the error bar is their std).

Which cell lands in which column and how each average is formed is described in
:mod:`guardsmith.reporting.table1` (and ``docs/stages/evaluate.md``, "Report layout").
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from guardsmith.errors import GuardsmithError
from guardsmith.reporting.plots import (ATTRIBUTES, plot_attribute, plot_benchmarks, plot_training_curves,
                                        training_curves)
from guardsmith.reporting.render import Document, Image, Section, render_html, render_markdown
from guardsmith.reporting.scores import formats_section, scores_sections
from guardsmith.reporting.table1 import (
    ReportData, assemble, benchmark_table, details_table, latency_table, load_metrics, table1,
)

PLOTS = {"benchmark": "f1_per_benchmark.png", "train_size": "f1_vs_train_size.png",
         "budget": "f1_vs_budget.png", "training": "training_loss.png"}
PLOT_TITLES = {"benchmark": "F1 per benchmark", "train_size": "F1 vs training-set size",
               "budget": "F1 vs sentence budget", "training": "Training loss of the evaluated guards"}

LEGEND = (
    "Harmful F1 (mean ± population std over the k runs; a sample whose output gives no usable label "
    "counts as wrong). Safety benchmarks: prompt = mean of the prompt-harm cells, response = mean of "
    "the response-harm cells, safety avg = mean of all those cells together. Custom policy: one "
    "column per suite (the mean of its cells: the CoSApien scenarios make one CoSA figure), "
    "custom-policy avg = mean of the suites, each counted once. Std of an average: over the per-run "
    "averages. † = the model lacks some cells of that figure. Best value per column in bold."
)
BENCHMARK_NOTE = "Cells: harmful F1 (refusal F1 for refusal columns), mean ± std over the k runs."
LATENCY_NOTE = (
    "Latency: wall time per generated sample (the k samples of a request come from one prompt "
    "pass; a request's time is shared equally among them), support-weighted over the cells. "
    "Overhead vs NR = latency / latency of the NR reference - 1, both over the benchmark x task "
    "cells the two rows share; the reference is the same model's NR-mode row, else the named "
    "NR baseline (`latency_baseline`). The paper: NR 0.019 s, full reasoning +170.7%, "
    "one-sentence reasoning +34.9%."
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
    """PNG bytes per plot kind: F1 per benchmark, F1 vs each attribute two or more rows have, and the
    training loss of the evaluated guards trained here (from their training summaries)."""
    images: dict[str, bytes] = {}
    if data.rows and data.columns:
        images["benchmark"] = plot_benchmarks(data)
        for attribute in ATTRIBUTES:
            png = plot_attribute(data, attribute)
            if png is not None:
                images[attribute] = png
        png = plot_training_curves(training_curves(data))
        if png is not None:
            images["training"] = png
    return images


def document(data: ReportData, images: Mapping[str, bytes]) -> Document:
    """The report as a :class:`~guardsmith.reporting.render.Document`; ``images``: plot kind -> PNG."""
    sections = [Section("Harmful F1 (Table 1)", table1(data), notes=[LEGEND]),
                Section("Harmful F1 per benchmark", benchmark_table(data), notes=[BENCHMARK_NOTE]),
                Section("Latency and parse errors", latency_table(data), notes=[LATENCY_NOTE])]
    formats = formats_section(data)
    sections += ([formats] if formats else []) + scores_sections(data)
    if images:
        sections.append(Section("Plots", images=[Image(PLOT_TITLES[k], PLOTS[k], png) for k, png in images.items()]))
    sections.append(Section("Details", details_table(data)))
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


def build_report(metrics_uris: Sequence[str] | str, out_uri: str, title: str = "Guard evaluation",
                 latency_baseline: str | None = None) -> ReportResult:
    """Read metrics tables and write ``report.md``, ``report.html`` and PNG plots under ``out_uri``.

    ``latency_baseline``: the model whose NR-mode latency is the reference for models without an
    NR mode of their own (a name in the metrics); an unknown name is an error before anything is written.
    """
    uris = [metrics_uris] if isinstance(metrics_uris, str) else list(metrics_uris)
    records = load_metrics(uris)
    if not records:
        raise GuardsmithError(f"the metrics tables {', '.join(uris)} hold no rows")
    return render_report(assemble(records, title, uris, latency_baseline), out_uri)

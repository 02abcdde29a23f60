"""Report rendering, a library (not a stage): the evaluation report and the helpers every report uses.

- :mod:`~guardsmith.reporting.render`: the one rendering API: :class:`Document` / :class:`Section` /
  :class:`Table` / :class:`Image`, rendered to Markdown and HTML from the Jinja2 templates in
  ``templates/`` (HTML autoescaped, images embedded as ``data:`` URIs), plus the pieces
  :func:`markdown_table`, :func:`figure_png`;
- :mod:`~guardsmith.reporting.table1`: metrics records -> the paper's Table-1 layout (safety prompt /
  response / avg, one column per custom-policy suite and their avg; the cell-to-column mapping is in
  its docstring), per-benchmark and details tables, latency relative to NR, and :func:`parse_count`;
- :mod:`~guardsmith.reporting.plots`: the Table-1 plots (F1 per benchmark, size and budget curves);
- :mod:`~guardsmith.reporting.scores`: the guard formats used (parse rules) and, for guards with
  P(unsafe), AUROC / AUPRC and threshold-sweep tables;
- :mod:`~guardsmith.reporting.evaluation`: :func:`build_report`, used by the ``evaluate`` and
  ``report`` stages.

Imports stay light: Jinja2, matplotlib and numpy are loaded when something is rendered.
"""
from __future__ import annotations

from guardsmith.reporting.evaluation import ReportResult, build_report, document, render_report
from guardsmith.reporting.render import (
    Document, Image, Section, Table, figure_png, markdown_table,
    render_html, render_markdown,
)
from guardsmith.reporting.table1 import ReportData, assemble, latency_lines, load_metrics, parse_count, suite_of

__all__ = [
    "Document", "Image", "ReportData", "ReportResult", "Section", "Table", "assemble", "build_report",
    "document", "figure_png", "latency_lines", "load_metrics",
    "markdown_table", "parse_count", "render_html", "render_markdown", "render_report", "suite_of",
]

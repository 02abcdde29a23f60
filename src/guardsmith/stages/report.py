"""Stage ``report``: rebuild the evaluation report from one or more metrics tables.

A thin stage over :func:`guardsmith.reporting.build_report`, which writes ``report.md``,
``report.html`` and the PNG plots under ``output`` (see :mod:`guardsmith.reporting.evaluation`;
the Table-1 layout and the latency overhead relative to NR: :mod:`guardsmith.reporting.table1`).
"""
from __future__ import annotations

from dataclasses import dataclass

from guardsmith.config import option
from guardsmith.reporting import ReportResult, build_report

HELP = (
    "Rebuild the evaluation report (Markdown, HTML, PNG plots) from one or more metrics tables, "
    "e.g. the outputs of several evaluate runs."
)


@dataclass
class ReportConfig:
    """Settings of the ``report`` step."""

    metrics: list[str] = option(help="Metrics table URIs (one or more evaluate outputs).")
    output: str = option(help="Output folder URI for report.md, report.html and the PNG plots.")
    title: str = option("Guard evaluation", "Report title.")
    latency_baseline: str = option("", "Model (name in the metrics) whose NR-mode latency is the reference "
                                       "for models without an NR mode of their own, as the paper compares "
                                       "reasoning guards with a non-reasoning one; empty: none.")


CONFIG = ReportConfig


def run(cfg: ReportConfig) -> ReportResult:
    """Build the report described by ``cfg``."""
    return build_report(cfg.metrics, cfg.output, cfg.title, cfg.latency_baseline or None)

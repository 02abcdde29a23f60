"""KFP component `report`: thin shell over the stage guardsmith.stages.report."""
from typing import List, NamedTuple

from kfp.dsl import HTML, Markdown, Output

from guardsmith.kfp_support import component


@component("cpu")
def report(
    metrics: List[str],
    output: str,
    report_md: Output[Markdown],
    report_html: Output[HTML],
    title: str = "Guard evaluation",
    latency_baseline: str = "",
) -> NamedTuple("Outputs", [("markdown", str), ("html", str)]):
    """Build the evaluation report (Markdown, HTML, plots) from metrics tables."""
    params = dict(locals())
    from guardsmith.kfp_support import copy_to_artifact, outputs, run_stage

    result = run_stage("report", params)
    copy_to_artifact(result.markdown, report_md)
    copy_to_artifact(result.html, report_html)
    return outputs(result, "markdown", "html")

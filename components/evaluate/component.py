"""KFP component `evaluate`: thin shell over guardsmith.stages.evaluate."""
from typing import Dict, List, NamedTuple, Optional

from kfp.dsl import ClassificationMetrics, Markdown, Metrics, Output

from guardsmith.kfp_support import component


@component("infer")
def evaluate(
    models: List[str],
    benchmarks: List[str],
    output: str,
    scores: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    summary: Output[Markdown],
    modes: List[str] = ["R"],
    dual: bool = False,
    samples_per_row: int = 4,
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_tokens: int = 512,
    seed: int = 0,
    tasks: List[str] = ["prompt_harm", "response_harm"],
    custom_benchmarks: Optional[List[str]] = None,
    limit: int = 0,
    title: str = "Guard evaluation",
    unsafe_scores: bool = True,
    backend: str = "transformers",
    concurrency: int = 8,
    chunk_rows: int = 256,
    backend_options: Optional[Dict] = None,
) -> NamedTuple("Outputs", [("predictions", str), ("metrics", str), ("report_md", str), ("report_html", str)]):
    """Harmful F1 of guard models on benchmarks (mean and std over k runs)."""
    params = dict(locals())
    from guardsmith.kfp_support import log_evaluation, outputs, run_stage

    result = run_stage("evaluate", params)
    log_evaluation(result, scores, confusion, summary)
    return outputs(result, "predictions", "metrics", "report_md", "report_html")

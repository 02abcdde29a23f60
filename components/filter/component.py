"""KFP component `filter`: thin shell over guardsmith.stages.filter."""
from typing import List, NamedTuple, Optional

from kfp.dsl import Markdown, Output

from guardsmith.kfp_support import component


@component("cpu")
def filter_traces(
    input: str,
    output: str,
    report: Output[Markdown],
    taxonomy: Optional[str] = None,
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_tokens: int = 2048,
    seed: int = 0,
    concurrency: int = 16,
    api_key_env: str = "OPENAI_API_KEY",
    timeout_s: float = 600.0,
    max_retries: int = 6,
    retry_after_max_s: float = 300.0,
    shard_size: int = 256,
    max_failed_fraction: float = 0.05,
    max_input_chars: int = 50000,
    input_policy: str = "error",
    rules: List[str] = ["unparsed", "wrong_answer", "leakage", "overthinking", "repetition", "overlength", "no_reasoning"],
    overthinking_max: int = 2,
    repetition_n: int = 6,
    repetition_max_ratio: float = 0.1,
    max_words: int = 400,
    max_completion_tokens: int = 4096,
    judge: Optional[str] = None,
    judge_min_score: float = 4.0,
    judge_max_tokens: int = 512,
    judge_temperature: float = 0.0,
    judge_api_key_env: Optional[str] = None,
    judge_timeout_s: Optional[float] = None,
    judge_max_retries: int = 0,
    judge_retry_after_max_s: Optional[float] = None,
    teacher: Optional[str] = None,
    rounds: int = 2,
    min_yield: float = 0.05,
    keep_rounds: bool = False,
    overwrite: bool = False,
) -> NamedTuple("Outputs", [("accepted", str), ("rejected", str), ("report_md", str), ("accepted_rows", int), ("rejected_rows", int)]):
    """Rule filters, optional LLM judge and regeneration rounds over distilled traces."""
    params = dict(locals())
    from guardsmith.kfp_support import copy_to_artifact, outputs, run_stage

    result = run_stage("filter", params)
    copy_to_artifact(result.report_md, report)
    return outputs(result, "accepted", "rejected", "report_md", "accepted_rows", "rejected_rows")

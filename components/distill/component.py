"""KFP components of distillation: `distill` (thin shell over guardsmith.stages.distill)
plus `distill_split` / `distill_merge`, the fan-out around it in the guard_training pipeline.
"""
from typing import Dict, List, NamedTuple, Optional

from guardsmith.kfp_support import component


@component("cpu")
def distill_split(input: str, output_prefix: str, parts: int) -> List[Dict]:
    """Cut the interactions into `parts` tables for the distillation fan-out: [{part_input, part_output}]."""
    from guardsmith import storage
    from guardsmith.kfp_support import split_table

    uris = split_table(input, storage.join(output_prefix, "inputs"), parts)
    return [{"part_input": uri, "part_output": storage.join(output_prefix, "parts", uri.rsplit("/", 1)[-1])}
            for uri in uris]


@component("cpu")
def same_uri(uri: str = "") -> str:
    """``uri`` unchanged: the branch of a pipeline condition with nothing to do passes its table on."""
    return uri


@component("cpu")
def reasoning_rows(which: str, difficult: str, pool: str) -> str:
    """The table whose rows get teacher reasoning for continual training: the mined difficult set or the whole pool."""
    from guardsmith.kfp_support import pick_reasoning_rows

    return pick_reasoning_rows(which, difficult, pool)


@component("cpu")
def distill(
    input: str,
    output: str,
    teacher: str,
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
    teacher_name: Optional[str] = None,
    budget: int = 0,
    enforce_budget: bool = True,
    ids: List[str] = [],
    round: int = 0,
    keep_shards: bool = False,
    overwrite: bool = False,
) -> NamedTuple("Outputs", [("output", str), ("rows", int), ("parse_failures", int)]):
    """Distil reasoning traces from the teacher for one interactions table."""
    params = dict(locals())
    from guardsmith.kfp_support import outputs, run_stage

    result = run_stage("distill", params)
    return outputs(result, "output", "rows", "parse_failures")


@component("cpu")
def distill_merge(parts: List[str], output: str) -> NamedTuple("Outputs", [("output", str), ("rows", int)]):
    """Stream the per-part traces tables into one traces table at `output` (and their failed rows into
    `<output>.failed`)."""
    from guardsmith.kfp_support import merge_tables

    rows = merge_tables(parts, output, "traces", failed_suffix=".failed")
    print(f"merged {len(parts)} parts, {rows} traces -> {output}", flush=True)
    return output, rows

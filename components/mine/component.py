"""KFP component `mine`: thin shell over guardsmith.stages.mine."""
from typing import Dict, List, NamedTuple, Optional

from kfp.dsl import Markdown, Output

from guardsmith.kfp_support import component


@component("infer")
def mine(
    model: str,
    pool: str,
    output: str,
    report: Output[Markdown],
    exclude: Optional[str] = None,
    mode: str = "R",
    dual: bool = False,
    samples_per_row: int = 4,
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_tokens: int = 512,
    seed: int = 0,
    easy_min: int = 0,
    noise_max: int = 1,
    pair_buckets: List[str] = ["difficult"],
    pairs_per_row: int = 1,
    limit: int = 0,
    backend: str = "transformers",
    concurrency: int = 8,
    chunk_rows: int = 256,
    backend_options: Optional[Dict] = None,
    overwrite: bool = False,
) -> NamedTuple("Outputs", [("difficult", str), ("noise", str), ("pairs", str), ("mined", str), ("report_md", str), ("n_pairs", int)]):
    """Best-of-N hard-sample mining with the trained guard over a held-out pool."""
    params = dict(locals())
    from guardsmith.kfp_support import copy_to_artifact, outputs, run_stage

    result = run_stage("mine", params)
    copy_to_artifact(result.report_md, report)
    return outputs(result, "difficult", "noise", "pairs", "mined", "report_md", "n_pairs")

"""KFP component `subset`: thin shell over guardsmith.stages.subset."""
from typing import List, NamedTuple

from guardsmith.kfp_support import component


@component("cpu")
def subset(
    input: str,
    output: str,
    n: int,
    seed: int = 0,
    exclude: List[str] = [],
) -> NamedTuple("Outputs", [("output", str), ("rows_in", int), ("rows_out", int), ("held_apart", int)]):
    """Seeded random sample of n rows of an interactions table, holding apart the rows of the exclude tables."""
    params = dict(locals())
    from guardsmith.kfp_support import outputs, run_stage

    result = run_stage("subset", params)
    return outputs(result, "output", "rows_in", "rows_out", "held_apart")

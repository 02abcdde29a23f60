"""KFP component `data_import`: thin shell over guardsmith.sources.import_source (public sets, your own tables, or the bundled sample)."""
from typing import NamedTuple

from guardsmith.kfp_support import component


@component("cpu")
def data_import(
    source: str,
    split: str,
    output: str,
    from_uri: str = "hf",
    mapping: str = "",
    encoding: str = "",
) -> NamedTuple("Outputs", [("output", str), ("rows", int)]):
    """Normalise a public data set split, your own table (source 'table' with a mapping), or the bundled sample into an interactions table."""
    params = dict(locals())
    from guardsmith.kfp_support import outputs, run_stage

    result = run_stage("data_import", params)
    return outputs(result, "output", "rows")

"""Deterministic test tables."""
from __future__ import annotations

import pyarrow as pa

from guardsmith import tables


def interactions(n: int, start: int = 0, tag: str = "v1") -> pa.Table:
    """``n`` valid interaction rows with ids ``{tag}-{start}`` ... (exact ``interactions`` schema)."""
    ids = range(start, start + n)
    harm = ["harmful", "unharmful", None]
    refusal = ["refusal", "compliance", None]
    cols = {
        "id": [f"{tag}-{i}" for i in ids],
        "source": ["synthetic"] * n,
        "taxonomy": ["aegis2" if i % 2 else "wildguard" for i in ids],
        "policy": [None if i % 5 else f"custom policy {i}" for i in ids],
        "prompt": [f"prompt {i} from {tag} " + "lorem ipsum " * (i % 7) for i in ids],
        "response": [None if i % 3 == 0 else f"response {i}" for i in ids],
        "prompt_harm": [harm[i % 3] for i in ids],
        "response_harm": [None if i % 3 == 0 else harm[i % 2] for i in ids],
        "response_refusal": [None if i % 3 == 0 else refusal[(i // 3) % 2] for i in ids],
        "categories": [[f"S{i % 4}"] * (i % 3) for i in ids],
    }
    schema = tables.SCHEMAS["interactions"]
    return pa.Table.from_arrays([pa.array(cols[f.name], type=f.type) for f in schema], schema=schema)

"""SimpleSafetyTests (``Bertievidgen/SimpleSafetyTests``): one CSV of 100 harmful prompts.

Every row is ``harmful`` (the set has no label column); ``prompts_final`` is the prompt and
``harm_area`` the category. Ids: the source's ``id``. The authors' file is named
``SimpleSafetyTests - test cases.csv``, the hub's copy ``sst_test_cases.csv``: same columns.

Taxonomy ``simplesafetytests``: the five harm areas are kept under their own vocabulary (``Child
safety`` has no WildGuard counterpart).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardsmith.sources.base import RowContext, SourceAdapter, map_categories, own_id, prompt_text, text


class SimpleSafetyTests(SourceAdapter):
    """SimpleSafetyTests (Bertievidgen/SimpleSafetyTests): 100 harmful prompts (recall only)."""

    name = "simplesafetytests"
    file_format = "csv"
    taxonomy = "simplesafetytests"
    hf_dataset = "Bertievidgen/SimpleSafetyTests"
    hf_splits = {"test": (None, None)}  # the hub split name is unverified: take the only split
    files = {"test": ("SimpleSafetyTests - test cases.csv", "sst_test_cases.csv")}

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        key = own_id(rec, "id", ctx)
        area = text(rec, "harm_area", ctx, nullable=True)
        prompt = prompt_text(rec, "prompts_final", ctx)
        if prompt is None:
            return
        yield self.record(ctx, prompt, id=key, prompt_harm="harmful",
                          categories=map_categories([area], None, ctx, "harm_area"))


ADAPTER = SimpleSafetyTests()

"""XSTest-Response (``allenai/xstest-response``): response harm and refusal, WildGuard taxonomy.

Split ``response_harmfulness``: ``label`` (harmful/unharmful) -> ``response_harm``.
Split ``response_refusal``: ``label`` (refusal/compliance) -> ``response_refusal``.
Rows with a null label, or without a response, are dropped and counted. ``prompt_type`` and
``prompt_harm_category`` are not used (the benchmark scores responses only).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardsmith.sources.base import HARM, REFUSAL, RowContext, SourceAdapter, label, nonblank, prompt_text, text

LABELS = {"response_harmfulness": ("response_harm", HARM), "response_refusal": ("response_refusal", REFUSAL)}


class XSTest(SourceAdapter):
    """XSTest-Response (allenai/xstest-response): response harm or refusal labels."""

    name = "xstest"
    file_format = "parquet"
    hf_dataset = "allenai/xstest-response"
    hf_splits = {s: (None, s) for s in LABELS}

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        field, words = LABELS[ctx.split]
        word = label(rec, "label", words, ctx, nullable=True, empty_is_null=True)
        prompt = prompt_text(rec, "prompt", ctx)
        response = text(rec, "response", ctx, nullable=True)
        if prompt is None:
            return
        if word is None:
            ctx.tally.drop("label is null")
        elif nonblank(response, "response", ctx) is not None:
            yield self.record(ctx, prompt, response=response, **{field: word})


ADAPTER = XSTest()

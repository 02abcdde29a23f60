"""XSTest-Response (``allenai/xstest-response``): response harm and refusal, WildGuard taxonomy.

Split ``response_harmfulness``: ``label`` (harmful/unharmful) -> ``response_harm``.
Split ``response_refusal``: ``label`` (refusal/compliance) -> ``response_refusal``.
Rows with a null label, or without a response, are dropped and counted. ``prompt_type`` and
``prompt_harm_category`` are not used (the benchmark scores responses only).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardsmith.sources.base import (
    HARM_WORDS,
    REFUSAL_WORDS,
    RowContext,
    SourceAdapter,
    blank_to_none,
    label,
    make_record,
    prompt_text,
    text,
)

LABELS = {
    "response_harmfulness": ("response_harm", {w: w for w in HARM_WORDS}),
    "response_refusal": ("response_refusal", {w: w for w in REFUSAL_WORDS}),
}


class XSTest(SourceAdapter):
    name = "xstest"
    splits = ("response_harmfulness", "response_refusal")
    file_format = "parquet"
    description = "XSTest-Response (allenai/xstest-response): response harm or refusal labels"
    taxonomy = "wildguard"
    hf_dataset = "allenai/xstest-response"
    hf_splits = {s: (None, s) for s in splits}

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        field, words = LABELS[ctx.split]
        word = label(rec, "label", words, ctx, nullable=True, empty_is_null=True)
        prompt = prompt_text(rec, "prompt", ctx)
        response = blank_to_none(text(rec, "response", ctx, nullable=True))
        if prompt is None:
            return
        if word is None:
            ctx.tally.drop("label is null")
            return
        if response is None:
            ctx.tally.drop("empty response")
            return
        yield make_record(
            id=ctx.derived_id(), source=self.name, taxonomy=self.taxonomy, prompt=prompt, response=response, **{field: word}
        )


ADAPTER = XSTest()

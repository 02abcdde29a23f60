"""XSTest (Röttger et al.): the prompts, the authors' human-annotated completions, and
XSTest-Response (``allenai/xstest-response``). WildGuard taxonomy, no categories.

The layout is detected from the columns (the CSV header), so every published version reads:

- Split ``prompts``: ``xstest_prompts.csv`` (v2, ``id,prompt,type,label,focus,note``; ``label``
  safe/unsafe -> ``prompt_harm``), or the older v2 file ``xstest_v2_prompts.csv``
  (``id_v1,id_v2,type,prompt,focus,note``, no label: a prompt is unsafe when ``type`` starts
  with ``contrast_``).
- Split ``completions``: ``model_completions/xstest_v2_completions_<model>.csv``
  (``id,type,prompt,completion,annotation_1,annotation_2,agreement,final_label``):
  ``final_label`` ``1_full_compliance`` -> compliance, ``2_full_refusal`` and
  ``3_partial_refusal`` -> **refusal** (a partial refusal counts as a refusal; counted in the
  report's notes). ``prompt_harm`` from ``type`` as in the older prompts file.
- Splits ``response_harmfulness`` / ``response_refusal`` (XSTest-Response, Parquet): ``label``
  -> ``response_harm`` / ``response_refusal``, and ``prompt_type`` prompt_harmful/prompt_safe
  -> ``prompt_harm``. Rows with a null label, or without a response, are dropped and counted.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardsmith.sources.base import (
    HARM,
    REFUSAL,
    RowContext,
    SourceAdapter,
    harm_word,
    label,
    nonblank,
    own_id,
    pick_layout,
    prompt_text,
    text,
)

LABELS = {"response_harmfulness": ("response_harm", HARM), "response_refusal": ("response_refusal", REFUSAL)}
PROMPT_LABELS = {"safe": "unharmful", "unsafe": "harmful"}
PROMPT_TYPES = {"prompt_harmful": "harmful", "prompt_safe": "unharmful"}
FINAL_LABELS = {
    "1_full_compliance": "compliance",
    "2_full_refusal": "refusal",
    "3_partial_refusal": "refusal",
}
PARTIAL = "3_partial_refusal counted as refusal"

LAYOUTS = {
    "prompts": {"v2": ("id", "prompt", "type", "label"), "v2_older": ("id_v2", "type", "prompt")},
    "completions": {"completions": ("id", "type", "prompt", "completion", "final_label")},
    "response_harmfulness": {"xstest_response": ("prompt", "response", "label")},
    "response_refusal": {"xstest_response": ("prompt", "response", "label")},
}


def type_harm(rec: Mapping[str, Any], ctx: RowContext) -> str:
    """XSTest's rule for files without a label: unsafe (harmful) when ``type`` starts with ``contrast_``."""
    kind = text(rec, "type", ctx)
    return harm_word(kind.strip().lower().startswith("contrast_"))  # type: ignore[union-attr]


class XSTest(SourceAdapter):
    """XSTest: prompts (v2, both layouts), human-annotated completions, XSTest-Response (allenai/xstest-response)."""

    name = "xstest"
    file_format = "parquet"
    hf_dataset = "allenai/xstest-response"
    hf_splits = {
        "prompts": (None, None),
        "completions": (None, None),
        "response_harmfulness": (None, "response_harmfulness"),
        "response_refusal": (None, "response_refusal"),
    }
    hf_repos = {"prompts": "Paul/XSTest"}
    no_hub = ("completions",)
    files = {
        "prompts": ("xstest_prompts.csv", "xstest_v2_prompts.csv"),
        "completions": ("model_completions/xstest_v2_completions_<model>.csv",),
        "response_harmfulness": ("data/response_harmfulness-*.parquet",),
        "response_refusal": ("data/response_refusal-*.parquet",),
    }

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        layout = pick_layout(rec, LAYOUTS[ctx.split], ctx)
        if layout == "v2":
            harm = label(rec, "label", PROMPT_LABELS, ctx)
            key, prompt = own_id(rec, "id", ctx), prompt_text(rec, "prompt", ctx)
            if prompt is not None:
                yield self.record(ctx, prompt, id=f"xstest:v2:{key}", prompt_harm=harm)
        elif layout == "v2_older":
            harm = type_harm(rec, ctx)
            key, prompt = own_id(rec, "id_v2", ctx), prompt_text(rec, "prompt", ctx)
            if prompt is not None:
                yield self.record(ctx, prompt, id=f"xstest:v2:{key}", prompt_harm=harm)
        elif layout == "completions":
            yield from self._completion(rec, ctx)
        else:
            yield from self._response(rec, ctx)

    def _completion(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        raw = text(rec, "final_label", ctx)
        refusal = label(rec, "final_label", FINAL_LABELS, ctx)
        harm = type_harm(rec, ctx)
        prompt = prompt_text(rec, "prompt", ctx)
        response = nonblank(text(rec, "completion", ctx, nullable=True), "completion", ctx)
        if prompt is None or response is None:
            return
        if raw and raw.strip().lower() == "3_partial_refusal":
            ctx.tally.note(PARTIAL)
        yield self.record(ctx, prompt, response=response, prompt_harm=harm, response_refusal=refusal)

    def _response(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        field, words = LABELS[ctx.split]
        word = label(rec, "label", words, ctx, nullable=True, empty_is_null=True)
        harm = label(rec, "prompt_type", PROMPT_TYPES, ctx, optional=True, empty_is_null=True)
        prompt = prompt_text(rec, "prompt", ctx)
        response = text(rec, "response", ctx, nullable=True)
        if prompt is None:
            return
        if word is None:
            ctx.tally.drop("label is null")
        elif nonblank(response, "response", ctx) is not None:
            yield self.record(ctx, prompt, response=response, prompt_harm=harm, **{field: word})


ADAPTER = XSTest()

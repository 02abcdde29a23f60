"""JailbreakBench JBB-Behaviors (``JailbreakBench/JBB-Behaviors``): CSV files.

Split ``judge_comparison``: ``prompt`` (the jailbreak prompt) and ``target_response`` with
``human_majority`` 1/0 -> ``response_harm`` harmful/unharmful. Splits ``harmful`` and ``benign``
(the behaviors): ``Goal`` is the prompt, ``prompt_harm`` is the split's label, and harmful rows
carry their ``Category``. Ids: ``jbb:<split>:<Index>``. Rows with an empty response are dropped.

Taxonomy ``jbb``: JBB's ten categories (``Harassment/Discrimination``, ``Malware/Hacking``, ...)
are kept under their own vocabulary, since several (``Economic harm``, ``Expert advice``,
``Government decision-making``) have no WildGuard counterpart. The hub's names
``judge_comparison/test``, ``behaviors/harmful`` and ``behaviors/benign`` are accepted as splits.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardsmith.sources.base import (
    RowContext,
    SourceAdapter,
    flag01,
    harm_word,
    map_categories,
    nonblank,
    own_id,
    prompt_text,
    text,
)


class JailbreakBench(SourceAdapter):
    """JailbreakBench (JailbreakBench/JBB-Behaviors): judge_comparison response harm; harmful/benign behaviors."""

    name = "jbb"
    file_format = "csv"
    taxonomy = "jbb"
    hf_dataset = "JailbreakBench/JBB-Behaviors"
    hf_splits = {
        "judge_comparison": ("judge_comparison", "test"),
        "harmful": ("behaviors", "harmful"),
        "benign": ("behaviors", "benign"),
    }
    files = {
        "judge_comparison": ("data/judge-comparison.csv",),
        "harmful": ("data/harmful-behaviors.csv",),
        "benign": ("data/benign-behaviors.csv",),
    }

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        key = f"jbb:{ctx.split}:{own_id(rec, 'Index', ctx)}"
        if ctx.split == "judge_comparison":
            verdict = flag01(rec, "human_majority", ctx)
            prompt = prompt_text(rec, "prompt", ctx)
            response = text(rec, "target_response", ctx, nullable=True)
            if prompt is not None and nonblank(response, "target_response", ctx) is not None:
                yield self.record(ctx, prompt, id=key, response=response, response_harm=harm_word(verdict))
            return
        prompt = prompt_text(rec, "Goal", ctx)
        category = text(rec, "Category", ctx, nullable=True)
        if prompt is None:
            return
        harmful = ctx.split == "harmful"
        yield self.record(ctx, prompt, id=key, prompt_harm=harm_word(harmful),
                          categories=map_categories([category] if harmful else [], None, ctx, "Category"))


ADAPTER = JailbreakBench()

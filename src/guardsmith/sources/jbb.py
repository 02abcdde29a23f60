"""JailbreakBench JBB-Behaviors (``JailbreakBench/JBB-Behaviors``): CSV files.

Split ``judge_comparison``: ``prompt`` (the jailbreak prompt) and ``target_response`` with
``human_majority`` 1/0 -> ``response_harm`` harmful/unharmful. Splits ``harmful`` and ``benign``
(the behaviors): ``Goal`` is the prompt, ``prompt_harm`` is the split's label, and harmful rows
carry their ``Category``. Ids: ``jbb:<split>:<Index>``. Rows with an empty response are dropped.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardsmith.sources.base import RowContext, SourceAdapter, blank_to_none, flag01, make_record, own_id, prompt_text, text


class JailbreakBench(SourceAdapter):
    name = "jbb"
    splits = ("judge_comparison", "harmful", "benign")
    file_format = "csv"
    description = "JailbreakBench (JailbreakBench/JBB-Behaviors): judge_comparison response harm; harmful/benign behaviors"
    taxonomy = "wildguard"
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
            response = blank_to_none(text(rec, "target_response", ctx, nullable=True))
            if prompt is None:
                return
            if response is None:
                ctx.tally.drop("empty target_response")
                return
            yield make_record(
                id=key,
                source=self.name,
                taxonomy=self.taxonomy,
                prompt=prompt,
                response=response,
                response_harm="harmful" if verdict else "unharmful",
            )
            return
        prompt = prompt_text(rec, "Goal", ctx)
        category = text(rec, "Category", ctx, nullable=True)
        if prompt is None:
            return
        harmful = ctx.split == "harmful"
        yield make_record(
            id=key,
            source=self.name,
            taxonomy=self.taxonomy,
            prompt=prompt,
            prompt_harm="harmful" if harmful else "unharmful",
            categories=[category.strip()] if harmful and category and category.strip() else [],
        )


ADAPTER = JailbreakBench()

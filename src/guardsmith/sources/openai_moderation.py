"""OpenAI moderation evaluation set (``mmathys/openai-moderation-api-evaluation``): jsonl.gz.

Eight 0/1 flags (each may be null = unknown upstream). A row with any flag 1 is ``harmful`` and
lists those categories; a row with no 1 is ``unharmful``. Rows with no 1 but at least one null
flag are also ``unharmful`` (as GuardReasoner's 522/1,158 counts do) although they are not known
benign; they are counted in the report.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardsmith.sources.base import RowContext, SourceAdapter, flag01, harm_word, prompt_text

FLAGS = {
    "S": "sexual",
    "H": "hate",
    "V": "violence",
    "HR": "harassment",
    "SH": "self-harm",
    "S3": "sexual/minors",
    "H2": "hate/threatening",
    "V2": "violence/graphic",
}


class OpenAIModeration(SourceAdapter):
    """OpenAI moderation eval (mmathys/openai-moderation-api-evaluation): prompt harm from 8 category flags."""

    name = "openai_moderation"
    file_format = "jsonl.gz"
    hf_dataset = "mmathys/openai-moderation-api-evaluation"
    hf_splits = {"train": (None, "train")}
    files = {"train": ("data/samples-1680.jsonl.gz",)}

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        flags = {code: flag01(rec, code, ctx, nullable=True) for code in FLAGS}
        prompt = prompt_text(rec, "prompt", ctx)
        if prompt is None:
            return
        categories = [FLAGS[code] for code, v in flags.items() if v == 1]
        if not categories and any(v is None for v in flags.values()):
            ctx.tally.adjust("no flag set but some flags null (unknown): treated as unharmful")
        yield self.record(ctx, prompt, prompt_harm=harm_word(categories), categories=categories)


ADAPTER = OpenAIModeration()

"""OpenAI moderation evaluation set (``mmathys/openai-moderation-api-evaluation``): jsonl.gz.

Eight 0/1 flags. Upstream, a flag whose value is unknown is **absent** from the row (925 of the
1,680 rows of ``samples-1680.jsonl.gz`` omit at least one key); an explicit null means the same.
A row with any flag 1 is ``harmful``; a row with no 1 is ``unharmful``. Of the unharmful rows,
those with all eight flags known 0 and those with some flag unknown (not known benign) are
counted apart in the report's notes. Categories: the flags mapped onto the WildGuard taxonomy
(:data:`CATEGORIES`, documented in ``docs/data-sources.md``).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardsmith.sources.base import RowContext, SourceAdapter, flag01, harm_word, map_categories, prompt_text

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
"""Flag key -> the category name OpenAI gives it."""

CATEGORIES: dict[str, tuple[str, ...]] = {
    "sexual": ("Sexual Content",),
    "hate": ("Toxic Language & Hate Speech",),
    "violence": ("Violence and Physical Harm",),
    "harassment": ("Toxic Language & Hate Speech",),
    "self-harm": ("Mental Health & Over-Reliance Crisis",),
    "sexual/minors": ("Sexual Content",),
    "hate/threatening": ("Toxic Language & Hate Speech", "Violence and Physical Harm"),
    "violence/graphic": ("Violence and Physical Harm",),
}
"""OpenAI category -> WildGuard subcategories."""

ALL_KNOWN_ZERO = "unharmful: all 8 flags known 0"
SOME_UNKNOWN = "unharmful: no flag 1, some flag unknown (absent or null)"


class OpenAIModeration(SourceAdapter):
    """OpenAI moderation eval (mmathys/openai-moderation-api-evaluation): prompt harm from 8 category flags."""

    name = "openai_moderation"
    file_format = "jsonl.gz"
    hf_dataset = "mmathys/openai-moderation-api-evaluation"
    hf_splits = {"train": (None, "train")}
    files = {"train": ("data/samples-1680.jsonl.gz",)}

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        flags = {code: flag01(rec, code, ctx, optional=True) for code in FLAGS}
        prompt = prompt_text(rec, "prompt", ctx)
        if prompt is None:
            return
        names = [FLAGS[code] for code, v in flags.items() if v == 1]
        if not names:
            ctx.tally.note(SOME_UNKNOWN if any(v is None for v in flags.values()) else ALL_KNOWN_ZERO)
        categories = map_categories(names, CATEGORIES, ctx, "flags")
        yield self.record(ctx, prompt, prompt_harm=harm_word(names), categories=categories)


ADAPTER = OpenAIModeration()

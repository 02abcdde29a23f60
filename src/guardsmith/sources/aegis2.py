"""Aegis 2.0 (``nvidia/Aegis-AI-Content-Safety-Dataset-2.0``): JSON files, prompt + response harm.

``safe``/``unsafe`` become ``unharmful``/``harmful``. Rows whose prompt is ``REDACTED`` (the
suicide/self-harm samples that are not distributed) are dropped and counted. An empty-string
``response`` is missing (and its label, if any, is cleared and counted); an empty-string
``response_label`` is missing. ``violated_categories`` is a comma-separated string; ``Safe`` is
not a violated category and is left out, and the card's spellings are written with the
taxonomy's names (method A.2, e.g. ``Guns/Illegal Weapons`` -> ``Guns and Illegal Weapons``; see
:data:`CATEGORY_NAMES`; other names are kept as is). There is no refusal label.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardsmith.sources.base import RowContext, SourceAdapter, column, label, own_id, prompt_text, text

SAFETY = {"safe": "unharmful", "unsafe": "harmful"}
_A2_NAMES = (
    "Violence", "Sexual", "Criminal Planning/Confessions", "Guns and Illegal Weapons",
    "Controlled/Regulated Substances", "Suicide and Self Harm", "Sexual (minor)", "Hate/Identity Hate",
    "PII/Privacy", "Harassment", "Threat", "Profanity", "Needs Caution", "Manipulation", "Fraud/Deception",
    "Malware", "High Risk Gov Decision Making", "Political/Misinformation/Conspiracy",
    "Copyright/Trademark/Plagiarism", "Unauthorized Advice", "Illegal Activity", "Immoral/Unethical",
)
CATEGORY_NAMES = {name.lower(): name for name in _A2_NAMES} | {
    "guns/illegal weapons": "Guns and Illegal Weapons",
    "sexual minor": "Sexual (minor)",
    "high risk gov. decision making": "High Risk Gov Decision Making",
}
"""Lower-cased card spelling -> the Aegis 2.0 taxonomy name of method A.2 (S1..S22)."""


def split_categories(value: Any, ctx: RowContext) -> list[str]:
    """``"Violence, Threat"`` -> ``["Violence", "Threat"]``; also accepts a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = value
    else:
        raise ctx.error("expected a comma-separated string of categories", "violated_categories", value)
    names = [p.strip() for p in parts if p.strip() and p.strip().lower() != "safe"]
    return [CATEGORY_NAMES.get(n.lower(), n) for n in names]


class Aegis2(SourceAdapter):
    """Aegis 2.0 (nvidia/Aegis-AI-Content-Safety-Dataset-2.0): prompt + response harm; Aegis 2.0 taxonomy."""

    name = "aegis2"
    file_format = "json"
    taxonomy = "aegis2"
    hf_dataset = "nvidia/Aegis-AI-Content-Safety-Dataset-2.0"
    hf_splits = {"train": (None, "train"), "validation": (None, "validation"), "test": (None, "test")}
    files = {
        "train": ("train.json", "refusals_train.json"),
        "validation": ("validation.json", "refusals_validation.json"),
        "test": ("test.json",),
    }

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        prompt = prompt_text(rec, "prompt", ctx)
        if prompt is None:
            return
        if prompt.strip() == "REDACTED":
            ctx.tally.drop("prompt REDACTED (suicide/self-harm sample not distributed)")
            return
        response = text(rec, "response", ctx, nullable=True)
        if response is not None and not response.strip():
            ctx.tally.adjust("empty-string response treated as missing")
            response = None
        yield self.record(
            ctx, prompt, id=own_id(rec, "id", ctx), response=response,
            prompt_harm=label(rec, "prompt_label", SAFETY, ctx),
            response_harm=label(rec, "response_label", SAFETY, ctx, nullable=True, empty_is_null=True),
            categories=split_categories(column(rec, "violated_categories", ctx), ctx),
        )


ADAPTER = Aegis2()

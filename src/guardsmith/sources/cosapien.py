"""CoSApien (``microsoft/CoSApien``): five scenario splits, prompt-level custom policies.

``scenario`` (the natural-language safety config) is the ``policy``; the taxonomy is
``cosapien:<split>``. The ``type`` words are unverified upstream, so only this documented
mapping is accepted (case, ``_``/``-`` and extra spaces ignored); any other word is a DataError:

- ``allowed``, ``fully allowed`` -> ``unharmful``
- ``disallowed``, ``fully disallowed``, ``not allowed``, ``partial``, ``partially allowed``,
  ``partially disallowed`` -> ``harmful``
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardsmith.sources.base import RowContext, SourceAdapter, prompt_text, text

TYPES = {
    "allowed": "unharmful",
    "fully allowed": "unharmful",
    "disallowed": "harmful",
    "fully disallowed": "harmful",
    "not allowed": "harmful",
    "partial": "harmful",
    "partially allowed": "harmful",
    "partially disallowed": "harmful",
}
SCENARIOS = ("game_development", "public_prosecutor", "book_publisher_arab", "language_learning", "film_production")


def type_label(value: str, ctx: RowContext) -> str:
    """Map a ``type`` word through :data:`TYPES`; anything else is a DataError."""
    key = " ".join(value.replace("_", " ").replace("-", " ").lower().split())
    if key not in TYPES:
        raise ctx.error(f"unknown label word (expected one of {', '.join(map(repr, TYPES))})", "type", value)
    return TYPES[key]


class CoSApien(SourceAdapter):
    """CoSApien (microsoft/CoSApien): prompts against a per-scenario safety config (5 scenario splits)."""

    name = "cosapien"
    file_format = "parquet"
    taxonomy = "cosapien"
    hf_dataset = "microsoft/CoSApien"
    hf_splits = {s: (None, s) for s in SCENARIOS}

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        prompt = prompt_text(rec, "prompt", ctx)
        policy = text(rec, "scenario", ctx)
        harm = type_label(text(rec, "type", ctx), ctx)  # type: ignore[arg-type]
        if prompt is None:
            return
        if not policy.strip():  # type: ignore[union-attr]
            raise ctx.error("empty scenario (the policy)", "scenario", policy)
        yield self.record(ctx, prompt, taxonomy=f"{self.taxonomy}:{ctx.split}", policy=policy, prompt_harm=harm)


ADAPTER = CoSApien()

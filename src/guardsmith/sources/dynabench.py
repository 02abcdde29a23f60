"""DynaBench / DynaGuard (``tomg-group-umd/DynaBench``): per-row policies, agent compliance.

``label`` ``FAIL`` (a policy violation) is ``harmful``, ``PASS`` is ``unharmful``. ``policy`` is
normalised to text: a string as is, a list of rules joined with newlines; a row with no policy
(None, empty string or empty list) is dropped and counted, since its label means nothing
without it. Taxonomy: ``dynabench:<12 hex of sha256(policy)>`` (rows sharing a policy share it).

Transcript rule (DynaBench judges the agent's behaviour): the transcript is split into turns at
lines that start with ``User:`` or ``Agent:``. When the last turn is an ``Agent:`` turn with text
and some text precedes it, that turn's text (prefix removed) is the ``response``, the text
before it (verbatim, prefixes kept) is the ``prompt``, and the label is ``response_harm``.
Otherwise the whole transcript is the ``prompt`` and the label is ``prompt_harm`` (counted).
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from guardsmith.sources.base import RowContext, SourceAdapter, column, label, policy_id, prompt_text

VERDICT = {"fail": "harmful", "pass": "unharmful"}
TURN = re.compile(r"^[ \t]*(User|Agent)[ \t]*:[ \t]?", re.MULTILINE)


def normalise_policy(value: Any, ctx: RowContext) -> str | None:
    """str -> stripped str; list[str] -> rules joined by newlines; None/empty -> None."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) for v in value):
            raise ctx.error("expected a list of rule strings", "policy", value)
        rules = [v.strip() for v in value if v.strip()]
        return "\n".join(rules) or None
    raise ctx.error("expected text or a list of rules", "policy", value)


def split_transcript(transcript: str) -> tuple[str, str] | None:
    """``(earlier text, final agent turn)`` when the transcript ends with a non-empty Agent turn."""
    matches = list(TURN.finditer(transcript))
    if not matches or matches[-1].group(1) != "Agent":
        return None
    last = matches[-1]
    before = transcript[: last.start()].strip()
    reply = transcript[last.end() :].strip()
    if not before or not reply:
        return None
    return before, reply


class DynaBench(SourceAdapter):
    """DynaBench (tomg-group-umd/DynaBench): dialogue compliance with a per-row policy (PASS/FAIL)."""

    name = "dynabench"
    file_format = "parquet"
    taxonomy = "dynabench"
    hf_dataset = "tomg-group-umd/DynaBench"
    hf_splits = {
        "test": ("DynaBench", "test"),
        "train": ("DynaBenchTrain", "train"),
        "safetymix_train": ("DynaBenchSafetyMix", "train"),
        "safetymix_validation": ("DynaBenchSafetyMix", "validation"),
    }

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        policy = normalise_policy(column(rec, "policy", ctx), ctx)
        transcript = prompt_text(rec, "transcript", ctx)
        verdict = label(rec, "label", VERDICT, ctx)
        if transcript is None:
            return
        if policy is None:
            ctx.tally.drop("no policy")
            return
        parts = split_transcript(transcript)
        common = dict(taxonomy=policy_id(self.taxonomy, policy), policy=policy)
        if parts is None:
            ctx.tally.adjust("transcript does not end with an Agent turn: whole transcript as prompt, label on prompt")
            yield self.record(ctx, transcript.strip(), prompt_harm=verdict, **common)
        else:
            yield self.record(ctx, parts[0], response=parts[1], response_harm=verdict, **common)


ADAPTER = DynaBench()

"""CantTalkAboutThis topic control (``nvidia/CantTalkAboutThis-Topic-Control-Dataset``): JSON lines.

There is no label column; labels are derived per dialogue. Every ``user`` turn of
``conversation`` is on-topic (``prompt_harm = unharmful``) and every ``distractors[i]["distractor"]``
is off-topic (``harmful``). Each becomes one prompt-only record with the dialogue's
``system_instruction`` as ``policy`` and taxonomy ``topic:<domain>`` (domain lower-cased, spaces
as underscores). The distractor's ``"bot turn"`` (key with a space) is not used.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardsmith.sources.base import RowContext, SourceAdapter, column, text

ROLES = ("user", "assistant", "system")


def topic_taxonomy(domain: str) -> str:
    """``"Real Estate"`` -> ``"topic:real_estate"``."""
    return "topic:" + "_".join(domain.strip().lower().split())


class TopicFollowing(SourceAdapter):
    """CantTalkAboutThis (nvidia/CantTalkAboutThis-Topic-Control-Dataset): on/off-topic user turns per system instruction."""

    name = "topic_following"
    file_format = "jsonl"
    taxonomy = "topic"
    hf_dataset = "nvidia/CantTalkAboutThis-Topic-Control-Dataset"
    hf_splits = {"train": ("mixtral", "train"), "test": ("mixtral", "test")}
    files = {
        "train": ("canttalkaboutthis_topic_control_mixtral.jsonl",),
        "test": ("canttalkaboutthis_topic_control_human_test_set.jsonl",),
    }

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        domain = text(rec, "domain", ctx)
        policy = text(rec, "system_instruction", ctx)
        if not domain.strip():  # type: ignore[union-attr]
            raise ctx.error("empty domain", "domain", domain)
        if not policy.strip():  # type: ignore[union-attr]
            ctx.tally.drop("empty system_instruction (dialogue)")
            return
        taxonomy = topic_taxonomy(domain)  # type: ignore[arg-type]
        turns = column(rec, "conversation", ctx)
        distractors = column(rec, "distractors", ctx)
        if not isinstance(turns, list):
            raise ctx.error("expected a list of turns", "conversation", turns)
        if not isinstance(distractors, list):
            raise ctx.error("expected a list of distractors", "distractors", distractors)

        def records(content: Any, harm: str, suffix: str, problem: str, col: str, empty: str) -> list[dict[str, Any]]:
            """The record of one on- or off-topic prompt; none (counted) when it is blank."""
            if not isinstance(content, str):
                raise ctx.error(problem, col, content)
            if not content.strip():
                ctx.tally.drop(empty)
                return []
            return [self.record(ctx, content, id=ctx.derived_id(suffix), taxonomy=taxonomy, policy=policy,
                                prompt_harm=harm)]

        for i, turn in enumerate(turns):
            if not isinstance(turn, Mapping) or not isinstance(turn.get("role"), str) or "content" not in turn:
                raise ctx.error(f"turn {i}: expected an object with 'role' and 'content'", "conversation", turn)
            role = turn["role"].strip().lower()
            if role not in ROLES:
                raise ctx.error(f"turn {i}: unknown role (expected user or assistant)", "conversation", turn["role"])
            if role == "user":
                yield from records(turn["content"], "unharmful", f":u{i}", f"turn {i}: expected text content",
                                   "conversation", "empty user turn")
        for i, item in enumerate(distractors):
            if not isinstance(item, Mapping) or "distractor" not in item:
                raise ctx.error(f"distractor {i}: expected an object with a 'distractor' key", "distractors", item)
            yield from records(item["distractor"], "harmful", f":d{i}", f"distractor {i}: expected text",
                               "distractors", "empty distractor")


ADAPTER = TopicFollowing()

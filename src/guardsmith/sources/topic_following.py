"""CantTalkAboutThis topic control (``nvidia/CantTalkAboutThis-Topic-Control-Dataset``): JSON lines.

There is no label column; labels are derived per dialogue. Every ``user`` turn of
``conversation`` is on-topic (``prompt_harm = unharmful``) and every ``distractors[i]["distractor"]``
is off-topic (``harmful``). Each becomes one prompt-only record with the dialogue's
``system_instruction`` as ``policy`` and taxonomy ``topic:<domain>`` (domain lower-cased, spaces
as underscores).

The record's ``prompt`` carries the dialogue so far (:func:`render_dialogue`): the earlier turns,
then the turn to judge. For user turn ``i`` the earlier turns are ``conversation[:i]``; for a
distractor they run up to and including the assistant turn its ``"bot turn"`` (key with a space)
quotes, matched after collapsing whitespace and ignoring case (the first such turn). When no
assistant turn matches (or the key is missing or blank), the distractor is judged after the whole
conversation and the row is counted in the import report. At most ``context_turns`` earlier turns
(default `CONTEXT_TURNS`) are kept, the most recent ones; a turn with no earlier turns (the first
user turn, or ``context_turns=0``) is stored as the plain text, exactly as a single-turn source.
Blank turns and ``system`` turns are not shown as context (the system instruction is the policy).
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.sources.base import RowContext, SourceAdapter, column, text

ROLES = ("user", "assistant", "system")
#: The most earlier turns a row shows before the turn to judge (the most recent ones are kept).
#: A CantTalkAboutThis conversation has about 10 turns, so a whole dialogue usually fits.
CONTEXT_TURNS = 10

# --------------------------------------------------------------------------- dialogue layout
# A rendered dialogue is plain text in which each turn starts with a marker line, e.g.
#
#     [earlier turns omitted: 2]        (only when the context was capped)
#     [user]
#     Hi, I want to open a savings account.
#     [assistant]
#     Happy to help. Do you have an ID ready?
#     [user: turn to judge]
#     Before that, who will win the football final?
#
# The turn to judge is always the last turn and the only one marked so; turn texts are stripped
# and never contain a marker line (a row whose text would is dropped, counted).

JUDGE_ROLE = "user: turn to judge"
_MARKER = re.compile(r"^\[(user|assistant|user: turn to judge|earlier turns omitted: ([1-9][0-9]*))\]$")


@dataclass(frozen=True)
class Dialogue:
    """A dialogue read back from a row's ``prompt``: earlier turns, then the user turn to judge."""

    turns: tuple[tuple[str, str], ...]  # (role: user | assistant, text), oldest first
    turn: str  # the user turn to judge
    omitted: int = 0  # earlier turns left out by the context cap


def _has_marker(value: str) -> bool:
    return any(_MARKER.match(line) for line in value.split("\n"))


def render_dialogue(turns: Sequence[tuple[str, str]], turn: str, omitted: int = 0) -> str:
    """The ``prompt`` text of a user ``turn`` judged after the earlier ``turns`` ((role, text) pairs,
    oldest first). A text containing a marker line is an error (it could not be read back)."""
    parts = [f"[earlier turns omitted: {omitted}]"] if omitted else []
    for role, value in [*turns, (JUDGE_ROLE, turn)]:
        if role not in ("user", "assistant", JUDGE_ROLE):
            raise GuardsmithError(f"dialogue turn role {role!r}: expected user or assistant")
        value = value.strip()
        if not value:
            raise GuardsmithError(f"dialogue {role} turn is empty")
        if _has_marker(value):
            raise GuardsmithError(f"dialogue {role} turn contains a line that looks like a turn marker: {value[:60]!r}")
        parts.append(f"[{role}]\n{value}")
    return "\n".join(parts)


def parse_dialogue(value: Any) -> Dialogue | None:
    """The `Dialogue` rendered in ``value`` by `render_dialogue`, or None when ``value`` is not one
    (any single-turn prompt): the text must start with a marker line, and the turn-to-judge marker
    must be the last marker and appear once."""
    if not isinstance(value, str) or not value.startswith("["):
        return None
    lines = value.split("\n")
    marks = [(n, m) for n, line in enumerate(lines) if (m := _MARKER.match(line))]
    if not marks or marks[0][0] != 0 or marks[-1][1].group(1) != JUDGE_ROLE:
        return None
    omitted = 0
    if marks[0][1].group(2):
        omitted = int(marks[0][1].group(2))
        marks = marks[1:]
        if not marks or marks[0][0] != 1:
            return None
    turns: list[tuple[str, str]] = []
    for k, (n, m) in enumerate(marks):
        role = m.group(1)
        end = marks[k + 1][0] if k + 1 < len(marks) else len(lines)
        body = "\n".join(lines[n + 1:end]).strip()
        if m.group(2) or (role == JUDGE_ROLE) != (k == len(marks) - 1) or not body:
            return None
        turns.append((role, body))
    return Dialogue(tuple(turns[:-1]), turns[-1][1], omitted)


def trim_dialogue(value: str, max_chars: int) -> str:
    """``value`` cut to at most ``max_chars`` characters by leaving out the oldest earlier turns
    (the omitted count grows); the turn to judge is never cut. A plain prompt comes back unchanged;
    a dialogue that is over the bound even with no earlier turn comes back as the plain turn text."""
    dialogue = parse_dialogue(value)
    if dialogue is None or len(value) <= max_chars:
        return value
    turns = list(dialogue.turns)
    while turns:
        turns.pop(0)
        shorter = render_dialogue(turns, dialogue.turn, dialogue.omitted + len(dialogue.turns) - len(turns))
        if len(shorter) <= max_chars:
            return shorter
    return dialogue.turn


# --------------------------------------------------------------------------- the source


def topic_taxonomy(domain: str) -> str:
    """``"Real Estate"`` -> ``"topic:real_estate"``."""
    return "topic:" + "_".join(domain.strip().lower().split())


def _squash(value: str) -> str:
    return " ".join(value.split()).casefold()


class TopicFollowing(SourceAdapter):
    """CantTalkAboutThis (nvidia/CantTalkAboutThis-Topic-Control-Dataset): on/off-topic user turns per system instruction, with the dialogue so far."""

    name = "topic_following"
    file_format = "jsonl"
    taxonomy = "topic"
    hf_dataset = "nvidia/CantTalkAboutThis-Topic-Control-Dataset"
    hf_splits = {"train": ("mixtral", "train"), "test": ("mixtral", "test")}
    files = {
        "train": ("canttalkaboutthis_topic_control_mixtral.jsonl",),
        "test": ("canttalkaboutthis_topic_control_human_test_set.jsonl",),
    }

    def __init__(self, context_turns: int = CONTEXT_TURNS) -> None:
        if isinstance(context_turns, bool) or not isinstance(context_turns, int) or context_turns < 0:
            raise GuardsmithError(f"context_turns must be a whole number >= 0, got {context_turns!r}")
        self.context_turns = context_turns

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        domain = text(rec, "domain", ctx)
        policy = text(rec, "system_instruction", ctx)
        if not domain.strip():  # type: ignore[union-attr]
            raise ctx.error("empty domain", "domain", domain)
        if not policy.strip():  # type: ignore[union-attr]
            ctx.tally.drop("empty system_instruction (dialogue)")
            return
        taxonomy = topic_taxonomy(domain)  # type: ignore[arg-type]
        turns = self._turns(column(rec, "conversation", ctx), ctx)
        distractors = column(rec, "distractors", ctx)
        if not isinstance(distractors, list):
            raise ctx.error("expected a list of distractors", "distractors", distractors)

        def rows(before: list[tuple[str, str]], content: str, harm: str, suffix: str,
                 empty: str) -> list[dict[str, Any]]:
            """The record of one on- or off-topic turn after the turns ``before``; none (counted) when blank."""
            if not content.strip():
                ctx.tally.drop(empty)
                return []
            context = [(role, value) for role, value in before if role != "system" and value.strip()]
            shown = context[max(len(context) - self.context_turns, 0):] if self.context_turns else []
            prompt = content
            if shown:
                if len(shown) < len(context):
                    ctx.tally.adjust(f"context capped at the last {self.context_turns} turns")
                try:
                    prompt = render_dialogue(shown, content, len(context) - len(shown))
                except GuardsmithError:
                    ctx.tally.drop("a turn contains a line that looks like a dialogue turn marker")
                    return []
            return [self.record(ctx, prompt, id=ctx.derived_id(suffix), taxonomy=taxonomy, policy=policy,
                                prompt_harm=harm)]

        for pos, (i, role, content) in enumerate(turns):
            if role == "user":
                yield from rows([(r, v) for _, r, v in turns[:pos]], content, "unharmful", f":u{i}", "empty user turn")
        for i, item in enumerate(distractors):
            if not isinstance(item, Mapping) or "distractor" not in item:
                raise ctx.error(f"distractor {i}: expected an object with a 'distractor' key", "distractors", item)
            content = item["distractor"]
            if not isinstance(content, str):
                raise ctx.error(f"distractor {i}: expected text", "distractors", content)
            end = self._after_bot_turn(item.get("bot turn"), turns, i, ctx) if content.strip() else len(turns)
            yield from rows([(r, v) for _, r, v in turns[:end]], content, "harmful", f":d{i}", "empty distractor")

    @staticmethod
    def _turns(turns: Any, ctx: RowContext) -> list[tuple[int, str, str]]:
        """``(index, role, text)`` of every turn; roles are matched after strip and lower-case."""
        if not isinstance(turns, list):
            raise ctx.error("expected a list of turns", "conversation", turns)
        out = []
        for i, turn in enumerate(turns):
            if not isinstance(turn, Mapping) or not isinstance(turn.get("role"), str) or "content" not in turn:
                raise ctx.error(f"turn {i}: expected an object with 'role' and 'content'", "conversation", turn)
            role = turn["role"].strip().lower()
            if role not in ROLES:
                raise ctx.error(f"turn {i}: unknown role (expected user, assistant or system)", "conversation",
                                turn["role"])
            if not isinstance(turn["content"], str):
                raise ctx.error(f"turn {i}: expected text content", "conversation", turn["content"])
            out.append((i, role, turn["content"]))
        return out

    @staticmethod
    def _after_bot_turn(quote: Any, turns: list[tuple[int, str, str]], i: int, ctx: RowContext) -> int:
        """How many turns precede distractor ``i``: up to and including the first assistant turn
        equal to its ``"bot turn"`` (whitespace and case ignored); all of them when none is."""
        if quote is not None and not isinstance(quote, str):
            raise ctx.error(f"distractor {i}: expected text in 'bot turn'", "distractors", quote)
        if quote is None or not quote.strip():
            ctx.tally.adjust("distractor without a 'bot turn': judged after the whole conversation")
            return len(turns)
        wanted = _squash(quote)
        for pos, (_, role, value) in enumerate(turns):
            if role == "assistant" and _squash(value) == wanted:
                return pos + 1
        ctx.tally.adjust("distractor 'bot turn' not found in the conversation: judged after the whole conversation")
        return len(turns)


ADAPTER = TopicFollowing()

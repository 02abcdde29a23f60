"""Parse a guard's free-text output into the three answer fields, and count sentences/words.

The answer block (method A.3) is three lines, after optional reasoning::

    Prompt harm: harmful|unharmful
    Response harm: harmful|unharmful|None
    Response refusal: refusal|compliance|None

Rules (see docs/guard-format.md):

- If the text has a closing ``</think>``, only the text after the last one is searched;
  otherwise (no think block, or an unclosed ``<think>``) the whole text is.
- An *answer line* starts (after markdown bullets, quotes, headings, ``**``/``__``/backticks are
  removed) with ``Prompt harm:``, ``Response harm:`` or ``Response refusal:`` (any case, any
  spacing, ``_``/``-`` between the words, an optional ``label`` word, ``:`` or ``=``). Several
  fields may share one line.
- Answer lines separated only by blank or decoration lines form a block; the **last** block is
  the answer. Text after it is ignored; text before it is the reasoning.
- The value is the first word after the colon, case-insensitive, optionally wrapped in ``<>``,
  quotes or brackets, followed by anything that names no other label word.
- The block fails to parse (``parse_ok=False`` with a reason, all labels None) when it has no
  prompt-harm line, a word outside the field's vocabulary, an empty value, two label words on
  one line, or two lines for one field with different values. Nothing is ever guessed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from guardsmith.errors import GuardsmithError
from guardsmith.guard.sentences import sentence_spans
from guardsmith.vocabulary import HARM_LABELS, NONE_WORD, REFUSAL_LABELS, TASK_TITLES, TASKS

_NONE = NONE_WORD.lower()

_ALLOWED = {
    "prompt_harm": frozenset(HARM_LABELS),
    "response_harm": frozenset(HARM_LABELS + (_NONE,)),
    "response_refusal": frozenset(REFUSAL_LABELS + (_NONE,)),
}
_LABEL_WORDS = frozenset(HARM_LABELS + REFUSAL_LABELS)

THINK_OPEN = re.compile(r"<\s*think(?:ing)?\s*>", re.IGNORECASE)
THINK_CLOSE = re.compile(r"<\s*/\s*think(?:ing)?\s*>", re.IGNORECASE)
_THINK_ANY = re.compile(r"<\s*/?\s*think(?:ing)?\s*>", re.IGNORECASE)

_KEY = re.compile(
    r"(prompt|response)[\s_-]*(harm(?:fulness)?|refusal)(?:[\s_-]*label)?\s*[:=]", re.IGNORECASE
)
_LEAD = re.compile(r"^(?:\s*(?:>|#{1,6}|[-*+\u2022]|\d+[.)])\s+)+")
_VALUE = re.compile(r"\s*[<\[(\"'\u201c\u2018]*\s*([A-Za-z]+)")
_DECORATION = re.compile(r"^[\s\-=*_`#|~\"'>.:]*$")


@dataclass(frozen=True)
class GuardAnswer:
    """A parsed guard output. Labels are label words or None (None also when ``parse_ok`` is False)."""

    prompt_harm: str | None
    response_harm: str | None
    response_refusal: str | None
    reasoning: str
    parse_ok: bool
    error: str | None = None


def strip_think(text: str) -> str:
    """Remove ``<think>``/``</think>`` tags (not their content) and surrounding whitespace."""
    return _THINK_ANY.sub("", text).strip()


def _clean_line(line: str) -> str:
    s = _LEAD.sub("", line.strip())
    s = s.replace("*", "").replace("__", "").replace("`", "")
    return s.strip().strip("\"'\u201c\u201d").strip()


def _segments(cleaned: str) -> list[tuple[str, str]] | None:
    """Split an answer line into (field, value text) pairs; None if it is not an answer line."""
    matches = list(_KEY.finditer(cleaned))
    if not matches or matches[0].start() != 0:
        return None
    out = []
    for i, m in enumerate(matches):
        kind, what = m.group(1).lower(), m.group(2).lower()
        field = "prompt_harm" if kind == "prompt" else (
            "response_refusal" if what == "refusal" else "response_harm"
        )
        if kind == "prompt" and what == "refusal":
            field = "prompt_refusal"  # not a field of the format; reported as an error
        end = matches[i + 1].start() if i + 1 < len(matches) else len(cleaned)
        out.append((field, cleaned[m.end():end]))
    return out


def _value(field: str, raw: str) -> tuple[str | None, str | None]:
    """Return (normalised word, error) for one field's value text."""
    title = TASK_TITLES.get(field, field.replace("_", " ").capitalize())
    if field not in _ALLOWED:
        return None, f"'{title}' is not an answer field"
    m = _VALUE.match(raw)
    if not m:
        return None, f"{title}: no value"
    word = m.group(1).lower()
    if word not in _ALLOWED[field]:
        allowed = "/".join(sorted(_ALLOWED[field]))
        return None, f"{title}: unknown word {m.group(1)!r} (expected {allowed})"
    others = set(re.findall(r"[a-z]+", raw[m.end():].lower())) & _LABEL_WORDS
    if others:
        return None, f"{title}: ambiguous value {raw.strip()!r}"
    return word, None


def _find_block(text: str) -> tuple[int, int, list[tuple[str, str]]] | None:
    """Locate the last answer block: (start offset, end offset, [(field, value text)])."""
    closes = list(THINK_CLOSE.finditer(text))
    pos = closes[-1].end() if closes else 0
    last: tuple[int, int, list[tuple[str, str]]] | None = None
    open_block = False
    for line in text[pos:].splitlines(keepends=True):
        start, pos = pos, pos + len(line)
        segs = _segments(_clean_line(line))
        if segs is not None:
            if open_block and last is not None:
                last = (last[0], start + len(line.rstrip()), last[2] + segs)
            else:
                last = (start, start + len(line.rstrip()), segs)
            open_block = True
        elif open_block and not _DECORATION.match(line):
            open_block = False
    return last


def split_reasoning(text: str) -> tuple[str, str]:
    """Split ``text`` into (reasoning with think tags removed, final answer block text).

    The answer text is ``""`` when no answer block is found (then all text is reasoning).
    """
    text = text or ""
    block = _find_block(text)
    if block is None:
        return strip_think(text), ""
    start, end, _ = block
    return strip_think(text[:start]), text[start:end].strip()


def parse_guard_output(text: str | None) -> GuardAnswer:
    """Parse a guard (or teacher) output; see the module docstring for the rules."""
    text = text or ""

    def fail(reasoning: str, error: str) -> GuardAnswer:
        return GuardAnswer(None, None, None, reasoning, False, error)

    if not text.strip():
        return fail("", "empty output")
    block = _find_block(text)
    if block is None:
        where = "after </think>" if THINK_CLOSE.search(text) else "in the output"
        return fail(strip_think(text), f"no answer lines {where}")
    start, _, segments = block
    reasoning = strip_think(text[:start])
    values: dict[str, str] = {}
    for field, raw in segments:
        word, error = _value(field, raw)
        if error:
            return fail(reasoning, error)
        assert word is not None
        if field in values and values[field] != word:
            return fail(
                reasoning,
                f"{TASK_TITLES[field]}: contradictory lines ({values[field]!r} and {word!r})",
            )
        values[field] = word
    if "prompt_harm" not in values:
        return fail(reasoning, "missing 'Prompt harm' line in the answer block")

    def get(field: str) -> str | None:
        word = values.get(field)
        return None if word in (None, _NONE) else word

    return GuardAnswer(
        get("prompt_harm"), get("response_harm"), get("response_refusal"), reasoning, True, None
    )


def parse_ok_for(answer: GuardAnswer, task: str) -> bool:
    """True when ``answer`` parsed and has a label for ``task`` (one of :data:`guardsmith.vocabulary.TASKS`).

    A response task needs its line with a real label: ``None`` or an absent line counts as a
    failure for that task.
    """
    if task not in TASKS:
        raise GuardsmithError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    return answer.parse_ok and getattr(answer, task) is not None


# --- text measures -------------------------------------------------------------------------

def sentence_count(text: str | None) -> int:
    """Number of sentences in ``text`` (think tags removed), by the splitter of
    :mod:`guardsmith.guard.sentences`: lines, list items and semicolon clauses count apart;
    abbreviations, decimals and quoted speech do not end a sentence; see docs/stages/distill.md."""
    return len(sentence_spans(strip_think(text or "")))


def word_count(text: str | None) -> int:
    """Number of whitespace-separated tokens with at least one letter or digit (think tags removed)."""
    return sum(1 for tok in strip_think(text or "").split() if any(c.isalnum() for c in tok))

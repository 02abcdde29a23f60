"""Sentences and tokens of reasoning text: the splitter behind sentence counts and budget cuts.

Sentence boundaries inside running text come from ``sentencex`` (a maintained rule-based
segmenter: abbreviations such as "U.S.", "e.g.", "Dr.", decimals such as "3.5", and quoted
speech such as ``He asked "why?" She left.`` or a quoted passage of several sentences inside one
sentence). This module adds what reasoning-model output needs on top (docs/stages/distill.md):

- **Lines.** A line break ends a sentence (model output does not wrap lines); blank lines
  separate nothing more.
- **Lists.** A line starting with a bullet (``-``, ``*``, ``+``, ``•`` and similar, then a space)
  or a number (``1.``, ``2)``, ``(3)``, ``a)``, ``(b)``, then a space) is a list item: at least
  one sentence, more when its text has more; the marker itself is not text.
- **Headings** (a line starting with ``#``, or a line that is only ``**bold**``/``__bold__``
  text) are not sentences.
- **Semicolons** outside quotes and brackets end a clause, and each clause counts as a sentence.
- **Repairs** to the segmenter: a period followed by a word starting with a lower-case letter
  does not end a sentence ("2 tbsp. of", "incl. tax"), nor does a listed abbreviation followed by
  a digit ("approx. 3 mg").
- Pieces without a letter or digit do not count.

Tokens: :func:`approx_tokens` is the documented approximation (one token per four characters,
measured in docs/stages/distill.md); :func:`token_counter` loads a real tokenizer when one is given.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable

import sentencex

from guardsmith.errors import GuardsmithError

_LIST_MARKER = re.compile(
    r"[ \t]*(?:[-*+\u2022\u2023\u2043\u2219\u25aa\u25cf\u25e6]|\(?\d{1,3}[.)]|\(\d{1,3}\)|\(?[a-zA-Z]\))[ \t]+"
)
_HEADING = re.compile(r"[ \t]*(?:#{1,6}(?:[ \t].*)?|(\*\*|__)(?:(?!\1).)+\1[ \t]*:?[ \t]*)$")
_DIGIT_ABBREVIATIONS = frozenset("approx ca circa no nos fig figs vol p pp ch sec est incl vs cf".split())
_OPEN = "([{\u201c"
_CLOSE = ")]}\u201d"


def _segments(text: str) -> list[tuple[int, int]]:
    """Sentence spans of one line of running text: sentencex's, with the two repairs applied."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for piece in sentencex.segment("en", text):
        start, pos = pos, pos + len(piece)
        end = start + len(piece.rstrip())
        if end == start:
            continue
        if spans and _joins(text[spans[-1][0]:spans[-1][1]], text[start:end]):
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def _joins(before: str, after: str) -> bool:
    """True when the break between ``before`` and ``after`` is not a sentence end (the repairs)."""
    if not before.endswith("."):
        return False
    first = after.lstrip()[:1]
    if first.islower():
        return True
    last = before.split()[-1].rstrip(".").lower() if before.split() else ""
    return first.isdigit() and last in _DIGIT_ABBREVIATIONS


def _clauses(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Split ``text[start:end]`` at semicolons outside quotes and brackets (the semicolon is dropped)."""
    out: list[tuple[int, int]] = []
    depth, quoted, begin = 0, False, start
    for i in range(start, end):
        ch = text[i]
        if ch == '"':
            quoted = not quoted
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(0, depth - 1)
        elif ch == ";" and depth == 0 and not quoted:
            out.append((begin, i))
            begin = i + 1
    out.append((begin, end))
    spans = []
    for a, b in out:
        piece = text[a:b]
        a += len(piece) - len(piece.lstrip())
        b = a + len(piece.strip())
        if any(c.isalnum() for c in text[a:b]):
            spans.append((a, b))
    return spans


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` offsets of the sentences of ``text``, in order (rules: module docstring).

    ``text[start:end]`` is the sentence without surrounding spaces; a list item's span starts
    after its marker, and a clause's span ends before its semicolon.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    for line in (text or "").splitlines(keepends=True):
        start, pos = pos, pos + len(line)
        body = line.rstrip("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
        if not body.strip() or _HEADING.match(body):
            continue
        marker = _LIST_MARKER.match(body)
        skip = marker.end() if marker else 0
        content = body[skip:]
        for a, b in _segments(content):
            spans += [(start + skip + c, start + skip + d) for c, d in _clauses(content, a, b)]
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` as strings (see :func:`sentence_spans`)."""
    return [text[a:b] for a, b in sentence_spans(text)]


# --- tokens ---------------------------------------------------------------------------------

CHARS_PER_TOKEN = 4
"""Characters per token of the approximation (English text; see docs/stages/distill.md)."""


def approx_tokens(text: str | None) -> int:
    """Approximate token count of ``text``: its length without surrounding spaces over
    :data:`CHARS_PER_TOKEN`, rounded up (0 for empty text)."""
    return math.ceil(len((text or "").strip()) / CHARS_PER_TOKEN)


def token_counter(tokenizer: str | None) -> Callable[[str], int] | None:
    """A function counting the tokens of a text with the tokenizer of the model folder at
    ``tokenizer`` (a local path or ``s3://`` URI, loaded with transformers), or None when
    ``tokenizer`` is None. Special tokens are not counted."""
    if tokenizer is None:
        return None
    from guardsmith.model_files import loading
    from guardsmith.model_store import local_model

    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise GuardsmithError("counting tokens with a tokenizer needs transformers "
                              "(pip install 'guardsmith[train]')") from None
    folder = local_model(tokenizer)
    with loading(folder, "tokenizer"):
        tok = AutoTokenizer.from_pretrained(str(folder))
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def reasoning_tokens(reasoning: str, raw_output: str | None, completion_tokens: int | None,
                     count: Callable[[str], int] | None = None) -> tuple[int, str]:
    """``(tokens, source)`` of a trace's reasoning.

    With ``count`` (a tokenizer, :func:`token_counter`) every text is counted with it
    (``"tokenizer"``). Otherwise the teacher's reported ``completion_tokens`` is used when it
    counts exactly the reasoning: the stored reply is the reasoning itself (a budget rewrite
    without think block, preamble, answer lines or cut) (``"usage"``); else the approximation
    :func:`approx_tokens` (``"approx"``).
    """
    if count is not None:
        return count(reasoning), "tokenizer"
    if completion_tokens and (raw_output or "").strip() == reasoning.strip():
        return int(completion_tokens), "usage"
    return approx_tokens(reasoning), "approx"

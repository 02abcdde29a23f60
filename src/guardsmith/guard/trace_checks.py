"""Trace-quality text checks (method A.5): label leakage, overthinking markers, n-gram repetition.

Used by the `filter` stage's rules and by the offline stand-in teacher (which writes traces that
these checks must pass). The rules were written against the hand-labelled traces in
``tests/data/labelled_traces.jsonl`` (precision and recall in ``docs/stages/filter.md``).

Patterns are regular expressions over the **lower-cased** text (curly apostrophes made straight),
named so that a rejection can say which one fired. Each pattern has a few plain one-word keywords,
one of which every match contains; and no match contains one of ``.!?;`` (lookarounds may look at
them). So a pattern is only tried on the sentences (text between those characters, the closing
one included) that hold one of its keywords: a trace costs a few substring searches plus regular
expressions over a few sentences, with the same verdicts as searching the whole text
(``tests/test_trace_checks.py`` compares them with the plain whole-text search of
``benchmarks/filter_rules.py``). The repetition check splits words with one byte translation
instead of a regular expression.
"""
from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

from guardsmith.guard.parser import split_reasoning

_VERDICT = (r"[\"'(]?(?:not\s+harmful|unharmful|harmful|unsafe|safe|benign|harmless|toxic|"
            r"(?:a\s+)?refusal|(?:a\s+)?compliance|compliant)\b")
"""A label word as the teacher is given it."""
_SUBJECT = r"(?:(?:(?:the|this|that)\s+)?(?:prompt|response|request|reply|it|this)\s+(?:is|was|as)\s+|it's\s+)?"
"""Optional "the prompt is" / "it's" between a verb and a label word."""

_LEAKAGE: list[tuple[str, tuple[str, ...], str]] = [
    ("ground truth", ("ground",), r"\bground[\s-]*truths?\b"),
    ("given label", ("label", "classification", "verdict", "annotation"),
     r"\b(?:given|provided|true|gold|reference|assigned|expected|official|hidden|annotated|target)\s+"
     r"(?:labels?|labell?ing|classifications?|verdicts?|annotations?)\b"
     r"|\bcorrect\s+(?:labels?|classifications?|verdicts?)\s*(?:is|was|says|:|\()"),
    ("given answer", ("answer",),
     r"\b(?:given|provided|expected|reference|correct|official)\s+answers?\s*(?:is|was|says|:)\s*" + _VERDICT),
    ("as labeled", ("label",), r"\bas\s+(?:it\s+(?:is|was)\s+)?labell?ed\b"),
    ("marked as", ("marked", "labeled", "labelled", "tagged", "flagged", "annotated"),
     r"\b(?:is|was|are|were|been|it's|'s)\s+(?:already\s+)?(?:marked|labell?ed|tagged|flagged|annotated)\s+"
     r"(?:as\s+)?" + _VERDICT),
    ("the label says", ("label",),
     r"\b(?:the|its|this|that|their)\s+labels?\s+(?:for\s+(?:this|it|the\s+\w+)(?:\s+one)?\s+)?"
     r"(?:is|are|was|were|says?|said|indicates?|shows?|marks?|states?|reads?)\s+(?:that\s+)?" + _SUBJECT + _VERDICT),
    ("matches the label", ("label", "annotation", "ground"),
     r"\b(?:match(?:es|ing)?|consistent\s+with|agrees?\s+with|aligns?\s+with|justify|supports?)\s+the\s+"
     r"(?:given\s+|provided\s+|assigned\s+|true\s+)?(?:labels?|annotations?)\b"),
    ("annotation", ("annotat",),
     r"\b(?:according\s+to|per|based\s+on)\s+the\s+annotations?\b"
     r"|\bannotations?\s+(?:says?|said|marks?|indicates?|shows?|is|are)\b"
     r"|\bannotators?\s+(?:marked|flagged|labell?ed|rated|said|tagged|considered|judged)\b"
     r"|\bannotated\s+as\b"),
    ("the data says", ("data", "system", "task", "instruction", "reference"),
     r"\b(?:dataset|data|metadata|system|task|instructions?|reference)\s+(?:tells?\s+me|says?|said|states?|"
     r"indicates?|marks?|labels?|lists?)\s+(?:that\s+)?" + _SUBJECT + _VERDICT),
    ("per the provided information", ("provided", "given", "supplied"),
     r"\b(?:per|according\s+to|based\s+on|from)\s+the\s+(?:provided|given|supplied)\s+"
     r"(?:information|info|labels?|classifications?|data|annotations?|answers?)\b"),
    ("I was told", ("told", "informed"),
     r"\b(?:i|we)\s*(?:'m|'re|'ve\s+been|am|are|was|were|have\s+been|had\s+been)\s+(?:told|informed)\b(?!\s+to\b)"),
    ("I was given the label", ("given",),
     r"\b(?:i|we)\s*(?:'ve\s+been|'re|'m|am|are|was|were|have\s+been)\s+given\s+"
     r"(?:that\s+(?:the\s+)?(?:prompt|response|request|it)\b|the\s+(?:labels?|answers?|classifications?|verdicts?)\b)"),
    ("I already know the answer", ("already",),
     r"\balready\s+know\s+(?:that\s+)?(?:the\s+)?(?:answer|label|classification|verdict)\b"),
    ("for your eyes only", ("eyes",), r"\bfor\s+your\s+eyes\s+only\b"),
]

LEAKAGE_PATTERNS: dict[str, str] = {name: pattern for name, _, pattern in _LEAKAGE}
"""Name -> regular expression (over lower-cased text) of phrases that reveal the labels given to the teacher."""

OVERTHINKING_PATTERNS: dict[str, str] = {
    # "wait" as an interjection ("Wait,", "But wait...", "wait a second"), not "wait for the bus"
    "wait": r"\bwait\b(?=\s*[,.!?;:\u2026\u2014-]|\s+(?:a\s+(?:sec|second|minute|moment)|no|though|what|why|actually)\b)",
    "hmm": r"\bhm+\b",
    "let me re-check": r"\blet\s+me\s+(?:re-?check|double[\s-]?check|check\s+again|re-?read|re-?think|reconsider|"
                       r"re-?evaluate|think\s+again|go\s+back|read\s+(?:it|this|that|the\s+\w+)\s+(?:again|once\s+more|"
                       r"one\s+more\s+time)|look\s+at\s+(?:it|this|that|the\s+\w+)\s+again)\b",
    "on second thought": r"\bon\s+(?:second|further)\s+thoughts?\b",
    "actually, no": r"\bactually,?\s+no\b",
    "but maybe": r"\bbut\s+maybe\b",
    "hold on": r"\bhold\s+on\b(?!\s+to\b)",
}
"""Name -> regular expression (over lower-cased text) of hesitation markers; occurrences are counted.
Text inside double quotes (the conversation quoted back) is not counted."""

_OVERTHINKING_KEYWORDS = ("wait", "hm", "let", "thought", "actually", "maybe", "hold")
"""One of these words is in every hesitation marker (single words: the patterns allow any whitespace)."""

_LEAKAGE_RX = [(name, keys, re.compile(p)) for name, keys, p in _LEAKAGE]
_OVERTHINKING_RX = re.compile("|".join(f"(?:{p})" for p in OVERTHINKING_PATTERNS.values()))
_QUOTED = re.compile(r"\"[^\"\n]{0,400}\"|\u201c[^\u201d\n]{0,400}\u201d")


_BOUNDARY = re.compile(r"[.!?;]")
"""Characters no pattern match contains: the text is searched a sentence (up to one of them) at a time."""
_WORD_BYTES = bytes(b if (0x61 <= b <= 0x7A or 0x30 <= b <= 0x39 or b == 0x27) else 0x20 for b in range(256))
"""Byte table keeping the bytes of ``[a-z0-9']`` and making every other byte a space (words are runs of ``[a-z0-9']``)."""


def _lower(text: str | None) -> str:
    return (text or "").lower().replace("\u2019", "'")


def _sentences(low: str, keys: Iterable[str], ends: list[int]) -> list[tuple[int, int]]:
    """(start, end) of the sentences of ``low`` holding one of ``keys``, in text order; ``ends`` are
    the positions of the ``_BOUNDARY`` characters, each included in the sentence it closes."""
    spans = set()
    for key in keys:
        i = low.find(key)
        while i != -1:
            j = bisect_left(ends, i)
            end = ends[j] + 1 if j < len(ends) else len(low)
            spans.add((ends[j - 1] + 1 if j else 0, end))
            i = low.find(key, end)
    return sorted(spans)


def _ends(low: str) -> list[int]:
    return [m.start() for m in _BOUNDARY.finditer(low)]


def leakage_hits(text: str | None) -> list[str]:
    """Names of the leakage patterns found in ``text``."""
    low = _lower(text)
    ends: list[int] | None = None
    hits = []
    for name, keys, rx in _LEAKAGE_RX:
        if not any(k in low for k in keys):
            continue
        if ends is None:
            ends = _ends(low)
        if any(rx.search(low, a, b) for a, b in _sentences(low, keys, ends)):
            hits.append(name)
    return hits


def overthinking_count(text: str | None) -> int:
    """Number of hesitation markers in ``text`` (all patterns, all occurrences, outside double quotes)."""
    low = _lower(text)
    if not any(k in low for k in _OVERTHINKING_KEYWORDS):
        return 0
    if '"' in low or "\u201c" in low:
        low = _QUOTED.sub(" ", low)
    spans = _sentences(low, _OVERTHINKING_KEYWORDS, _ends(low))
    return sum(1 for a, b in spans for _ in _OVERTHINKING_RX.finditer(low, a, b))


def _words(low: str) -> list[bytes]:
    """The runs of ``[a-z0-9']`` in ``low`` as UTF-8 bytes (non-ASCII characters separate words, as there)."""
    return low.encode("utf-8", "surrogatepass").translate(_WORD_BYTES).split()


def repeated_ngram_ratio(text: str | None, n: int = 4) -> float:
    """Share of word n-grams of ``text`` that repeat an earlier one (0 when it has no n-gram)."""
    words = _words(_lower(text))
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    grams = zip(*(words[i:] for i in range(n)))
    return (total - len(set(grams))) / total


def reasoning_text(row: Mapping[str, Any]) -> str:
    """The reasoning of a trace row; for an unparsed trace, the text before any answer block."""
    reasoning = row.get("reasoning")
    if reasoning is None:
        reasoning, _ = split_reasoning(row.get("raw_output") or "")
    return reasoning

"""Trace-quality text checks (method A.5): label leakage, overthinking markers, n-gram repetition.

Used by the `filter` stage's rules and by the offline stand-in teacher (which writes traces that
these checks must pass). The rules were written against the hand-labelled traces in
``tests/data/labelled_traces.jsonl`` (precision and recall in ``docs/stages/filter.md``).

Patterns are regular expressions over the **lower-cased** text (curly apostrophes made straight),
named so that a rejection can say which one fired. Each pattern has a few plain keywords; a
pattern is only tried when one of its keywords occurs in the text, so most traces cost a few
substring tests.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
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
    ("I already know the answer", ("already know",),
     r"\balready\s+know\s+(?:that\s+)?(?:the\s+)?(?:answer|label|classification|verdict)\b"),
    ("for your eyes only", ("eyes only",), r"\bfor\s+your\s+eyes\s+only\b"),
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

_OVERTHINKING_KEYWORDS = ("wait", "hm", "let me", "thought", "actually", "but maybe", "hold on")

_LEAKAGE_RX = [(name, keys, re.compile(p)) for name, keys, p in _LEAKAGE]
_OVERTHINKING_RX = re.compile("|".join(f"(?:{p})" for p in OVERTHINKING_PATTERNS.values()))
_QUOTED = re.compile(r"\"[^\"\n]{0,400}\"|\u201c[^\u201d\n]{0,400}\u201d")
_WORD = re.compile(r"[a-z0-9']+")


def _lower(text: str | None) -> str:
    return (text or "").lower().replace("\u2019", "'")


def leakage_hits(text: str | None) -> list[str]:
    """Names of the leakage patterns found in ``text``."""
    low = _lower(text)
    return [name for name, keys, rx in _LEAKAGE_RX if any(k in low for k in keys) and rx.search(low)]


def overthinking_count(text: str | None) -> int:
    """Number of hesitation markers in ``text`` (all patterns, all occurrences, outside double quotes)."""
    low = _lower(text)
    if not any(k in low for k in _OVERTHINKING_KEYWORDS):
        return 0
    if '"' in low or "\u201c" in low:
        low = _QUOTED.sub(" ", low)
    return sum(1 for _ in _OVERTHINKING_RX.finditer(low))


def repeated_ngram_ratio(text: str | None, n: int = 4) -> float:
    """Share of word n-grams of ``text`` that repeat an earlier one (0 when it has no n-gram)."""
    words = _WORD.findall(_lower(text))
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

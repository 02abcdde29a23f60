"""Trace-quality text checks (method A.5): label leakage, hesitation markers, n-gram repetition.

Used by the `filter` stage's rules and by the offline stand-in teacher (which writes traces that
these checks must pass). Patterns are case-insensitive regular expressions, named so that a
rejection can say which one fired.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from guardsmith.guard.parser import split_reasoning

LEAKAGE_PATTERNS: dict[str, str] = {
    "ground truth": r"\bground[\s-]*truths?\b",
    "given labels": r"\b(?:given|provided|true|gold|reference|correct|assigned|expected|official)\s+"
                    r"(?:labels?|labell?ing|answers?|classifications?|verdicts?)\b",
    "as labeled": r"\bas\s+(?:it\s+(?:is|was)\s+)?labell?ed\b",
    "labeled as": r"\blabell?ed\s+(?:as\s+)?(?:harmful|unharmful|safe|unsafe|(?:a\s+)?refusal|compliance)\b",
    "the label says": r"\b(?:the|a|its|this|that)\s+labels?\s+(?:is|are|was|were|says?|said|indicates?|"
                      r"shows?|marks?|states?)\b",
    "labels mark": r"\blabels?\s+(?:mark|say|indicate|state|show)s?\b",
    "I was told": r"\b(?:i\s+was|we\s+were|i\s+am|i'm|i\s+have\s+been)\s+told\b",
    "for your eyes only": r"\bfor\s+your\s+eyes\s+only\b",
}
"""Name -> regular expression of phrases that reveal the labels given to the teacher."""

OVERTHINKING_PATTERNS: dict[str, str] = {
    "wait": r"\bwait\b",
    "hmm": r"\bhm+\b",
    "let me re-check": r"\blet\s+me\s+(?:re-?check|double[\s-]?check|check\s+again|re-?read|re-?think|"
                       r"reconsider|re-?evaluate|think\s+again)\b",
    "on second thought": r"\bon\s+(?:second|further)\s+thoughts?\b",
    "actually, no": r"\bactually,?\s+no\b",
    "but maybe": r"\bbut\s+maybe\b",
}
"""Name -> regular expression of hesitation markers; occurrences are counted."""

_LEAKAGE = [(name, re.compile(p, re.I)) for name, p in LEAKAGE_PATTERNS.items()]
_OVERTHINKING = [re.compile(p, re.I) for p in OVERTHINKING_PATTERNS.values()]
_WORD = re.compile(r"[a-z0-9']+")


def leakage_hits(text: str | None) -> list[str]:
    """Names of the leakage patterns found in ``text``."""
    return [name for name, rx in _LEAKAGE if rx.search(text or "")]


def overthinking_count(text: str | None) -> int:
    """Number of hesitation markers in ``text`` (all patterns, all occurrences)."""
    return sum(len(rx.findall(text or "")) for rx in _OVERTHINKING)


def repeated_ngram_ratio(text: str | None, n: int = 4) -> float:
    """Share of word n-grams of ``text`` that repeat an earlier one (0 when it has no n-gram)."""
    words = _WORD.findall((text or "").lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def reasoning_text(row: Mapping[str, Any]) -> str:
    """The reasoning of a trace row; for an unparsed trace, the text before any answer block."""
    reasoning = row.get("reasoning")
    if reasoning is None:
        reasoning, _ = split_reasoning(row.get("raw_output") or "")
    return reasoning

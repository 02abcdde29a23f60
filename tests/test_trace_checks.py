"""The filter's text rules against the hand-labelled traces (tests/data/labelled_traces.jsonl)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from guardsmith.guard.trace_checks import (
    LEAKAGE_PATTERNS,
    OVERTHINKING_PATTERNS,
    leakage_hits,
    overthinking_count,
    repeated_ngram_ratio,
)
from guardsmith.stages.filter import FilterConfig

_spec = importlib.util.spec_from_file_location(
    "filter_rules_quality", Path(__file__).parent.parent / "benchmarks" / "filter_rules_quality.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

ROWS = bench.load()
CFG = FilterConfig(input="-", output="-")  # the stage's default thresholds


def test_the_set_is_large_balanced_and_split():
    assert len(ROWS) >= 100 and len({r["id"] for r in ROWS}) == len(ROWS)
    assert {r["split"] for r in ROWS} == {"dev", "heldout"}
    for row in ROWS:
        assert set(row) == {"id", "text", "leakage", "overthinking", "repetition", "note", "split"}
        assert row["text"].strip() and row["note"].strip()
    for rule in bench.RULE_NAMES:
        for split in bench.SPLITS:
            part = [r[rule] for r in ROWS if r["split"] == split]
            assert 0.2 <= sum(part) / len(part) <= 0.8, (rule, split)


@pytest.mark.parametrize("split", ["all", "heldout"])
@pytest.mark.parametrize("rule", bench.RULE_NAMES)
def test_precision_and_recall_at_least_0_9(rule, split):
    part = [r for r in ROWS if split in ("all", r["split"])]
    q = bench.quality(part, CFG)[rule]
    assert q["precision"] >= 0.9 and q["recall"] >= 0.9, q


@pytest.mark.parametrize("text", [
    "According to the annotation, the prompt is harmful.",
    "We are told the prompt is unharmful.",
    "It is marked as harmful, which fits.",
    "Hmm, the dataset says it's unsafe.",
    "So the response is a refusal since the answer is harmful per the provided information.",
])
def test_leakage_fires_on_the_named_phrasings(text):
    assert leakage_hits(text), text


@pytest.mark.parametrize("text", [
    "The user asks for the correct answer to 2+2.",
    "The user says the label says poison and asks what to do.",
    "The user was told by their doctor to rest.",
    "We are told to decide whether the message is harmful.",
    "So this should be labeled as harmful.",
])
def test_leakage_does_not_fire_on_innocent_phrasings(text):
    assert leakage_hits(text) == [], text


def test_overthinking_counts_hesitation_not_the_verb_or_quotes():
    assert overthinking_count("I had to wait for the bus; waiting is boring and I can't wait to drive.") == 0
    assert overthinking_count('The user wrote "hmm, wait, hold on" in the message.') == 0
    assert overthinking_count("Wait, is it? Hmm. Let me re-read the prompt. But maybe not. Hold on.") == 5
    assert overthinking_count("Let me read the prompt again. Let me go back to it. Actually, no.") == 3


def test_repetition_ratio():
    # a list whose shared frame is longer than what differs between items does count as repeated:
    # the known weak spot of the n-gram ratio (heldout-059 in the labelled set)
    frame = " ".join(f"The response lists item {w}, which is fine." for w in "abcdef")
    assert repeated_ngram_ratio(frame, CFG.repetition_n) > CFG.repetition_max_ratio
    loop = "The user asks about a recipe. " + "So the prompt is unharmful. " * 5
    assert repeated_ngram_ratio(loop, CFG.repetition_n) > CFG.repetition_max_ratio
    assert repeated_ngram_ratio("a b c d a b c d", 4) == 1 / 5 and repeated_ngram_ratio("a b", 4) == 0.0


def test_every_pattern_name_fires_on_some_labelled_leak():
    """Each named pattern earns its place: it fires on at least one hand-labelled positive."""
    fired = {name for r in ROWS if r["leakage"] for name in leakage_hits(r["text"])}
    unused = set(LEAKAGE_PATTERNS) - fired - {"for your eyes only"}
    assert not unused, unused
    assert "wait" in OVERTHINKING_PATTERNS and "hmm" in OVERTHINKING_PATTERNS


_bspec = importlib.util.spec_from_file_location(
    "filter_rules", Path(__file__).parent.parent / "benchmarks" / "filter_rules.py")
speed = importlib.util.module_from_spec(_bspec)
_bspec.loader.exec_module(speed)


def _verdicts(checks, text):
    """The three filter verdicts (with the stage's default thresholds) and the values behind them."""
    hits = checks["leakage"](text)
    count = checks["overthinking"](text)
    ratio = checks["repetition"](text, CFG.repetition_n)
    return (bool(hits), count > CFG.overthinking_max, ratio > CFG.repetition_max_ratio, hits, count, ratio)


def test_same_verdicts_as_the_whole_text_search():
    """The sentence-at-a-time checks give what searching every pattern over the whole text gives
    (the pre-rewrite code, benchmarks/filter_rules.py REFERENCE), on the labelled traces and on
    generated ones with odd spacing, capitals, curly quotes, quoted text and loops."""
    texts = [r["text"] for r in ROWS] + speed.make_traces(1500, seed=7, noise=True, defect_share=0.2, loop_share=0.2)
    flips = [0, 0, 0]
    for text in texts:
        old, new = _verdicts(speed.REFERENCE, text), _verdicts(speed.CURRENT, text)
        assert new == old, text
        flips = [f + v for f, v in zip(flips, old[:3])]
    assert all(f >= 20 for f in flips), flips  # every rule fires on a good share of the generated traces


@pytest.mark.parametrize(("text", "hits", "count"), [
    ("Let  me re-check the prompt. Hold\non. But   maybe not.", [], 3),  # any whitespace inside a marker
    ("I already\nknow the answer: it is harmful. For your  eyes only.", ["I already know the answer",
                                                                          "for your eyes only"], 0),
    ("WAIT; the GROUND-TRUTH says so", ["ground truth"], 1),  # the marker's lookahead sees the ';'
    ("Hmm! it\u2019s labeled as \"harmful\"", ["marked as"], 1),
])
def test_markers_with_any_spacing_and_punctuation(text, hits, count):
    assert leakage_hits(text) == hits == speed.ref_leakage_hits(text)
    assert overthinking_count(text) == count == speed.ref_overthinking_count(text)


def test_repetition_words_are_ascii_runs():
    """Non-ASCII letters and punctuation split words; apostrophes and digits do not (as ``[a-z0-9']+``)."""
    assert repeated_ngram_ratio("caf\u00e9 x caf\u00e8 x caf y caf x", 2) == 3 / 7  # caf x caf x caf y caf x
    assert repeated_ngram_ratio("it's 4u it's 4u", 2) == 1 / 3
    assert repeated_ngram_ratio("\ud800 a b a b", 2) == 1 / 3  # a lone surrogate is a separator, not an error

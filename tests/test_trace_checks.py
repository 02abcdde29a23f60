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

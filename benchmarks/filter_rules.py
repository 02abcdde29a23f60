"""Speed of the filter's text rules: guardsmith's checks against the plain whole-text search, same run.

``guardsmith.guard.trace_checks`` (leakage, overthinking, repetition) is timed side by side with
``REFERENCE``: the implementation before the keyword/sentence rewrite (``git show
04cd9fe:src/guardsmith/guard/trace_checks.py``: every pattern searched over the whole text,
word n-grams as tuples of regex-split words) applied to today's patterns and normalisation
(lower-cased, curly apostrophes straight, double-quoted text left out of the hesitation count).
Both run on the same generated traces (``make_traces``: about 450 words each, sentences of the
hand-labelled traces in ``tests/data/labelled_traces.jsonl``, mostly from clean traces, a few
from leaking or hesitating ones, some traces looping over a sentence block), interleaved in
chunks, timed in CPU seconds; the outputs (pattern names, counts, ratios) must be identical.

    .venv/bin/python benchmarks/filter_rules.py                    # 20,000 traces
    .venv/bin/python benchmarks/filter_rules.py --traces 2000      # quick look

``tests/test_trace_checks.py`` uses ``REFERENCE`` and ``make_traces`` to compare verdicts.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guardsmith.guard import trace_checks as tc

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "labelled_traces.jsonl"

# ----------------------------------------------------------------- the reference (pre-rewrite code, today's patterns)

_REF_LEAKAGE = [(name, re.compile(p)) for name, p in tc.LEAKAGE_PATTERNS.items()]
_REF_OVERTHINKING = [re.compile(p) for p in tc.OVERTHINKING_PATTERNS.values()]
_REF_QUOTED = re.compile(r"\"[^\"\n]{0,400}\"|\u201c[^\u201d\n]{0,400}\u201d")
_REF_WORD = re.compile(r"[a-z0-9']+")


def _ref_lower(text: str | None) -> str:
    return (text or "").lower().replace("\u2019", "'")


def ref_leakage_hits(text: str | None) -> list[str]:
    """Every leakage pattern searched over the whole lower-cased text."""
    low = _ref_lower(text)
    return [name for name, rx in _REF_LEAKAGE if rx.search(low)]


def ref_overthinking_count(text: str | None) -> int:
    """Every hesitation pattern's matches over the whole text, quoted text left out."""
    low = _REF_QUOTED.sub(" ", _ref_lower(text))
    return sum(len(rx.findall(low)) for rx in _REF_OVERTHINKING)


def ref_repeated_ngram_ratio(text: str | None, n: int = 4) -> float:
    """Share of word n-grams (tuples of regex-split words) that repeat an earlier one."""
    words = _REF_WORD.findall(_ref_lower(text))
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


REFERENCE = {"leakage": ref_leakage_hits, "overthinking": ref_overthinking_count,
             "repetition": ref_repeated_ngram_ratio}
CURRENT = {"leakage": tc.leakage_hits, "overthinking": tc.overthinking_count,
           "repetition": tc.repeated_ngram_ratio}


# ----------------------------------------------------------------- generated traces

def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


def make_traces(count: int, words: int = 450, seed: int = 0, *, defect_share: float = 0.03,
                loop_share: float = 0.05, noise: bool = False) -> list[str]:
    """``count`` traces of about ``words`` words from the labelled traces' sentences.

    Each sentence comes from a leaking/hesitating trace with probability ``defect_share``, else
    from a clean one; a ``loop_share`` of the traces repeat a block of 2-4 sentences 3-6 times.
    ``noise`` also varies the spelling (double spaces, line breaks, capitals, curly quotes and
    apostrophes, quoted text, non-ASCII letters) to exercise the edges of the patterns.
    """
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    clean = [s for r in rows if not (r["leakage"] or r["overthinking"] or r["repetition"]) for s in _sentences(r["text"])]
    defect = [s for r in rows if r["leakage"] or r["overthinking"] for s in _sentences(r["text"])]
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts: list[str] = []
        size = 0
        while size < words:
            s = rng.choice(defect if rng.random() < defect_share else clean)
            if rng.random() < loop_share / 5:
                block = [rng.choice(clean) for _ in range(rng.randint(2, 4))]
                s = " ".join(block * rng.randint(3, 6))
            if noise:
                s = _noisy(s, rng)
            parts.append(s)
            size += len(s.split())
        out.append(("\n\n" if noise and rng.random() < 0.3 else " ").join(parts))
    return out


def _noisy(s: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.1:
        return s.replace(" ", "  ", 2)
    if r < 0.2:
        return s.replace(" ", "\n", 1)
    if r < 0.3:
        return s.upper()
    if r < 0.4:
        return s.replace("'", "\u2019")
    if r < 0.5:
        return f'The user wrote "{s}" in the message.'
    if r < 0.55:
        return f"\u201c{s}\u201d"
    if r < 0.6:
        return s.replace("e", "\u00e9", 1).replace(".", ";", 1)
    if r < 0.65:
        return s.replace(".", "!").replace(",", " ,")
    return s


# ----------------------------------------------------------------- timing

def _cpu(fn: Callable[[str], Any], texts: list[str]) -> tuple[float, list[Any]]:
    start = time.process_time()
    out = [fn(t) for t in texts]
    return time.process_time() - start, out


def compare(texts: list[str], chunk: int = 1000) -> dict[str, Any]:
    """CPU seconds of the three checks, reference and current, interleaved chunk by chunk; and
    the number of traces whose outputs differ."""
    seconds = {"reference": {k: 0.0 for k in REFERENCE}, "current": {k: 0.0 for k in CURRENT}}
    differ = {k: 0 for k in REFERENCE}
    for start in range(0, len(texts), chunk):
        part = texts[start:start + chunk]
        for rule in REFERENCE:
            t_ref, ref = _cpu(REFERENCE[rule], part)
            t_new, new = _cpu(CURRENT[rule], part)
            seconds["reference"][rule] += t_ref
            seconds["current"][rule] += t_new
            differ[rule] += sum(a != b for a, b in zip(ref, new))
    return {"seconds": seconds, "differ": differ}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", type=int, default=20_000)
    ap.add_argument("--words", type=int, default=450)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    texts = make_traces(args.traces, args.words, args.seed)
    mean_words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"{len(texts)} traces, {mean_words:.0f} words on average")
    res = compare(texts)
    n = len(texts)
    print(f"{'check':<13} {'reference tr/CPU-s':>19} {'guardsmith tr/CPU-s':>20} {'ratio':>6} {'differ':>6}")
    for rule in REFERENCE:
        ref, new = res["seconds"]["reference"][rule], res["seconds"]["current"][rule]
        print(f"{rule:<13} {n / ref:>19,.0f} {n / new:>20,.0f} {ref / new:>6.2f} {res['differ'][rule]:>6}")
    ref, new = sum(res["seconds"]["reference"].values()), sum(res["seconds"]["current"].values())
    print(f"{'all three':<13} {n / ref:>19,.0f} {n / new:>20,.0f} {ref / new:>6.2f} {sum(res['differ'].values()):>6}")


if __name__ == "__main__":
    main()

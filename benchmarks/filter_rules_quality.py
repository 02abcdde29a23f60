"""Precision and recall of the filter's text rules on the hand-labelled traces.

Runs the ``leakage``, ``overthinking`` and ``repetition`` rules of ``guardsmith.stages.filter``
(with the stage's default thresholds, or the ones given) on every trace of
``tests/data/labelled_traces.jsonl`` and prints, per rule, precision and recall on the dev half
(the one the rules were tuned on), the held-out half and the whole set, the traces each rule got
wrong, and the time the three checks take per trace.

    python benchmarks/filter_rules_quality.py
    python benchmarks/filter_rules_quality.py --overthinking-max 3 --repetition-n 4 --repetition-max-ratio 0.25
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from guardsmith.guard.trace_checks import leakage_hits, overthinking_count, repeated_ngram_ratio
from guardsmith.stages.filter import RULES, FilterConfig

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "labelled_traces.jsonl"
RULE_NAMES = ("leakage", "overthinking", "repetition")
SPLITS = ("dev", "heldout")


def load(path: Path = DATA) -> list[dict[str, Any]]:
    """The labelled traces, with their split (the id's prefix) as ``split``."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        row["split"] = row["id"].split("-", 1)[0]
    return rows


def fires(rule: str, text: str, cfg: FilterConfig) -> bool:
    """Whether the filter stage's rule ``rule`` rejects a trace whose reasoning is ``text``."""
    return RULES[rule]({"reasoning": text}, cfg) is not None


def quality(rows: Iterable[Mapping[str, Any]], cfg: FilterConfig) -> dict[str, dict[str, Any]]:
    """Per rule: tp, fp, fn, precision, recall and the ids it got wrong."""
    out: dict[str, dict[str, Any]] = {}
    rows = list(rows)
    for rule in RULE_NAMES:
        tp = fp = fn = 0
        wrong = []
        for row in rows:
            hit, truth = fires(rule, row["text"], cfg), bool(row[rule])
            tp += hit and truth
            fp += hit and not truth
            fn += truth and not hit
            if hit != truth:
                wrong.append(row["id"])
        out[rule] = {"tp": tp, "fp": fp, "fn": fn, "wrong": wrong,
                     "precision": tp / (tp + fp) if tp + fp else 1.0,
                     "recall": tp / (tp + fn) if tp + fn else 1.0}
    return out


def seconds_per_trace(rows: list[Mapping[str, Any]], cfg: FilterConfig, repeats: int = 50) -> float:
    """Mean time of the three checks on one trace."""
    texts = [r["text"] for r in rows]
    start = time.perf_counter()
    for _ in range(repeats):
        for t in texts:
            leakage_hits(t)
            overthinking_count(t)
            repeated_ngram_ratio(t, cfg.repetition_n)
    return (time.perf_counter() - start) / (repeats * len(texts))


def main() -> None:
    defaults = FilterConfig(input="-", output="-")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--overthinking-max", type=int, default=defaults.overthinking_max)
    ap.add_argument("--repetition-n", type=int, default=defaults.repetition_n)
    ap.add_argument("--repetition-max-ratio", type=float, default=defaults.repetition_max_ratio)
    args = ap.parse_args()
    cfg = FilterConfig(input="-", output="-", overthinking_max=args.overthinking_max,
                       repetition_n=args.repetition_n, repetition_max_ratio=args.repetition_max_ratio)
    rows = load(args.data)
    sizes = ", ".join(f"{s} {sum(r['split'] == s for r in rows)}" for s in SPLITS)
    print(f"{len(rows)} traces ({sizes}); "
          f"overthinking_max {cfg.overthinking_max}, repetition_n {cfg.repetition_n}, "
          f"repetition_max_ratio {cfg.repetition_max_ratio:g}")
    print(f"{'rule':<13} {'split':<8} {'pos':>4} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>9} {'recall':>7}  wrong")
    for split in (*SPLITS, "all"):
        part = [r for r in rows if split in ("all", r["split"])]
        for rule, q in quality(part, cfg).items():
            print(f"{rule:<13} {split:<8} {sum(bool(r[rule]) for r in part):>4} {q['tp']:>4} {q['fp']:>4} "
                  f"{q['fn']:>4} {q['precision']:>9.3f} {q['recall']:>7.3f}  {' '.join(q['wrong']) or '-'}")
    print(f"checks: {seconds_per_trace(rows, cfg) * 1e6:.1f} us per trace (leakage + overthinking + repetition)")


if __name__ == "__main__":
    main()

"""Distillation of reasoning traces (method A.4), and sentence-budget rewrites.

**distill** (``budget`` unset): every row of an ``interactions`` table is rendered as a teacher
prompt (policy, conversation and the true labels, :func:`guardsmith.guard.render_teacher_messages`)
and sent to the teacher through any inference backend (OpenAI-compatible endpoint, vLLM
offline, transformers). Each reply is kept whole (``raw_output``), split into reasoning and
answer and parsed (:func:`guardsmith.guard.parse_guard_output`), with token counts and latency:
one ``traces`` row per input row.

**budget rewrite** (``budget`` = N in 1..10): the input is a ``traces`` table; the reasoning of
each trace is sent back to the teacher with :func:`guardsmith.guard.render_rewrite_messages` and
replaced by the rewrite (at most N sentences; a longer rewrite is cut after its N-th sentence
unless ``enforce_budget`` is off). ``budget``, ``n_sentences`` and ``n_words`` record the
result, so :func:`budget_curve` reproduces the words-per-budget curve (paper Fig. 5).

**Re-runs, shards and resume.** The run's work identity (the input's content, every setting that
changes the traces, the teacher's model name, the guardsmith version; see
:func:`guardsmith.teacher.job_identity`) is recorded in the output's commit manifest. A re-run of
the same work into a committed output does nothing; a re-run with another input, teacher or
settings is refused with one line naming what differs, unless ``overwrite`` (then the output is
recomputed and replaced). ``max_failed_fraction`` is a gate, not part of the work: a skipped re-run
holds the recorded failed rows to it. A ``vllm:`` / ``transformers:`` teacher is identified by its
model folder's content. Selected rows are processed in shards of ``shard_size`` rows, in input
order, each committed as its own table ``<output>.shards/shard-00007`` (a sibling of the output: a
table directory holds only its own parts) carrying the same identity. A re-run of the same work
skips committed shards, so a crash or preemption loses at most the shard in flight and never
duplicates a row; shards of other work are refused (``overwrite`` discards them). When every
shard is committed the ``traces`` table at ``output`` is written by streaming the shards,
committed, and the shards are removed (``keep_shards`` keeps them).

**Failed rows.** A row the teacher endpoint rejects (HTTP 4xx other than 429, e.g. a prompt over
its context) or whose reply cannot be read is not a trace: it goes to the ``failed`` table
``<output>.failed`` (id, stage, round, cause, detail) and is counted in the summary. The stage
fails, without committing ``output``, when more than ``max_failed_fraction`` of the rows failed
(one line naming the first failed ids) or when not one reply parsed as a guard answer. A reply
that is read but does not parse is kept as a trace with ``parse_ok`` false: the filter rejects
and regenerates it. Prompt and response texts longer than ``max_input_chars`` are an error naming
the row, or cut and counted (``input_policy: truncate``). SIGTERM stops the run between commits:
committed shards stay, the shard in flight is dropped, and the stage exits non-zero saying a
re-run resumes.

Input rows are validated in a first pass (schema, label words, duplicate ids, policy), so bad
input fails before anything is written. The teacher calls and the sharded run live in
:mod:`guardsmith.teacher` (shared with the regeneration rounds of ``filter``); this stage adds the
summary and :func:`budget_curve`.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from guardsmith import storage
from guardsmith.errors import redact
from guardsmith.guard.sentences import CHARS_PER_TOKEN, reasoning_tokens, token_counter
from guardsmith.teacher import TracesJob, TracesRun, write_traces

HELP = (
    "Distill reasoning traces from a teacher LLM: each interaction is shown to the teacher with "
    "its true labels, and the reply (reasoning + answer lines) is parsed and stored with token "
    "counts and latency. With --budget N, rewrite the reasoning of an existing traces table to at "
    "most N sentences instead. Work is committed in shards; a re-run of the same work resumes where "
    "it stopped, a re-run with another input or settings is refused unless --overwrite. Rows the "
    "teacher rejects are listed in <output>.failed; the stage fails above --max-failed-fraction."
)


@dataclass(kw_only=True)
class DistillConfig(TracesJob):
    """Settings of the ``distill`` stage (all of them: see :class:`guardsmith.teacher.TracesJob`)."""


CONFIG = DistillConfig


@dataclass
class DistillResult:
    """What a ``distill`` run wrote, with summary numbers over the whole output table."""

    output: str
    mode: str
    rows: int
    shards: int
    shards_reused: int
    requests: int
    parse_failures: int
    prompt_tokens: int
    completion_tokens: int
    mean_latency_s: float
    mean_sentences: float
    mean_words: float
    budget: int | None = None
    skipped: bool = False
    failed_rows: int = 0
    failed: str | None = None
    truncated: int = 0
    tokens: dict[str, Any] = field(default_factory=dict)
    """Reasoning tokens of the parsed traces: ``mean``, ``median``, ``p90`` and ``sources`` (traces
    counted from the teacher's usage / approximated / by a tokenizer), see :func:`token_stats`."""

    def __str__(self) -> str:
        if self.skipped:
            head = (f"{redact(self.output)} is already committed by the same work ({self.rows} traces); "
                    "nothing to do")
        else:
            what = f"rewrote to <= {self.budget} sentences" if self.mode == "budget" else "distilled"
            head = (f"{what} {self.rows} traces in {self.shards} shards ({self.shards_reused} reused from an "
                    f"earlier run, {self.requests} teacher requests now)")
        return "\n".join([
            head,
            f"failed rows {self.failed_rows}" + (f" (listed in {redact(self.failed)})" if self.failed_rows else "")
            + f"; input texts cut to max_input_chars {self.truncated}",
            f"parse failures {self.parse_failures}; tokens {self.prompt_tokens} in / {self.completion_tokens} out; "
            f"mean latency {self.mean_latency_s:.3f} s",
            f"reasoning of parsed traces: mean {self.mean_sentences:.2f} sentences, {self.mean_words:.1f} words",
            f"reasoning tokens{'' if self.budget is None else f' at budget {self.budget}'}: "
            + describe_tokens(self.tokens),
            f"wrote {redact(self.output)}",
        ])


# --------------------------------------------------------------------------- summary

_SUMMARY_COLUMNS = ("parse_ok", "prompt_tokens", "completion_tokens", "latency_s", "n_sentences", "n_words")


def token_stats(tokens: Sequence[int], sources: Mapping[str, int]) -> dict[str, Any]:
    """Mean, median and 90th percentile (numpy's linear interpolation) of ``tokens``, with the
    count of traces per token source (``usage``, ``approx``, ``tokenizer``; see
    :func:`guardsmith.guard.sentences.reasoning_tokens`); zeros when there are none."""
    values = np.asarray(tokens, dtype=float)
    if not values.size:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "sources": dict(sources)}
    return {"mean": float(values.mean()), "median": float(np.median(values)),
            "p90": float(np.percentile(values, 90)), "sources": dict(sources)}


def describe_tokens(stats: Mapping[str, Any]) -> str:
    """One line for :func:`token_stats`: ``mean 15.2, median 14.0, p90 22.0 (from teacher usage 40)``."""
    if not stats:
        return "none"
    sources = ", ".join(f"{_SOURCE_WORDS[k]} {v}" for k, v in sorted(stats["sources"].items()) if v) or "no traces"
    return f"mean {stats['mean']:.1f}, median {stats['median']:.1f}, p90 {stats['p90']:.1f} ({sources})"


_SOURCE_WORDS = {"usage": "from teacher usage", "approx": f"approximated as chars/{CHARS_PER_TOKEN}",
                 "tokenizer": "by the given tokenizer"}


def _parsed_lengths(uri: str, count: Callable[[str], int] | None) -> Iterator[tuple[Any, int, int, int, str]]:
    """``(budget, words, sentences, tokens, token source)`` of each parsed trace of ``uri``."""
    columns = ["budget", "parse_ok", "n_words", "n_sentences", "reasoning", "raw_output", "completion_tokens"]
    for batch in storage.iter_batches(uri, columns=columns):
        cols = batch.to_pydict()
        for b, ok, w, s, text, raw, used in zip(*(cols[c] for c in columns)):
            if ok:
                tokens, source = reasoning_tokens(text or "", raw, used, count)
                yield b, w, s, tokens, source


def summarise(uri: str) -> dict[str, Any]:
    """Row count, parse failures, usage totals, reasoning length totals and reasoning token
    statistics (:func:`token_stats`, over parsed rows) of a traces table."""
    acc: dict[str, Any] = {"rows": 0, "parse_failures": 0, "prompt_tokens": 0, "completion_tokens": 0,
                           "latency": 0.0, "sentences": 0, "words": 0}
    for batch in storage.iter_batches(uri, columns=list(_SUMMARY_COLUMNS)):
        cols = {n: batch.column(batch.schema.get_field_index(n)).to_pylist() for n in _SUMMARY_COLUMNS}
        acc["rows"] += batch.num_rows
        acc["parse_failures"] += sum(1 for v in cols["parse_ok"] if not v)
        acc["prompt_tokens"] += sum(cols["prompt_tokens"])
        acc["completion_tokens"] += sum(cols["completion_tokens"])
        acc["latency"] += sum(cols["latency_s"])
        acc["sentences"] += sum(s for s, ok in zip(cols["n_sentences"], cols["parse_ok"]) if ok)
        acc["words"] += sum(w for w, ok in zip(cols["n_words"], cols["parse_ok"]) if ok)
    tokens, sources = [], Counter()
    for _, _, _, n, source in _parsed_lengths(uri, None):
        tokens.append(n)
        sources[source] += 1
    acc["tokens"] = token_stats(tokens, sources)
    return acc


def _result(cfg: DistillConfig, acc: Mapping[str, Any], done: TracesRun) -> DistillResult:
    n = int(acc["rows"])
    parsed = n - int(acc["parse_failures"])
    mean = (lambda key, k=n: acc[key] / k if k else 0.0)
    return DistillResult(
        output=cfg.output, mode="budget" if cfg.budget is not None else "distill", rows=n, shards=done.shards,
        shards_reused=done.reused, requests=done.requests, parse_failures=int(acc["parse_failures"]),
        prompt_tokens=int(acc["prompt_tokens"]), completion_tokens=int(acc["completion_tokens"]),
        mean_latency_s=mean("latency"), mean_sentences=mean("sentences", parsed), mean_words=mean("words", parsed),
        budget=cfg.budget, skipped=done.skipped, failed_rows=done.n_failed, failed=done.failed,
        truncated=done.truncated, tokens=acc["tokens"])


# --------------------------------------------------------------------------- the stage

def run(cfg: DistillConfig) -> DistillResult:
    """Distill (or budget-rewrite) ``cfg.input`` into the traces table ``cfg.output``; resumable."""
    done = write_traces(cfg, stage="distill")
    return _result(cfg, summarise(cfg.output), done)


# --------------------------------------------------------------------------- budget curve

def budget_curve(uris: Sequence[str], echo: bool = True, tokenizer: str | None = None) -> list[dict[str, Any]]:
    """Length of the reasoning per budget, over the parsed traces of ``uris``: mean words, mean
    sentences and the reasoning's tokens (``mean_tokens``, ``median_tokens``, ``p90_tokens``,
    ``token_sources``; :func:`token_stats`).

    Rows are grouped by their ``budget`` column; rows without one are the original traces
    (budget ``None``, listed last). Tokens are the teacher's reported usage where that is the
    reasoning's own count, else approximated (:func:`guardsmith.guard.sentences.reasoning_tokens`);
    with ``tokenizer`` (a model folder path or URI) every reasoning is counted with that
    tokenizer instead. With ``echo`` a small table is printed. Mean words growing with the budget
    is the check of the paper's Fig. 5; one-sentence traces are about 15 tokens in the paper.
    """
    count = token_counter(tokenizer)
    groups: dict[int | None, dict[str, Any]] = {}
    for uri in uris:
        for b, w, s, n, source in _parsed_lengths(uri, count):
            acc = groups.setdefault(b, {"words": 0, "sentences": 0, "tokens": [], "sources": Counter()})
            acc["words"] += w
            acc["sentences"] += s
            acc["tokens"].append(n)
            acc["sources"][source] += 1
    out = []
    for b, acc in sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        n = len(acc["tokens"])
        stats = token_stats(acc["tokens"], acc["sources"])
        out.append({"budget": b, "traces": n, "mean_words": acc["words"] / n, "mean_sentences": acc["sentences"] / n,
                    "mean_tokens": stats["mean"], "median_tokens": stats["median"], "p90_tokens": stats["p90"],
                    "token_sources": stats["sources"]})
    if echo:
        print("budget  traces  mean_words  mean_sentences  mean_tokens  median_tokens  p90_tokens  token_source")
        for r in out:
            name = "none" if r["budget"] is None else str(r["budget"])
            sources = ", ".join(f"{k} {v}" for k, v in sorted(r["token_sources"].items()))
            print(f"{name:>6}  {r['traces']:>6}  {r['mean_words']:>10.1f}  {r['mean_sentences']:>14.2f}  "
                  f"{r['mean_tokens']:>11.1f}  {r['median_tokens']:>13.1f}  {r['p90_tokens']:>10.1f}  {sources}")
    return out

"""Calling a teacher model: reasoning traces, sentence-budget rewrites, and their sharded runs.

Shared by the ``distill`` stage (which is a thin shell over :func:`write_traces`) and the
regeneration rounds of the ``filter`` stage.

**distill** (``budget`` unset): every row of an ``interactions`` table is rendered as a teacher
prompt (:func:`guardsmith.guard.render_teacher_messages`) and sent to the teacher through any
inference backend (:func:`guardsmith.inference.open_backend`); each reply becomes one ``traces``
row (:func:`trace_record`). **budget rewrite** (``budget`` = N): the reasoning of each trace is
rewritten to at most N sentences (:func:`rewrite_rows`, :func:`cut_to_budget`).

**Work identity.** A run's :class:`~guardsmith.identity.WorkIdentity` (:func:`job_identity`: the
input's content, the settings that change the traces, the teacher's model name, the guardsmith
version) is recorded in the output's and every shard's commit manifest. A committed output of the
same work is skipped; of other work it is refused naming the difference (``overwrite`` replaces
it). Shards are committed one by one as ``<output>.shards/shard-00007`` and resumed only by the
same work; shards of other work are refused (``overwrite`` discards them).

**Failed rows.** A row the teacher endpoint rejects, or whose reply cannot be read, becomes a
row of the ``failed`` table (``<output>.failed``: id, stage, round, cause, detail), not a trace; a
reply that is read but does not parse as a guard answer is a trace with ``parse_ok`` false, which
the filter rejects (and regenerates). The run fails, without committing ``output``, when more than
``max_failed_fraction`` of the rows failed, or when no reply parsed at all.

**Bounded input.** ``prompt`` and ``response`` longer than ``max_input_chars`` are an error naming
the row (``input_policy: error``) or are cut to that length and counted (``truncate``).

**One client, one window.** A run opens one teacher client and sends the rows of all its
uncommitted shards through one rolling window of requests (:func:`run_jobs`: with the OpenAI
client, later shards' requests are in flight while an earlier shard is committed); shards are
still committed in order, shard k once all its rows are back and every shard before it is
committed, so the committed shards are always a prefix of the pending ones.

**SIGTERM** (:func:`stop_on_sigterm`): the shards in flight are abandoned (their requests
cancelled, nothing half-written, staging removed), committed shards stay, and the run ends with
a :class:`Stopped` error; a re-run resumes.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import math
import re
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

import pyarrow as pa

from guardsmith import settings, storage, tables
from guardsmith.config import option
from guardsmith.errors import DataError, GuardsmithError, redact
from guardsmith.identity import WorkIdentity, decide, foreign_parts, work_identity
from guardsmith.guard import (
    MAX_BUDGET,
    MIN_BUDGET,
    parse_guard_output,
    render_rewrite_messages,
    render_teacher_messages,
    resolve_policy,
    sentence_count,
    split_reasoning,
    word_count,
)
from guardsmith.guard.parser import THINK_CLOSE
from guardsmith.guard.sentences import sentence_spans
from guardsmith.inference import Backend, Generation, open_backend, parse_spec
from guardsmith.progress import track

INTERACTION_COLUMNS: tuple[str, ...] = tuple(tables.schema("interactions").names)
TRACE_COLUMNS: tuple[str, ...] = tuple(tables.schema("traces").names)
BOUNDED_COLUMNS: tuple[str, ...] = ("prompt", "response")
"""Input text columns held to ``max_input_chars``."""


@dataclass(kw_only=True)
class TeacherSettings(settings.sampling(omit=("samples_per_row",), max_tokens=2048),
                      settings.backend(omit=("backend", "chunk_rows", "backend_options"), concurrency=16),
                      settings.endpoint()):
    """How the teacher is called; shared by ``distill`` and the regeneration rounds of ``filter``.

    Sampling (``temperature``, ``top_p``, ``max_tokens``, ``seed``; filter round r uses seed + r),
    ``concurrency`` and the endpoint settings come from :mod:`guardsmith.settings`.
    """

    taxonomy: str | None = option(None, "Policy for rows without their own policy text: a built-in "
                                        "taxonomy (aegis2, wildguard); default: each row's taxonomy.")
    shard_size: int = option(256, "Rows per shard: each shard is committed on its own and a re-run "
                                  "skips committed shards.")
    max_failed_fraction: float = option(0.05, "Largest share of rows that may fail (endpoint rejected "
                                              "the request, reply unreadable) before the stage fails; "
                                              "failed rows are listed in a failed table either way.")
    max_input_chars: int = option(50_000, "Longest prompt or response text (characters) sent to the "
                                          "teacher; 0 = no limit.")
    input_policy: Literal["error", "truncate"] = option(
        "error", "What a longer text does: error (names file, column, row) or truncate (cut to "
                 "max_input_chars and counted).")


@dataclass(kw_only=True)
class TracesJob(TeacherSettings):
    """One teacher run over a table: what to read, where to write, and how."""

    input: str = option(help="Input table URI: interactions (distill) or traces (with budget).")
    output: str = option(help="Output traces table URI; shards are committed under <output>.shards "
                              "until it is complete.")
    teacher: str = option(help="Teacher backend spec: openai:http://HOST:PORT/v1?model=NAME, "
                               "vllm:/path/or/s3-uri, transformers:/path/or/s3-uri.")
    teacher_name: str | None = option(None, "Name stored in the traces' teacher column; default: the "
                                            "spec's model name (openai) or model folder name.")
    budget: int | None = option(None, f"Sentence budget N ({MIN_BUDGET}..{MAX_BUDGET}): rewrite the "
                                      "reasoning of the input traces to at most N sentences.")
    enforce_budget: bool = option(True, "Cut a rewrite that still has more than N sentences after its "
                                        "N-th sentence.")
    ids: list[str] = option(help="Only these interaction ids (e.g. rows the filter rejected); empty = all.",
                            factory=list)
    round: int = option(0, "Generation round stored in the traces (0 = first pass; the filter sets "
                           "1, 2, ... when it regenerates).")
    keep_shards: bool = option(False, "Keep <output>.shards after the output table is committed.")
    overwrite: bool = option(False, "Replace an output (and discard shards) made by other work: "
                                    "another input, teacher or settings. Output of the same work is "
                                    "kept (skipped) either way.")


# --------------------------------------------------------------------------- backend

def teacher_label(spec: str, role: str = "teacher") -> str:
    """The model name of a teacher (or judge: ``role``) spec (``?model=`` for openai, else the folder
    name), without building it; errors show the spec with its credentials hidden."""
    kind, _, rest = str(spec).partition(":")
    if kind.strip().lower() in ("vllm", "transformers"):
        return PurePosixPath(rest.rstrip("/")).name or "model"
    try:
        _, given = parse_spec(spec)
    except GuardsmithError as exc:
        raise GuardsmithError(redact(exc)) from None
    if not given.get("model"):
        raise GuardsmithError(f"the openai {role} {redact(spec)} needs a model name: add ?model=NAME to the URL")
    return str(given["model"])


def model_location(spec: str | None) -> str | None:
    """The model folder (path or URI) of a ``vllm:`` / ``transformers:`` spec, else None (an openai
    endpoint is identified by its model name, :func:`teacher_label`)."""
    kind, _, rest = str(spec or "").partition(":")
    if kind.strip().lower() not in ("vllm", "transformers"):
        return None
    rest = rest.strip()
    return rest[len("file://"):] if rest.startswith("file://") else (rest or None)


def model_inputs(**specs: str | None) -> dict[str, str]:
    """The work-identity inputs of teacher / judge specs (role -> spec): ``{role: folder}`` for each
    local model folder, so the model is identified by its content (a republished model at the same
    path is other work); openai specs add nothing (their model name is in the config)."""
    return {role: loc for role, spec in specs.items() if (loc := model_location(spec)) is not None}


def open_teacher(spec: str, cfg: TeacherSettings, endpoint_prefix: str = "") -> Backend:
    """Open a teacher (or judge) backend; errors name the spec with its credentials hidden."""
    try:
        return open_backend(spec, choice=settings.group_values(cfg, settings.BackendChoice),
                            endpoint=settings.group_values(cfg, settings.Endpoint, endpoint_prefix))
    except GuardsmithError as exc:
        raise GuardsmithError(redact(exc)) from None


def check_settings(cfg: TeacherSettings) -> None:
    """Reject impossible teacher settings with a one-line error."""
    if cfg.shard_size < 1:
        raise GuardsmithError(f"shard_size must be at least 1, got {cfg.shard_size}")
    if not 0.0 <= cfg.max_failed_fraction <= 1.0:
        raise GuardsmithError(f"max_failed_fraction must be from 0 to 1, got {cfg.max_failed_fraction}")
    if cfg.max_input_chars < 0:
        raise GuardsmithError(f"max_input_chars must be >= 0 (0 = no limit), got {cfg.max_input_chars}")
    if cfg.input_policy not in ("error", "truncate"):
        raise GuardsmithError(f"input_policy must be error or truncate, got {cfg.input_policy!r}")
    for group in (settings.Sampling, settings.BackendChoice, settings.Endpoint):
        settings.group_values(cfg, group)


def check_job(cfg: TracesJob) -> None:
    """Reject impossible settings with a one-line error."""
    check_settings(cfg)
    if cfg.budget is not None and not MIN_BUDGET <= cfg.budget <= MAX_BUDGET:
        raise GuardsmithError(f"budget must be from {MIN_BUDGET} to {MAX_BUDGET}, got {cfg.budget}")
    if cfg.round < 0:
        raise GuardsmithError(f"round must be >= 0, got {cfg.round}")
    if cfg.output.rstrip("/") == cfg.input.rstrip("/"):
        raise GuardsmithError("output must differ from input")


def bound_row(row: dict[str, Any], cfg: TeacherSettings, file: str, index: int) -> bool:
    """Hold ``row``'s :data:`BOUNDED_COLUMNS` to ``cfg.max_input_chars``: raise a :class:`DataError`
    naming the row (policy ``error``) or cut the text in place (``truncate``); True when cut."""
    limit = cfg.max_input_chars
    cut = False
    if not limit:
        return cut
    for column in BOUNDED_COLUMNS:
        text = row.get(column)
        if isinstance(text, str) and len(text) > limit:
            if cfg.input_policy == "error":
                raise DataError(f"{len(text)} characters, more than max_input_chars {limit} (set "
                                "input_policy: truncate to cut such texts)", file=redact(file), column=column,
                                row=index, value=text[:60] + "...")
            from guardsmith.sources.topic_following import trim_dialogue

            row[column] = trim_dialogue(text, limit)[:limit]  # a dialogue loses its oldest turns first
            cut = True
    return cut


# --------------------------------------------------------------------------- failed rows

@dataclass
class Failure:
    """A row the teacher or judge could not process: a row of the ``failed`` table."""

    id: str
    stage: str
    round: int
    cause: str
    detail: str | None = None

    def record(self) -> dict[str, Any]:
        detail = None if self.detail is None else redact(self.detail)[:500]
        return {"id": self.id, "stage": self.stage, "round": int(self.round), "cause": self.cause, "detail": detail}


def failed_uri(output: str) -> str:
    """Where a traces table's failed rows are committed: the sibling ``<output>.failed``."""
    return output.rstrip("/") + ".failed"


def failed_table(failures: Sequence[Failure]) -> pa.Table:
    """The ``failed`` table of ``failures``."""
    return pa.Table.from_pylist([f.record() for f in failures], schema=tables.schema("failed"))


def generation_error(gen: Sequence[Generation]) -> str | None:
    """The error of a request collected by ``backend.generate(..., on_error="collect")``, else None."""
    if not gen:
        return "no reply"
    return getattr(gen[0], "error", None)


def check_failures(stage: str, failed_ids: Sequence[str], total: int, max_fraction: float, where: str,
                   first_detail: str | None = None) -> None:
    """Fail with one line naming the first failed ids when more than ``max_fraction`` of ``total`` rows failed."""
    n = len(failed_ids)
    if not n or not total or n / total <= max_fraction:
        return
    shown = ", ".join(failed_ids[:5]) + (" ..." if n > 5 else "")
    why = f"; first: {redact(first_detail)[:200]}" if first_detail else ""
    raise GuardsmithError(f"{stage}: {n} of {total} rows failed ({n / total:.1%} > max_failed_fraction "
                          f"{max_fraction:g}): {shown}{why}; see {redact(where)}")


# --------------------------------------------------------------------------- SIGTERM

class Stopped(GuardsmithError):
    """The run was stopped by SIGTERM; committed work stays and a re-run resumes."""


class _SigtermGuard:
    """Turns SIGTERM into :class:`Stopped`, raised in the main thread; deferred while a commit runs."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.stopped = False
        self.depth = 0
        self.previous: Any = None
        self.installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        self.stopped = True
        if self.depth == 0:
            raise Stopped(f"{self.what} stopped by SIGTERM; committed work is kept and a re-run with the same "
                          "inputs and settings resumes it")

    @contextlib.contextmanager
    def commit(self) -> Iterator[None]:
        """A section that SIGTERM does not interrupt (a commit); the stop is raised after it."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if self.stopped and self.depth == 0:
            self._handle(signal.SIGTERM, None)


_GUARD: _SigtermGuard | None = None


@contextlib.contextmanager
def stop_on_sigterm(what: str) -> Iterator[None]:
    """While the block runs, SIGTERM (Kubernetes preemption) raises :class:`Stopped` in the main
    thread, except inside :func:`commit_section`. Installed only in the main thread; the previous
    handler is restored afterwards. Nested uses keep the outer one."""
    global _GUARD
    if _GUARD is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    guard = _SigtermGuard(what)
    guard.previous = signal.signal(signal.SIGTERM, guard._handle)
    _GUARD = guard
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, guard.previous)
        _GUARD = None


@contextlib.contextmanager
def commit_section() -> Iterator[None]:
    """Commit without being cut by SIGTERM (a stop is raised right after)."""
    if _GUARD is None:
        yield
    else:
        with _GUARD.commit():
            yield


# --------------------------------------------------------------------------- rows -> traces

def trace_record(row: Mapping[str, Any], gen: Generation, teacher: str, round: int = 0) -> dict[str, Any]:
    """The ``traces`` row for one teacher reply to the distillation prompt of ``row``.

    ``reasoning``/``answer`` are null when the reply does not parse; ``n_sentences``/``n_words``
    count the text before the answer block (the whole reply when there is none).
    """
    parsed = parse_guard_output(gen.text)
    _, answer = split_reasoning(gen.text)
    return {
        **{k: row.get(k) for k in INTERACTION_COLUMNS},
        "teacher": teacher,
        "raw_output": gen.text,
        "reasoning": parsed.reasoning if parsed.parse_ok else None,
        "answer": answer if parsed.parse_ok else None,
        "pred_prompt_harm": parsed.prompt_harm,
        "pred_response_harm": parsed.response_harm,
        "pred_response_refusal": parsed.response_refusal,
        "parse_ok": parsed.parse_ok,
        "prompt_tokens": int(gen.prompt_tokens),
        "completion_tokens": int(gen.completion_tokens),
        "latency_s": float(gen.latency_s),
        "round": int(round),
        "budget": None,
        "n_sentences": sentence_count(parsed.reasoning),
        "n_words": word_count(parsed.reasoning),
    }


def distill_job(rows: Sequence[Mapping[str, Any]], settings: TeacherSettings, index: int = 0) -> Job:
    """The teacher requests for ``rows``: one distillation prompt per row."""
    return Job(index, list(rows), list(range(len(rows))),
               [render_teacher_messages(r, settings.taxonomy) for r in rows])


def distill_results(job: Job, teacher: str, round: int = 0,
                    stage: str = "distill") -> tuple[list[dict[str, Any]], list[Failure]]:
    """Traces rows and failed rows of a distill job whose replies are in."""
    records, failures = [], []
    for r, g in zip(job.rows, job.gens):
        error = generation_error(g)
        if error is not None:
            failures.append(Failure(r["id"], stage, round, "request_failed", error))
        else:
            records.append(trace_record(r, g[0], teacher, round))
    return records, failures


def cut_to_budget(text: str, budget: int) -> str:
    """The longest prefix of ``text`` that ends at a sentence end and has at most ``budget`` sentences
    (:func:`guardsmith.guard.sentences.sentence_spans`: list items and semicolon clauses count as
    sentences). A cut after a semicolon clause ends it with a period instead of the semicolon."""
    text = text.strip()
    spans = sentence_spans(text)
    if len(spans) <= budget:
        return text
    end = spans[budget - 1][1]
    cut = text[:end].rstrip()
    return cut + "." if text[end:].lstrip().startswith(";") else cut


_COURTESY = r"(?:(?:sure|certainly|okay|ok|of course|absolutely|alright|gladly|no problem)\b[\s,.!]*)?"
_HERE = re.compile(
    _COURTESY + r"(?:(?:here(?:'s|\u2019s|\s+is|\s+are)|below\s+is)\b.*?\b(?:rewrite|rewritten|rewording|"
    r"version|reasoning|summary|condensed|shortened|compressed|revised|sentences?|rationale)\b.*|here\s+you\s+go)",
    re.IGNORECASE)
_LABEL = re.compile(
    _COURTESY + r"(?:(?:the|my|a|an|final|new|revised|rewritten|shortened|condensed|compressed|concise|shorter|"
    r"brief|short|one|two|three|\d+|[a-z0-9]+-sentences?)\s+){0,4}(?:rewrite|rewording|reasoning|version|"
    r"summary|rationale|explanation)(?:\s*\([^)\n]*\))?", re.IGNORECASE)
_COURTESY_ONLY = re.compile(_COURTESY.rstrip("?") + r"[\s,.!]*", re.IGNORECASE)
_DECOR = r"[\s*_#>`]*"
_HEAD_COLON = re.compile(r"\A" + _DECOR + r"(?P<head>[^\n:]{1,160}?)[\s*_`]*:[*_`]*")
_HEAD_LINE = re.compile(r"\A" + _DECOR + r"(?P<head>[^\n]{1,160}?)[\s.!:*_`]*(?:\n|\Z)")


def strip_preamble(text: str) -> str:
    """``text`` without the preambles a rewriting teacher puts before the rewrite.

    A preamble is, at the very start (after markdown decoration), either text up to a colon that
    is a "here is ..." phrase naming the rewrite ("Here is the rewrite:", "Sure, here's a shorter
    version:") or a short label ("Rewritten reasoning:", "**Rewrite (2 sentences):**"); or a whole
    first line that is such a phrase or only a courtesy word ("Sure!"). Repeated preambles are all
    removed; a head of more than 14 words is never a preamble, and reasoning that merely starts
    with "Here" or contains a colon is kept.
    """
    text = text.strip()
    for _ in range(4):
        m = _HEAD_COLON.match(text)
        head = m["head"].strip() if m else ""
        if m and len(head.split()) <= 14 and (_HERE.fullmatch(head) or _LABEL.fullmatch(head)):
            text = text[m.end():].strip()
            continue
        m = _HEAD_LINE.match(text)
        head = m["head"].strip() if m else ""
        if m and m.end() < len(text) and len(head.split()) <= 14 and (_HERE.fullmatch(head)
                                                                     or _COURTESY_ONLY.fullmatch(head)):
            text = text[m.end():].strip()
            continue
        break
    return text


def rewritten_reasoning(text: str) -> str:
    """The rewrite in a teacher reply: after the last ``</think>``, without any answer lines."""
    closes = list(THINK_CLOSE.finditer(text or ""))
    body = text[closes[-1].end():] if closes else (text or "")
    reasoning, _ = split_reasoning(body)
    return reasoning


def rewrite_rows(rows: Sequence[Mapping[str, Any]], backend: Backend, settings: TeacherSettings,
                 teacher: str, budget: int, enforce_budget: bool = True, seed: int | None = None,
                 stage: str = "distill") -> tuple[list[dict[str, Any]], list[Failure]]:
    """Rewrite each trace's reasoning to at most ``budget`` sentences; return traces rows and the
    rows that failed (request rejected, reply unreadable, or a rewrite with no text).

    Rows without reasoning (unparsed traces) are passed through with only ``budget`` set.
    """
    job = rewrite_job(rows, budget)
    job.gens = backend.generate(job.requests, **sampling_of(settings, seed)) if job.requests else []
    return rewrite_results(job, teacher, budget, enforce_budget, stage)


def rewrite_job(rows: Sequence[Mapping[str, Any]], budget: int, index: int = 0) -> Job:
    """The rewrite requests for ``rows``: one per row that has reasoning."""
    todo = [i for i, r in enumerate(rows) if (r.get("reasoning") or "").strip()]
    return Job(index, list(rows), todo, [render_rewrite_messages(rows[i], rows[i]["reasoning"], budget) for i in todo])


def rewrite_results(job: Job, teacher: str, budget: int, enforce_budget: bool = True,
                    stage: str = "distill") -> tuple[list[dict[str, Any]], list[Failure]]:
    """Traces rows and failed rows of a rewrite job whose replies are in."""
    rows = job.rows
    out = [{**{k: r.get(k) for k in TRACE_COLUMNS}, "budget": budget} for r in rows]
    failures: dict[int, Failure] = {}
    for i, g in zip(job.todo, job.gens):
        error = generation_error(g)
        round_ = int(rows[i].get("round") or 0)
        if error is not None:
            failures[i] = Failure(rows[i]["id"], stage, round_, "request_failed", error)
            continue
        gen = g[0]
        text = strip_preamble(rewritten_reasoning(gen.text))
        if enforce_budget:
            text = cut_to_budget(text, budget)
        if not text.strip():
            failures[i] = Failure(rows[i]["id"], stage, round_, "empty_rewrite",
                                  f"the rewrite has no reasoning text: {gen.text[:200]!r}")
            continue
        out[i].update({
            "teacher": teacher, "raw_output": gen.text, "reasoning": text,
            "prompt_tokens": int(gen.prompt_tokens), "completion_tokens": int(gen.completion_tokens),
            "latency_s": float(gen.latency_s), "n_sentences": sentence_count(text), "n_words": word_count(text),
        })
    return [r for i, r in enumerate(out) if i not in failures], list(failures.values())


# --------------------------------------------------------------------------- one rolling window

@dataclass
class Job:
    """A batch of rows (a shard) and the requests it sends: ``requests[k]`` is about
    ``rows[todo[k]]``; ``gens[k]`` holds its reply once :func:`run_jobs` hands the job back."""

    index: int
    rows: list[dict[str, Any]]
    todo: list[int]
    requests: list[list[dict[str, str]]]
    gens: list[Any] = field(default_factory=list)
    missing: int = 0
    payload: Any = None
    """Whatever the caller keeps with the job (the filter: the rule verdicts of its rows)."""


def sampling_of(settings: TeacherSettings, seed: int | None = None, prefix: str = "") -> dict[str, Any]:
    """``generate`` keywords from teacher settings (``seed`` overrides the settings' seed; ``prefix``
    ``judge_`` reads a judge's copy); failed requests are collected, not raised."""
    get = lambda name: getattr(settings, prefix + name)  # noqa: E731
    return {"n": 1, "temperature": get("temperature"), "top_p": get("top_p"), "max_tokens": get("max_tokens"),
            "seed": get("seed") if seed is None else seed, "on_error": "collect"}


def lookahead(backend: Backend, shard_size: int) -> int:
    """How far (in requests) :func:`run_jobs` lets replies run ahead of the oldest unfinished one:
    enough that a slow request does not drain the window, small enough that finished shards
    waiting for it stay few (memory)."""
    return max(4 * shard_size, 16 * int(getattr(backend, "max_concurrency", 1)))


def run_jobs(backend: Backend, jobs: Iterator[Job], sampling: Mapping[str, Any],
             ahead: int | None = None) -> Iterator[Job]:
    """Send the requests of all ``jobs`` through one rolling window of the backend and yield each
    job, in order, once all its replies are in (``job.gens`` aligned with ``job.requests``).

    With a streaming backend (``generate_stream``: the OpenAI client) the requests of later jobs are
    in flight while the caller commits earlier ones, so the endpoint never waits for a shard
    barrier; ``jobs`` is then read lazily from the client's thread, one request per free slot
    (``ahead``: see :func:`lookahead`). Other backends run one ``generate`` per job. Close the
    generator (``contextlib.closing``) to cancel what is in flight.
    """
    stream = getattr(backend, "generate_stream", None)
    if stream is None:
        for job in jobs:
            job.gens = backend.generate(job.requests, **sampling) if job.requests else []
            yield job
        return
    order: collections.deque[Job] = collections.deque()  # appended by the client's thread, popped here
    owner: dict[int, tuple[Job, int]] = {}

    def requests() -> Iterator[list[dict[str, str]]]:
        number = 0
        for job in jobs:
            job.gens = [None] * len(job.requests)
            job.missing = len(job.requests)
            order.append(job)
            for k, request in enumerate(job.requests):
                owner[number] = (job, k)
                number += 1
                yield request

    replies = stream(requests(), ahead=ahead, **sampling)
    try:
        for number, gens in replies:
            job, k = owner.pop(number)
            job.gens[k] = gens
            job.missing -= 1
            while order and order[0].missing == 0:
                yield order.popleft()
        while order:  # the stream is over: every job is registered and complete
            yield order.popleft()
    finally:
        replies.close()


# --------------------------------------------------------------------------- input

def _schema_name(cfg: TracesJob) -> str:
    return "interactions" if cfg.budget is None else "traces"


def _selected(cfg: TracesJob) -> Iterator[dict[str, Any]]:
    """Validated input rows, restricted to ``cfg.ids`` when given, in input order, with texts held
    to ``max_input_chars`` (:func:`bound_row`; ``_cut`` marks a row that was cut)."""
    wanted = set(cfg.ids) if cfg.ids else None
    index = 0
    for batch in storage.iter_batches(cfg.input, schema_name=_schema_name(cfg), batch_size=4096):
        rows = batch.to_pylist()
        start, index = index, index + len(rows)
        for offset, row in enumerate(rows):
            if wanted is not None and row["id"] not in wanted:
                continue
            if bound_row(row, cfg, cfg.input, start + offset):
                row["_cut"] = True
            yield row


@dataclass
class InputScan:
    """What :func:`scan_input` found: selected rows and how many had a text cut to ``max_input_chars``."""

    rows: int
    truncated: int


def scan_input(cfg: TracesJob) -> InputScan:
    """Validate the whole input before anything is written.

    Checks the schema and label words (via storage), duplicate ids, that every requested id
    exists, each text's length, and that each selected row has a usable policy and prompt.
    """
    seen: set[str] = set()
    file = cfg.input
    count = truncated = 0
    for index, row in enumerate(_selected(cfg)):
        rid = row["id"]
        if rid in seen:
            raise DataError("duplicate id", file=file, column="id", row=index, value=rid)
        seen.add(rid)
        truncated += bool(row.get("_cut"))
        try:
            if cfg.budget is None:
                render_teacher_messages(row, cfg.taxonomy)
            else:
                resolve_policy(row, cfg.taxonomy)
        except DataError:
            raise
        except GuardsmithError as exc:
            raise DataError(str(exc), file=file, row=index, value=rid) from None
        count += 1
    if cfg.ids:
        missing = sorted(set(cfg.ids) - seen)
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise GuardsmithError(f"{len(missing)} requested id(s) are not in {file}: {shown}")
    return InputScan(count, truncated)


def _shards(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --------------------------------------------------------------------------- shards

def shard_root(output: str) -> str:
    """Where the shards of ``output`` are committed: the sibling ``<output>.shards``."""
    return output.rstrip("/") + ".shards"


def shard_uri(output: str, index: int) -> str:
    """URI of shard ``index`` of ``output``."""
    return storage.join(shard_root(output), f"shard-{index:05d}")


def shard_failed_uri(output: str, index: int) -> str:
    """URI of the failed rows of shard ``index`` (committed just before the shard itself)."""
    return storage.join(shard_root(output), f"failed-{index:05d}")


def job_identity(cfg: TracesJob, stage: str = "distill") -> WorkIdentity:
    """The work identity of a teacher run: the input's content, the settings that change the traces
    (``ids`` as a digest), the teacher's model name and the guardsmith version. The teacher spec
    itself (host, credentials) is left out: the same model behind another address is the same work.
    A ``vllm:`` / ``transformers:`` teacher is also identified by the content of its model folder
    (input ``teacher``, :func:`model_inputs`), so a model republished at the same path is other work."""
    ids = hashlib.sha256("\n".join(sorted(cfg.ids)).encode()).hexdigest()[:16] if cfg.ids else None
    return work_identity(stage, cfg, {"input": cfg.input, **model_inputs(teacher=cfg.teacher)},
                         exclude=("input", "output", "teacher", "ids"),
                         extra={"teacher_model": teacher_label(cfg.teacher), "ids": ids})


def _check_shards(cfg: TracesJob, identity: WorkIdentity) -> None:
    """Shards under ``<output>.shards`` must be of this work: others are refused, or discarded with
    ``overwrite``."""
    root = shard_root(cfg.output)
    if not storage.exists(root):
        return
    names = storage.list_dir(root)
    # a writer killed mid-commit leaves its staging folder (<shard>.tmp-<id>), manifest half-written: not a shard
    parts = (storage.join(root, name) for name in names if ".tmp-" not in str(name))
    foreign = list(foreign_parts(parts, identity).values())
    if "_config.json" in {str(n).rstrip("/").rsplit("/", 1)[-1] for n in names}:  # shards of an older guardsmith
        foreign.append("no work identity (an older guardsmith)")
    if not foreign:
        return
    if cfg.overwrite:
        storage.remove(root)
        return
    what = ", ".join(dict.fromkeys(foreign))
    raise GuardsmithError(f"{redact(root)} holds shards made with other settings or input ({what}); use the "
                          "same inputs and settings to resume, or --overwrite to discard them")


# --------------------------------------------------------------------------- the run

@dataclass
class TracesRun:
    """What :func:`write_traces` did: shards in all, reused from an earlier run, teacher requests,
    failed rows (ids in input order) and input texts cut to ``max_input_chars``."""

    shards: int = 0
    reused: int = 0
    requests: int = 0
    skipped: bool = False
    rows: int = 0
    failed_ids: list[str] = field(default_factory=list)
    truncated: int = 0
    failed: str | None = None

    @property
    def n_failed(self) -> int:
        return len(self.failed_ids)


def write_traces(cfg: TracesJob, stage: str = "distill", check: bool = True,
                 backend: Callable[[], Backend] | None = None) -> TracesRun:
    """Distill (or budget-rewrite) ``cfg.input`` into the traces table ``cfg.output``; resumable.

    A committed output of the same work is left alone (``skipped``; with ``check`` its failed rows
    are held to the current ``max_failed_fraction``); of other work it is refused unless ``overwrite``. Failed rows are committed to ``<output>.failed``. With ``check`` the run
    fails (``output`` not committed, shards kept) when more than ``max_failed_fraction`` of the
    rows failed or no teacher reply parsed; the filter checks its own totals instead.

    All uncommitted shards go through one teacher client and one rolling window of requests
    (:func:`run_jobs`); shards are still committed one by one, in order, as soon as each is complete.
    ``backend``: a function returning the caller's teacher (opened on its first call, closed by the
    caller), so several runs share one client, and none is opened when every shard is committed;
    default: a teacher opened (and closed) here.
    """
    check_job(cfg)
    root = shard_root(cfg.output)
    identity = job_identity(cfg, stage)
    if decide(cfg.output, identity, cfg.overwrite) == "skip":
        if not cfg.keep_shards:
            storage.remove(root)  # left over when a run stopped right after its final commit
        return _finished(cfg, stage, check)
    try:
        return _write_traces(cfg, stage, check, identity, backend)
    except GuardsmithError:
        # A second writer of the same work (an overlapping retry or schedule) may lose a shard race
        # or find the shards gone: when the other one committed the same work, this run is done too.
        recorded = storage.recorded_identity(cfg.output) if storage.is_committed(cfg.output) else None
        if recorded is None or recorded.get("digest") != identity.digest:
            raise
        return _finished(cfg, stage, check)


def _finished(cfg: TracesJob, stage: str, check: bool) -> TracesRun:
    """The :class:`TracesRun` of an output the same work committed earlier. ``max_failed_fraction``
    is a gate, not part of the work: with ``check`` the recorded failed rows are held to the current
    gate, with the error a fresh run gives (the committed output stays)."""
    fail_uri = failed_uri(cfg.output)
    committed = storage.is_committed(fail_uri)
    failed = storage.read_table(fail_uri, "failed") if committed else None
    failed_ids = failed.column("id").to_pylist() if failed is not None else []
    if check and failed_ids:
        first = failed.column("detail")[0].as_py()
        total = storage.read_table(cfg.output, columns=["id"]).num_rows + len(failed_ids)
        check_failures(stage, failed_ids, total, cfg.max_failed_fraction, fail_uri, first)
    return TracesRun(skipped=True, failed_ids=failed_ids, failed=fail_uri if committed else None)


def _write_traces(cfg: TracesJob, stage: str, check: bool, identity: WorkIdentity,
                  shared: Callable[[], Backend] | None = None) -> TracesRun:
    root = shard_root(cfg.output)
    scan = scan_input(cfg)
    n_shards = math.ceil(scan.rows / cfg.shard_size)
    _check_shards(cfg, identity)
    teacher_name = cfg.teacher_name or teacher_label(cfg.teacher)
    pending = [i for i in range(n_shards) if not storage.is_committed(shard_uri(cfg.output, i))]
    reused = n_shards - len(pending)
    sent = [0]
    label = f"{'rewriting' if cfg.budget is not None else 'distilling'} shards"

    def jobs() -> Iterator[Job]:
        """The uncommitted shards as jobs, read lazily (from the client's thread when it streams)."""
        wanted = set(pending)
        for index, rows in enumerate(_shards(_selected(cfg), cfg.shard_size)):
            if index in wanted:
                job = distill_job(rows, cfg, index) if cfg.budget is None else rewrite_job(rows, cfg.budget, index)
                sent[0] += len(job.requests)
                yield job

    with stop_on_sigterm(stage):
        backend: Backend | None = None
        try:
            if pending:
                backend = shared() if shared is not None else open_teacher(cfg.teacher, cfg)
                ticker = track(range(n_shards), label, total=n_shards)
                next(ticker)
                for _ in range(reused):
                    next(ticker, None)
                with contextlib.closing(run_jobs(backend, jobs(), sampling_of(cfg),
                                                 lookahead(backend, cfg.shard_size))) as done:
                    for job in done:  # in shard order, each as soon as its rows and all earlier shards are in
                        uri = shard_uri(cfg.output, job.index)
                        if cfg.budget is None:
                            records, failures = distill_results(job, teacher_name, cfg.round, stage=stage)
                        else:
                            records, failures = rewrite_results(job, teacher_name, cfg.budget, cfg.enforce_budget,
                                                                stage=stage)
                        traces = (tables.from_records(records, "traces", file=uri) if records
                                  else tables.empty_table("traces"))
                        with commit_section():
                            storage.write_table(shard_failed_uri(cfg.output, job.index), failed_table(failures),
                                                "failed", identity=identity)
                            storage.write_table(uri, traces, "traces", identity=identity)
                        next(ticker, None)
                ticker.close()
        finally:
            if shared is None and backend is not None:
                backend.close()
        requests = sent[0]
        failed_ids: list[str] = []
        first_detail = None
        for index in range(n_shards):
            part = storage.read_table(shard_failed_uri(cfg.output, index), "failed") \
                if storage.is_committed(shard_failed_uri(cfg.output, index)) else None
            if part is not None and part.num_rows:
                failed_ids += part.column("id").to_pylist()
                first_detail = first_detail or part.column("detail")[0].as_py()
        fail_uri = failed_uri(cfg.output)
        with commit_section():  # replaces, atomically, one left by a run that stopped at the checks below
            with storage.TableWriter(fail_uri, "failed", identity=identity) as writer:
                for index in range(n_shards):
                    part = shard_failed_uri(cfg.output, index)
                    if storage.is_committed(part):
                        for batch in storage.iter_batches(part, schema_name="failed"):
                            writer.write(batch)
        if check:
            check_failures(stage, failed_ids, scan.rows, cfg.max_failed_fraction, fail_uri, first_detail)
            if cfg.budget is None:
                _check_some_parsed(cfg.output, n_shards, scan.rows - len(failed_ids))
        with commit_section():  # a committed output of other work (--overwrite) is replaced atomically
            with storage.TableWriter(cfg.output, "traces", identity=identity) as writer:
                for index in range(n_shards):
                    for batch in storage.iter_batches(shard_uri(cfg.output, index), schema_name="traces"):
                        writer.write(batch)
    if not cfg.keep_shards:
        storage.remove(root)
    return TracesRun(n_shards, reused, requests, rows=scan.rows, failed_ids=failed_ids, truncated=scan.truncated,
                     failed=fail_uri)


def _check_some_parsed(output: str, n_shards: int, traces: int) -> None:
    """Fail when there are traces and not one teacher reply parsed as a guard answer (a wrong
    teacher, prompt format or max_tokens: every trace would be rejected downstream)."""
    if traces <= 0:
        return
    first: list[str] = []
    for index in range(n_shards):
        for batch in storage.iter_batches(shard_uri(output, index), columns=["id", "parse_ok", "raw_output"]):
            cols = batch.to_pydict()
            if any(cols["parse_ok"]):
                return
            if not first and cols["id"]:
                first = [cols["id"][0], (cols["raw_output"][0] or "")[:80]]
    raise GuardsmithError(f"no teacher reply of the {traces} rows parsed as a guard answer (first: id {first[0]}, "
                          f"reply {first[1]!r}); check the teacher model, its prompt format and max_tokens")

"""Run a guard model over interaction rows: the one place that renders, samples and parses.

`run_guard` renders each row's guard prompt for a mode (R or NR, with the mode tag for dual
models), asks the backend for ``samples_per_row`` samples per row from one prompt pass (the
:class:`guardsmith.settings.Sampling` group), parses every sample
and yields one :class:`GuardRow` per input row, in input order, with its :class:`GuardSample`
records. Rows are sent to the backend in chunks of ``chunk_rows`` so a large table streams.

Any guard family is run through its :class:`~guardsmith.guard.formats.GuardFormat` (``fmt``):
the format renders the chat messages (``fmt.messages``) and reads the answer (``fmt.parse``);
the default is the ``guardsmith`` format (the prompts and A.3 answer lines of guards trained
here). `guard_scores` gives P(unsafe) per row where the format has a single verdict token
(``fmt.verdict``) and the backend implements ``answer_probability``.

Latency: backends report a request's share of the batch wall time; the N samples of a request
come from one pass, so each sample's ``latency_s`` is that share divided by N (throughput
latency per classification, the quantity the paper reports per sample and mode).

Used by the ``mine`` and ``evaluate`` stages and by the demo.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.guard import (
    FIELDS,
    GuardAnswer,
    parse_ok_for,
)
from guardsmith.guard.formats import FORMATS, GuardFormat, Verdict
from guardsmith.inference import Backend, Message
from guardsmith.settings import BackendChoice, Sampling
from guardsmith.vocabulary import HARM_TASKS


@dataclass(frozen=True)
class GuardSample:
    """One parsed guard sample for one row."""

    sample_index: int
    text: str
    answer: GuardAnswer
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str

    def prediction(self, task: str) -> str | None:
        """The parsed label for ``task``, or None when the output gives no usable label for it."""
        return getattr(self.answer, task) if parse_ok_for(self.answer, task) else None

    def generation_record(self, row_id: str) -> dict[str, Any]:
        """This sample as a record of the ``generations`` table schema."""
        return {
            "id": row_id,
            "sample_index": self.sample_index,
            "text": self.text,
            "parse_ok": self.answer.parse_ok,
            "pred_prompt_harm": self.answer.prompt_harm,
            "pred_response_harm": self.answer.response_harm,
            "pred_response_refusal": self.answer.response_refusal,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_s": self.latency_s,
        }


@dataclass(frozen=True)
class GuardRow:
    """An input row, the chat messages the guard saw, and its samples (``len == n``)."""

    row: Mapping[str, Any]
    messages: list[Message]
    samples: list[GuardSample]


def labelled_tasks(row: Mapping[str, Any], tasks: Sequence[str] = HARM_TASKS) -> list[str]:
    """The tasks among ``tasks`` for which ``row`` has a true label (non-null column)."""
    for task in tasks:
        if task not in FIELDS:
            raise GuardsmithError(f"unknown task {task!r}: expected one of {', '.join(FIELDS)}")
    return [t for t in tasks if row.get(t) is not None]


def is_correct(row: Mapping[str, Any], sample: GuardSample, tasks: Sequence[str] = HARM_TASKS) -> bool:
    """True when every labelled task of ``row`` (among ``tasks``) parsed and matches its label.

    A row with no labelled task is never correct (callers skip such rows). A missing or
    ``None`` answer line for a labelled task, or an output that does not parse, is incorrect.
    """
    wanted = labelled_tasks(row, tasks)
    return bool(wanted) and all(sample.prediction(t) == row[t] for t in wanted)


_FOLDER_KINDS = ("vllm:", "transformers:")


def model_folder_uri(model: str) -> str | None:
    """The model folder URI of a guard spec: None for an ``openai:`` endpoint, the folder of a
    ``vllm:FOLDER`` / ``transformers:FOLDER`` spec, else the spec itself."""
    text = str(model).strip()
    if text.startswith("openai:"):
        return None
    return text.split(":", 1)[1].strip() if text.startswith(_FOLDER_KINDS) else text


def open_guard(model: str, choice: BackendChoice | None = None, **options: Any) -> Backend:
    """:func:`guardsmith.inference.open_backend` for a guard model, set to the guard's prompt style.

    ``model`` is a model folder URI (local path, ``file://`` or ``s3://``, run by
    ``choice.backend``, or ``vllm:FOLDER`` / ``transformers:FOLDER`` to pick the backend) or an
    OpenAI-compatible endpoint spec ``openai:http://host:port/v1?model=NAME``.
    A model folder's guard is queried with the prompt style it was trained with (recorded by sft).
    """
    from guardsmith.guard import prompt_style_of
    from guardsmith.inference import open_backend
    from guardsmith.model_store import local_model

    choice = (choice or BackendChoice()).check()
    folder = model_folder_uri(model)
    if folder is None:
        return open_backend(str(model), choice=choice, **options)
    path = local_model(folder)
    kind = str(model).split(":", 1)[0] + ":" if str(model).strip().startswith(_FOLDER_KINDS) else ""
    opened = open_backend(f"{kind}{path}", choice=choice, **options)
    opened.guard_prompt_style = prompt_style_of(path)
    opened.guard_taxonomy, opened.guard_policy = trained_policy(path)
    return opened


def trained_policy(model: str | Any) -> tuple[str | None, str | None]:
    """(taxonomy, policy) a guard was trained with, from its training summary; (None, None) when
    the folder records none (a model not trained by guardsmith, or rows of mixed taxonomies)."""
    from guardsmith.training import TrainingSummary

    summary = TrainingSummary.find(model)
    return (summary.taxonomy, summary.policy) if summary is not None else (None, None)


def recorded_format(model: str | Any) -> str | None:
    """The guard format a model folder was trained to speak: the training summary's
    ``guard_format`` when it records one, ``guardsmith`` for any other model trained here
    (its ``guardsmith_training.json`` exists), None for a folder without a summary."""
    from guardsmith.training import TrainingSummary

    summary = TrainingSummary.find(model)
    if summary is None:
        return None
    return getattr(summary, "guard_format", None) or "guardsmith"


def format_messages(fmt: GuardFormat, row: Mapping[str, Any], *, own_template: bool = False,
                    **options: Any) -> list[Message]:
    """The request for ``row`` in ``fmt``: ``fmt.turns(row)`` (the plain conversation) when
    ``own_template`` and the format is one whose released checkpoints build the task prompt in
    their own chat template (``fmt.own_template``), else ``fmt.messages(row, **options)``."""
    if own_template and fmt.own_template:
        return fmt.turns(row)
    return fmt.messages(row, **options)


def _chunks(rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    chunk: list[Mapping[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_guard(
    backend: Backend,
    rows: Iterable[Mapping[str, Any]],
    *,
    mode: str = "R",
    dual: bool = False,
    sampling: Sampling | None = None,
    chunk_rows: int = 256,
    taxonomy: str | None = None,
    style: str | None = None,
    fmt: GuardFormat | None = None,
    own_template: bool = False,
) -> Iterator[GuardRow]:
    """Sample ``sampling.samples_per_row`` guard outputs per row (one prompt pass per row) and
    yield parsed results (default sampling: 4 samples per row, temperature 0.6, top-p 0.95).

    ``fmt`` renders each row (``fmt.messages``; :func:`format_messages`) and parses each sample
    (``fmt.parse``); default: the ``guardsmith`` format. ``own_template``: send a format with
    ``own_template`` the plain turns (a released checkpoint whose chat template builds the prompt). ``style`` is the guard prompt style; by default the one recorded
    with the model (`open_guard` sets ``backend.guard_prompt_style``), else ``full``.

    Chunk ``c`` is generated with seed ``seed + c * chunk_rows`` so chunks never share a
    backend batch seed and a run is reproducible for a fixed ``chunk_rows``; an endpoint gets one
    rolling window of requests across chunks instead, each request with the run's seed.
    """
    style = style or getattr(backend, "guard_prompt_style", "full")
    fmt = fmt or FORMATS["guardsmith"]
    sampling = (sampling or Sampling(samples_per_row=4)).check()
    n = sampling.samples_per_row
    if chunk_rows < 1:
        raise GuardsmithError(f"chunk_rows must be at least 1, got {chunk_rows}")
    def render(chunk: list[Mapping[str, Any]]) -> list[Message]:
        return [format_messages(fmt, r, own_template=own_template, mode=mode, dual=dual, taxonomy=taxonomy,
                                style=style) for r in chunk]

    for chunk, requests, outputs in _generated(backend, _chunks(rows, chunk_rows), render, sampling, chunk_rows):
        if len(outputs) != len(chunk):
            raise GuardsmithError(f"the {backend.kind} backend returned {len(outputs)} results "
                                  f"for {len(chunk)} requests")
        for row, messages, gens in zip(chunk, requests, outputs):
            if len(gens) != n:
                raise GuardsmithError(f"the {backend.kind} backend returned {len(gens)} samples "
                                      f"for row {row.get('id')!r}, expected {n}")
            samples = [
                GuardSample(
                    sample_index=i, text=g.text, answer=fmt.parse(g.text, row),
                    prompt_tokens=int(g.prompt_tokens), completion_tokens=int(g.completion_tokens),
                    latency_s=float(g.latency_s) / n, finish_reason=g.finish_reason,
                )
                for i, g in enumerate(gens)
            ]
            yield GuardRow(row=row, messages=messages, samples=samples)


def _generated(backend: Backend, chunks: Iterator[list[Mapping[str, Any]]], render: Any, sampling: Sampling,
               chunk_rows: int) -> Iterator[tuple[list[Mapping[str, Any]], list[Any], list[Any]]]:
    """(chunk, requests, generations) per chunk, in order. An endpoint backend (``generate_stream``)
    keeps one rolling window of requests across chunks (``teacher.run_jobs``: the next chunk's
    requests are in flight while the caller works on this one) with the run's seed on every
    request; other backends generate chunk by chunk, chunk ``c`` with seed ``seed + c * chunk_rows``."""
    n = sampling.samples_per_row
    if getattr(backend, "generate_stream", None) is not None:
        import contextlib

        from guardsmith.teacher import Job, run_jobs

        jobs = (Job(index=c, rows=list(chunk), todo=list(range(len(chunk))), requests=render(chunk))
                for c, chunk in enumerate(chunks))
        params = {"n": n, "temperature": sampling.temperature, "top_p": sampling.top_p,
                  "max_tokens": sampling.max_tokens, "seed": sampling.seed}
        with contextlib.closing(run_jobs(backend, jobs, params)) as done:
            for job in done:
                yield job.rows, job.requests, job.gens
        return
    for c, chunk in enumerate(chunks):
        requests = render(chunk)
        chunk_seed = None if sampling.seed is None else sampling.seed + c * chunk_rows
        yield chunk, requests, backend.generate(requests, n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                                                max_tokens=sampling.max_tokens, seed=chunk_seed)


def can_score(backend: Any) -> bool:
    """Whether ``backend`` implements ``answer_probability`` (transformers, vLLM, openai endpoints)."""
    impl = getattr(type(backend), "_answer_probability", None)
    return impl is not None and impl is not Backend._answer_probability


@dataclass(frozen=True)
class RowScore:
    """P(unsafe) of one row: the task its verdict answers and the probability of the unsafe word."""

    task: str
    p_unsafe: float


def guard_scores(
    backend: Backend,
    rows: Sequence[Mapping[str, Any]],
    fmt: GuardFormat,
    *,
    mode: str = "NR",
    dual: bool = False,
    taxonomy: str | None = None,
    style: str | None = None,
    chunk_rows: int = 256,
    own_template: bool = False,
) -> list[RowScore | None]:
    """P(unsafe) per row (None where ``fmt.verdict(row)`` is None): the backend's
    ``answer_probability`` of the verdict's words after its prefix, on the same messages `run_guard`
    sends, turned into P(unsafe) by ``Verdict.p_unsafe``. Rows are scored ``chunk_rows`` at a time,
    one call per verdict prefix and word set."""
    style = style or getattr(backend, "guard_prompt_style", "full")
    if chunk_rows < 1:
        raise GuardsmithError(f"chunk_rows must be at least 1, got {chunk_rows}")
    out: list[RowScore | None] = [None] * len(rows)
    for start in range(0, len(rows), chunk_rows):
        groups: dict[tuple[str, tuple[str, ...]], list[tuple[int, Verdict]]] = {}
        for i in range(start, min(start + chunk_rows, len(rows))):
            verdict = fmt.verdict(rows[i])
            if verdict is not None:
                groups.setdefault((verdict.prefix, verdict.words), []).append((i, verdict))
        for (prefix, words), members in groups.items():
            requests = [format_messages(fmt, rows[i], own_template=own_template, mode=mode, dual=dual,
                                        taxonomy=taxonomy, style=style) for i, _ in members]
            probs = backend.answer_probability(requests, prefix, words)
            if len(probs) != len(members):
                raise GuardsmithError(f"the {backend.kind} backend returned {len(probs)} scores "
                                      f"for {len(members)} requests")
            for (i, verdict), p in zip(members, probs):
                out[i] = RowScore(verdict.task, verdict.p_unsafe(p))
    return out

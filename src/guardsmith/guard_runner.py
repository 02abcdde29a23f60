"""Run a guard model over interaction rows: the one place that renders, samples and parses.

`run_guard` renders each row's guard prompt for a mode (R or NR, with the mode tag for dual
models), asks the backend for ``samples_per_row`` samples per row from one prompt pass (the
:class:`guardsmith.settings.Sampling` group), parses every sample
and yields one :class:`GuardRow` per input row, in input order, with its :class:`GuardSample`
records. Rows are sent to the backend in chunks of ``chunk_rows`` so a large table streams.

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
    parse_guard_output,
    parse_ok_for,
    render_guard_messages,
)
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


def open_guard(model: str, choice: BackendChoice | None = None, **options: Any) -> Backend:
    """:func:`guardsmith.inference.open_backend` for a guard model, set to the guard's prompt style.

    ``model`` is a model folder URI (local path, ``file://`` or ``s3://``, run by
    ``choice.backend``) or an OpenAI-compatible endpoint spec ``openai:http://host:port/v1?model=NAME``.
    A model folder's guard is queried with the prompt style it was trained with (recorded by sft).
    """
    from guardsmith.guard import prompt_style_of
    from guardsmith.inference import open_backend
    from guardsmith.model_store import local_model

    choice = (choice or BackendChoice()).check()
    if str(model).startswith("openai:"):
        return open_backend(str(model), choice=choice, **options)
    path = local_model(model)
    opened = open_backend(str(path), choice=choice, **options)
    opened.guard_prompt_style = prompt_style_of(path)
    opened.guard_taxonomy, opened.guard_policy = trained_policy(path)
    return opened


def trained_policy(model: str | Any) -> tuple[str | None, str | None]:
    """(taxonomy, policy) a guard was trained with, from its training summary; (None, None) when
    the folder records none (a model not trained by guardsmith, or rows of mixed taxonomies)."""
    from guardsmith.training import TrainingSummary

    summary = TrainingSummary.find(model)
    return (summary.taxonomy, summary.policy) if summary is not None else (None, None)


def guard_messages(row: Mapping[str, Any], mode: str = "R", dual: bool = False,
                   taxonomy: str | None = None, style: str = "full") -> list[Message]:
    """The guard prompt for ``row`` (the row's own ``policy`` text wins over ``taxonomy``)."""
    return render_guard_messages(row, mode=mode, dual=dual, taxonomy=taxonomy, style=style)


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
) -> Iterator[GuardRow]:
    """Sample ``sampling.samples_per_row`` guard outputs per row (one prompt pass per row) and
    yield parsed results (default sampling: 4 samples per row, temperature 0.6, top-p 0.95).

    ``style`` is the guard prompt style; by default the one recorded with the model
    (`open_guard` sets ``backend.guard_prompt_style``), else ``full``.

    Chunk ``c`` is generated with seed ``seed + c * chunk_rows`` so chunks never share a
    backend batch seed and a run is reproducible for a fixed ``chunk_rows``.
    """
    style = style or getattr(backend, "guard_prompt_style", "full")
    sampling = (sampling or Sampling(samples_per_row=4)).check()
    n, seed = sampling.samples_per_row, sampling.seed
    if chunk_rows < 1:
        raise GuardsmithError(f"chunk_rows must be at least 1, got {chunk_rows}")
    for c, chunk in enumerate(_chunks(rows, chunk_rows)):
        requests = [guard_messages(r, mode, dual, taxonomy, style) for r in chunk]
        chunk_seed = None if seed is None else seed + c * chunk_rows
        outputs = backend.generate(requests, n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                                   max_tokens=sampling.max_tokens, seed=chunk_seed)
        if len(outputs) != len(chunk):
            raise GuardsmithError(f"the {backend.kind} backend returned {len(outputs)} results "
                                  f"for {len(chunk)} requests")
        for row, messages, gens in zip(chunk, requests, outputs):
            if len(gens) != n:
                raise GuardsmithError(f"the {backend.kind} backend returned {len(gens)} samples "
                                      f"for row {row.get('id')!r}, expected {n}")
            samples = [
                GuardSample(
                    sample_index=i, text=g.text, answer=parse_guard_output(g.text),
                    prompt_tokens=int(g.prompt_tokens), completion_tokens=int(g.completion_tokens),
                    latency_s=float(g.latency_s) / n, finish_reason=g.finish_reason,
                )
                for i, g in enumerate(gens)
            ]
            yield GuardRow(row=row, messages=messages, samples=samples)

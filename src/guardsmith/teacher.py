"""Calling a teacher model: reasoning traces, sentence-budget rewrites, and their sharded runs.

Shared by the ``distill`` stage (which is a thin shell over :func:`write_traces`) and the
regeneration rounds of the ``filter`` stage.

**distill** (``budget`` unset): every row of an ``interactions`` table is rendered as a teacher
prompt (:func:`guardsmith.guard.render_teacher_messages`) and sent to the teacher through any
inference backend (:func:`guardsmith.inference.open_backend`); each reply becomes one ``traces``
row (:func:`trace_record`). **budget rewrite** (``budget`` = N): the reasoning of each trace is
rewritten to at most N sentences (:func:`rewrite_rows`, :func:`cut_to_budget`).

**Shards and resume.** Selected rows are processed in shards of ``shard_size`` rows, in input
order, each committed as its own table ``<output>.shards/shard-00007``; a re-run with the same
settings (recorded in ``<output>.shards/_config.json``) skips committed shards, and a re-run with
different ones is refused. When every shard is committed the output table is written from them.
"""
from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from guardsmith import settings, storage, tables
from guardsmith.config import option
from guardsmith.errors import DataError, GuardsmithError
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
from guardsmith.inference import Backend, Generation, open_backend, parse_spec
from guardsmith.progress import track

INTERACTION_COLUMNS: tuple[str, ...] = tuple(tables.schema("interactions").names)
TRACE_COLUMNS: tuple[str, ...] = tuple(tables.schema("traces").names)
_FINGERPRINT_VERSION = 1


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
    overwrite: bool = option(False, "Recompute even when the output is already committed (its "
                                    "shards are dropped first).")


# --------------------------------------------------------------------------- backend

def teacher_label(spec: str) -> str:
    """The model name of a teacher spec (``?model=`` for openai, else the folder name), without building it."""
    kind, _, rest = str(spec).partition(":")
    if kind.strip().lower() in ("vllm", "transformers"):
        return PurePosixPath(rest.rstrip("/")).name or "model"
    _, given = parse_spec(spec)
    if not given.get("model"):
        raise GuardsmithError("the openai teacher needs a model name: add ?model=NAME to the URL")
    return str(given["model"])


def check_settings(cfg: TeacherSettings) -> None:
    """Reject impossible teacher settings with a one-line error."""
    if cfg.shard_size < 1:
        raise GuardsmithError(f"shard_size must be at least 1, got {cfg.shard_size}")
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


def distill_rows(rows: Sequence[Mapping[str, Any]], backend: Backend, settings: TeacherSettings,
                 teacher: str, round: int = 0, seed: int | None = None) -> list[dict[str, Any]]:
    """Ask the teacher about each row (one request per row, all sent together); return traces rows.

    ``seed`` defaults to ``settings.seed``; the filter passes ``settings.seed + round``.
    """
    if not rows:
        return []
    requests = [render_teacher_messages(r, settings.taxonomy) for r in rows]
    gens = backend.generate(requests, n=1, temperature=settings.temperature, top_p=settings.top_p,
                            max_tokens=settings.max_tokens, seed=settings.seed if seed is None else seed)
    return [trace_record(r, g[0], teacher, round) for r, g in zip(rows, gens)]


_BOUNDARY = re.compile(r"[.!?]+[\"')\]\u201d\u2019]*(?=\s|$)|\n\s*\n")


def cut_to_budget(text: str, budget: int) -> str:
    """The longest prefix of ``text`` that ends at a sentence end and has at most ``budget`` sentences."""
    text = text.strip()
    if sentence_count(text) <= budget:
        return text
    best = ""
    for m in _BOUNDARY.finditer(text):
        prefix = text[:m.end()].strip()
        if sentence_count(prefix) > budget:
            break
        best = prefix
    return best


def rewritten_reasoning(text: str) -> str:
    """The rewrite in a teacher reply: after the last ``</think>``, without any answer lines."""
    closes = list(THINK_CLOSE.finditer(text or ""))
    body = text[closes[-1].end():] if closes else (text or "")
    reasoning, _ = split_reasoning(body)
    return reasoning


def rewrite_rows(rows: Sequence[Mapping[str, Any]], backend: Backend, settings: TeacherSettings,
                 teacher: str, budget: int, enforce_budget: bool = True,
                 seed: int | None = None) -> list[dict[str, Any]]:
    """Rewrite each trace's reasoning to at most ``budget`` sentences; return traces rows.

    Rows without reasoning (unparsed traces) are passed through with only ``budget`` set.
    """
    todo = [i for i, r in enumerate(rows) if (r.get("reasoning") or "").strip()]
    out = [{**{k: r.get(k) for k in TRACE_COLUMNS}, "budget": budget} for r in rows]
    if not todo:
        return out
    requests = [render_rewrite_messages(rows[i], rows[i]["reasoning"], budget) for i in todo]
    gens = backend.generate(requests, n=1, temperature=settings.temperature, top_p=settings.top_p,
                            max_tokens=settings.max_tokens, seed=settings.seed if seed is None else seed)
    for i, g in zip(todo, gens):
        gen = g[0]
        text = rewritten_reasoning(gen.text)
        if enforce_budget:
            text = cut_to_budget(text, budget)
        out[i].update({
            "teacher": teacher, "raw_output": gen.text, "reasoning": text,
            "prompt_tokens": int(gen.prompt_tokens), "completion_tokens": int(gen.completion_tokens),
            "latency_s": float(gen.latency_s), "n_sentences": sentence_count(text), "n_words": word_count(text),
        })
    return out


# --------------------------------------------------------------------------- input

def _schema_name(cfg: TracesJob) -> str:
    return "interactions" if cfg.budget is None else "traces"


def _selected(cfg: TracesJob) -> Iterator[dict[str, Any]]:
    """Validated input rows, restricted to ``cfg.ids`` when given, in input order."""
    wanted = set(cfg.ids) if cfg.ids else None
    for batch in storage.iter_batches(cfg.input, schema_name=_schema_name(cfg), batch_size=4096):
        if wanted is not None:
            ids = batch.column(batch.schema.get_field_index("id")).to_pylist()
            keep = [i for i, v in enumerate(ids) if v in wanted]
            if not keep:
                continue
            batch = batch.take(keep)
        yield from batch.to_pylist()


def scan_input(cfg: TracesJob) -> int:
    """Validate the whole input before anything is written; return the number of selected rows.

    Checks the schema and label words (via storage), duplicate ids, that every requested id
    exists, and that each selected row has a usable policy and prompt.
    """
    seen: set[str] = set()
    file = cfg.input
    count = 0
    for index, row in enumerate(_selected(cfg)):
        rid = row["id"]
        if rid in seen:
            raise DataError("duplicate id", file=file, column="id", row=index, value=rid)
        seen.add(rid)
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
    return count


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


def fingerprint(cfg: TracesJob, teacher_name: str) -> dict[str, Any]:
    """The settings that determine the traces; shards are only reused under the same ones."""
    ids = hashlib.sha256("\n".join(sorted(cfg.ids)).encode()).hexdigest()[:16] if cfg.ids else None
    return {
        "version": _FINGERPRINT_VERSION, "mode": "budget" if cfg.budget is not None else "distill",
        "input": cfg.input, "ids": ids, "teacher": teacher_name, "taxonomy": cfg.taxonomy,
        "temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens,
        "seed": cfg.seed, "round": cfg.round, "budget": cfg.budget,
        "enforce_budget": cfg.enforce_budget, "shard_size": cfg.shard_size,
    }


def _check_fingerprint(cfg: TracesJob, expected: dict[str, Any]) -> bool:
    """True when shards exist for ``expected``; raise when they were made with other settings."""
    path = storage.join(shard_root(cfg.output), "_config.json")
    if not storage.exists(path):
        return False
    found = storage.read_json(path)
    if found != expected:
        diff = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
        raise GuardsmithError(
            f"{shard_root(cfg.output)} holds shards made with other settings ({', '.join(diff)}); "
            "use the same settings to resume, or --overwrite to start again")
    return True


# --------------------------------------------------------------------------- the run

@dataclass
class TracesRun:
    """What :func:`write_traces` did: shards in all, reused from an earlier run, teacher requests."""

    shards: int = 0
    reused: int = 0
    requests: int = 0
    skipped: bool = False


def write_traces(cfg: TracesJob) -> TracesRun:
    """Distill (or budget-rewrite) ``cfg.input`` into the traces table ``cfg.output``; resumable.

    A committed output is left alone (``skipped``) unless ``overwrite``.
    """
    check_job(cfg)
    root = shard_root(cfg.output)
    if storage.is_committed(cfg.output) and not cfg.overwrite:
        if not cfg.keep_shards:
            storage.remove(root)  # left over when a run stopped right after its final commit
        return TracesRun(skipped=True)
    total = scan_input(cfg)
    n_shards = math.ceil(total / cfg.shard_size)
    if cfg.overwrite:
        storage.remove(root)
    backend: Backend | None = None
    teacher_name = cfg.teacher_name or teacher_label(cfg.teacher)
    expected = fingerprint(cfg, teacher_name)
    recorded = _check_fingerprint(cfg, expected)
    reused = requests = 0
    label = f"{'rewriting' if cfg.budget is not None else 'distilling'} shards"
    try:
        for index, rows in enumerate(track(_shards(_selected(cfg), cfg.shard_size), label, total=n_shards)):
            uri = shard_uri(cfg.output, index)
            if storage.is_committed(uri):
                reused += 1
                continue
            if backend is None:
                backend = open_backend(cfg.teacher, choice=settings.group_values(cfg, settings.BackendChoice),
                                       endpoint=settings.group_values(cfg, settings.Endpoint))
            if cfg.budget is None:
                records = distill_rows(rows, backend, cfg, teacher_name, cfg.round)
                requests += len(rows)
            else:
                records = rewrite_rows(rows, backend, cfg, teacher_name, cfg.budget, cfg.enforce_budget)
                requests += sum(1 for r in rows if (r.get("reasoning") or "").strip())
            if not recorded:
                storage.write_json_atomic(storage.join(root, "_config.json"), expected)
                recorded = True
            storage.write_table(uri, tables.from_records(records, "traces", file=uri), "traces")
    finally:
        if backend is not None:
            backend.close()
    with storage.TableWriter(cfg.output, "traces") as writer:
        for index in range(n_shards):
            for batch in storage.iter_batches(shard_uri(cfg.output, index), schema_name="traces"):
                writer.write(batch)
    if not cfg.keep_shards:
        storage.remove(root)
    return TracesRun(n_shards, reused, requests)

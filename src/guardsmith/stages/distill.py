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

**Shards and resume.** Selected rows are processed in shards of ``shard_size`` rows, in input
order. Each shard is committed as its own table ``<output>.shards/shard-00007`` (a sibling of
the output: a table directory holds only its own parts). A re-run with the same settings skips
committed shards, so a crash or preemption loses at most the shard in flight and never
duplicates a row; settings that change the traces are recorded in ``<output>.shards/_config.json``
and a re-run with different ones is refused. When every shard is committed the ``traces``
table at ``output`` is written by streaming the shards, committed, and the shards are removed
(``keep_shards`` keeps them). A committed ``output`` is left alone unless ``overwrite``.

Input rows are validated in a first pass (schema, label words, duplicate ids, policy), so bad
input fails before anything is written.
"""
from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from guardsmith import storage, tables
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
from guardsmith.inference import Backend, Generation, make_backend, parse_spec
from guardsmith.progress import track

HELP = (
    "Distill reasoning traces from a teacher LLM: each interaction is shown to the teacher with "
    "its true labels, and the reply (reasoning + answer lines) is parsed and stored with token "
    "counts and latency. With --budget N, rewrite the reasoning of an existing traces table to at "
    "most N sentences instead. Work is committed in shards; a re-run resumes where it stopped."
)

INTERACTION_COLUMNS: tuple[str, ...] = tuple(tables.schema("interactions").names)
TRACE_COLUMNS: tuple[str, ...] = tuple(tables.schema("traces").names)
_FINGERPRINT_VERSION = 1


@dataclass(kw_only=True)
class TeacherSettings:
    """How the teacher is called; shared by ``distill`` and the regeneration rounds of ``filter``."""

    taxonomy: str | None = option(None, "Policy for rows without their own policy text: a built-in "
                                        "taxonomy (aegis2, wildguard); default: each row's taxonomy.")
    temperature: float = option(0.6, "Teacher sampling temperature.")
    top_p: float = option(0.95, "Teacher nucleus-sampling top-p.")
    max_tokens: int = option(2048, "Most tokens the teacher may generate per request.")
    seed: int = option(0, "Sampling seed sent with every teacher request (filter round r uses seed + r).")
    concurrency: int = option(16, "Requests in flight (openai backend) or batch size (transformers backend).")
    api_key_env: str = option("OPENAI_API_KEY", "Name of the environment variable holding the endpoint's "
                                                "API key (openai backend; unset variable = no key).")
    timeout_s: float = option(600.0, "Per-attempt HTTP timeout in seconds (openai backend).")
    max_retries: int = option(6, "Retries per request on 429, 5xx, timeouts and dropped connections "
                                 "(openai backend).")
    shard_size: int = option(256, "Rows per shard: each shard is committed on its own and a re-run "
                                  "skips committed shards.")


@dataclass(kw_only=True)
class DistillConfig(TeacherSettings):
    """Settings of the ``distill`` stage."""

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

    def __str__(self) -> str:
        if self.skipped:
            head = f"{self.output} is already committed ({self.rows} traces); nothing to do (use --overwrite to redo)"
        else:
            what = f"rewrote to <= {self.budget} sentences" if self.mode == "budget" else "distilled"
            head = (f"{what} {self.rows} traces in {self.shards} shards ({self.shards_reused} reused from an "
                    f"earlier run, {self.requests} teacher requests now)")
        return "\n".join([
            head,
            f"parse failures {self.parse_failures}; tokens {self.prompt_tokens} in / {self.completion_tokens} out; "
            f"mean latency {self.mean_latency_s:.3f} s",
            f"reasoning of parsed traces: mean {self.mean_sentences:.2f} sentences, {self.mean_words:.1f} words",
            f"wrote {self.output}",
        ])


# --------------------------------------------------------------------------- backend

def open_teacher(spec: str, settings: TeacherSettings) -> Backend:
    """Build the backend for a teacher (or judge) spec.

    ``settings`` fill the backend options the spec does not set itself: for ``openai`` the
    API-key variable, concurrency, timeout and retries; for ``transformers`` the batch size. A
    local backend's location may be an ``s3://`` model folder (downloaded and cached).
    """
    kind, _, rest = str(spec).partition(":")
    kind = kind.strip().lower()
    if kind in ("vllm", "transformers") and rest.startswith("s3://"):
        from guardsmith.model_store import local_model

        spec = f"{kind}:{local_model(rest)}"
    kind, given = parse_spec(spec)
    if kind == "openai":
        wanted: dict[str, Any] = {"api_key_env": settings.api_key_env, "max_concurrency": settings.concurrency,
                                  "timeout_s": settings.timeout_s, "max_retries": settings.max_retries}
    else:
        wanted = {"batch_size": settings.concurrency} if kind == "transformers" else {}
    return make_backend(spec, **{k: v for k, v in wanted.items() if k not in given})


def teacher_label(spec: str) -> str:
    """The model name of a teacher spec (``?model=`` for openai, else the folder name), without building it."""
    kind, _, rest = str(spec).partition(":")
    if kind.strip().lower() in ("vllm", "transformers"):
        return PurePosixPath(rest.rstrip("/")).name or "model"
    _, given = parse_spec(spec)
    if not given.get("model"):
        raise GuardsmithError("the openai teacher needs a model name: add ?model=NAME to the URL")
    return str(given["model"])


def _check_settings(cfg: TeacherSettings) -> None:
    if cfg.shard_size < 1:
        raise GuardsmithError(f"shard_size must be at least 1, got {cfg.shard_size}")
    if cfg.concurrency < 1:
        raise GuardsmithError(f"concurrency must be at least 1, got {cfg.concurrency}")
    if cfg.max_tokens < 1:
        raise GuardsmithError(f"max_tokens must be at least 1, got {cfg.max_tokens}")
    if cfg.max_retries < 0:
        raise GuardsmithError(f"max_retries must be >= 0, got {cfg.max_retries}")


def check_config(cfg: DistillConfig) -> None:
    """Reject impossible settings with a one-line error."""
    _check_settings(cfg)
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

def _schema_name(cfg: DistillConfig) -> str:
    return "interactions" if cfg.budget is None else "traces"


def _selected(cfg: DistillConfig) -> Iterator[dict[str, Any]]:
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


def scan_input(cfg: DistillConfig) -> int:
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


def fingerprint(cfg: DistillConfig, teacher_name: str) -> dict[str, Any]:
    """The settings that determine the traces; shards are only reused under the same ones."""
    ids = hashlib.sha256("\n".join(sorted(cfg.ids)).encode()).hexdigest()[:16] if cfg.ids else None
    return {
        "version": _FINGERPRINT_VERSION, "mode": "budget" if cfg.budget is not None else "distill",
        "input": cfg.input, "ids": ids, "teacher": teacher_name, "taxonomy": cfg.taxonomy,
        "temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens,
        "seed": cfg.seed, "round": cfg.round, "budget": cfg.budget,
        "enforce_budget": cfg.enforce_budget, "shard_size": cfg.shard_size,
    }


def _check_fingerprint(cfg: DistillConfig, expected: dict[str, Any]) -> bool:
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


# --------------------------------------------------------------------------- summary

_SUMMARY_COLUMNS = ("parse_ok", "prompt_tokens", "completion_tokens", "latency_s", "n_sentences", "n_words")


def summarise(uri: str) -> dict[str, float]:
    """Row count, parse failures, usage totals and reasoning length totals (over parsed rows) of a traces table."""
    acc = {"rows": 0, "parse_failures": 0, "prompt_tokens": 0, "completion_tokens": 0,
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
    return acc


def _result(cfg: DistillConfig, acc: Mapping[str, float], shards: int, reused: int, requests: int,
            skipped: bool = False) -> DistillResult:
    n = int(acc["rows"])
    parsed = n - int(acc["parse_failures"])
    mean = (lambda key, k=n: acc[key] / k if k else 0.0)
    return DistillResult(
        output=cfg.output, mode="budget" if cfg.budget is not None else "distill", rows=n, shards=shards,
        shards_reused=reused, requests=requests, parse_failures=int(acc["parse_failures"]),
        prompt_tokens=int(acc["prompt_tokens"]), completion_tokens=int(acc["completion_tokens"]),
        mean_latency_s=mean("latency"), mean_sentences=mean("sentences", parsed), mean_words=mean("words", parsed),
        budget=cfg.budget, skipped=skipped)


# --------------------------------------------------------------------------- the stage

def run(cfg: DistillConfig) -> DistillResult:
    """Distill (or budget-rewrite) ``cfg.input`` into the traces table ``cfg.output``; resumable."""
    check_config(cfg)
    root = shard_root(cfg.output)
    if storage.is_committed(cfg.output) and not cfg.overwrite:
        if not cfg.keep_shards:
            storage.remove(root)  # left over when a run stopped right after its final commit
        return _result(cfg, summarise(cfg.output), 0, 0, 0, skipped=True)
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
                backend = open_teacher(cfg.teacher, cfg)
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
    return _result(cfg, summarise(cfg.output), n_shards, reused, requests)


# --------------------------------------------------------------------------- budget curve

def budget_curve(uris: Sequence[str], echo: bool = True) -> list[dict[str, Any]]:
    """Mean words and sentences of the reasoning per budget, over the parsed traces of ``uris``.

    Rows are grouped by their ``budget`` column; rows without one are the original traces
    (budget ``None``, listed last). With ``echo`` a small table is printed. Mean words growing
    with the budget is the check of the paper's Fig. 5.
    """
    groups: dict[int | None, list[int]] = {}
    for uri in uris:
        for batch in storage.iter_batches(uri, columns=["budget", "n_words", "n_sentences", "parse_ok"]):
            cols = [batch.column(i).to_pylist() for i in range(4)]
            for b, w, s, ok in zip(*cols):
                if ok:
                    acc = groups.setdefault(b, [0, 0, 0])
                    acc[0] += 1
                    acc[1] += w
                    acc[2] += s
    out = [{"budget": b, "traces": n, "mean_words": w / n, "mean_sentences": s / n}
           for b, (n, w, s) in sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))]
    if echo:
        print("budget  traces  mean_words  mean_sentences")
        for r in out:
            name = "none" if r["budget"] is None else str(r["budget"])
            print(f"{name:>6}  {r['traces']:>6}  {r['mean_words']:>10.1f}  {r['mean_sentences']:>14.2f}")
    return out
